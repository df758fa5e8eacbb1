//! Convolutions: weight preparation (uploaded once, repacked for the kernel that will run
//! them) and the launches of `conv_mma.cu` / `conv_direct.cu`, including the transposed conv
//! of the decoder fused with its replicate pad and skip add.

use half::f16;

use super::kernels::{self as k, Kernel};
use super::memory::DeviceBuffer;
use super::params::{ConvParams, Src, TILE_ROWS};
use super::tensor::{check_shape, CudaTensor};
use super::CudaBackend;
use crate::backend::{ConvSpec, ConvTSpec};
use crate::error::{Error, Result};
use crate::tensor::{numel, HostTensor};

/// conv_mma.cu's tile shape: BM rows x BN channels x BK, in STAGES cp.async stages.
const MMA_BM: usize = 128;
const MMA_BK: usize = 32;
const MMA_STAGES: usize = 4;

/// Which kernel runs a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKernel {
    /// Tensor cores; `bn` output channels per block.
    Mma { bn: usize },
    /// CUDA cores, `cob` output channels per thread.
    Direct { cob: usize },
}

impl ConvKernel {
    /// Tensor cores need Cin in whole 32-channel k-tiles and Cout in whole 16-channel n-tiles;
    /// everything else (the 1-channel input, the 1- and 2-channel outputs) runs direct.
    pub fn choose(cin: usize, cout: usize) -> ConvKernel {
        if cin % 32 == 0 && cout % 16 == 0 {
            let bn = if cout % 64 == 0 {
                64
            } else if cout % 32 == 0 {
                32
            } else {
                16
            };
            ConvKernel::Mma { bn }
        } else {
            let cob = match cout {
                1 => 1,
                2 => 2,
                3..=8 => 8,
                _ => 32,
            };
            ConvKernel::Direct { cob }
        }
    }
}

/// A convolution's weights on the device.
pub struct CudaConv {
    pub spec: ConvSpec,
    pub kernel: ConvKernel,
    /// Tensor-core weights, fp16 `(Cout, taps, Cin)`: one GEMM B row per output channel.
    wt: Option<DeviceBuffer>,
    /// Direct-kernel weights, f32 `(Cout padded to cob, taps, Cin)`.
    wf: Option<DeviceBuffer>,
    bias: Option<DeviceBuffer>,
}

/// A transposed convolution's weights on the device: fp16 `(offsets, Cout, Cin)`, one GEMM B
/// matrix per kernel offset.
pub struct CudaConvT {
    pub spec: ConvTSpec,
    bn: usize,
    wt: DeviceBuffer,
    bias: DeviceBuffer,
}

fn check_weight(what: &str, w: &HostTensor, want: &[usize]) -> Result<()> {
    if w.shape != want {
        return Err(Error::Shape(format!("{what}: weight has shape {:?}, expected {want:?}", w.shape)));
    }
    if let Some(i) = w.first_non_finite() {
        return Err(Error::Value(format!("{what}: weight element {i} is {}", w.data[i])));
    }
    Ok(())
}

fn check_bias(what: &str, b: &HostTensor, cout: usize) -> Result<()> {
    if b.shape != [cout] {
        return Err(Error::Shape(format!("{what}: bias has shape {:?}, expected [{cout}]", b.shape)));
    }
    if let Some(i) = b.first_non_finite() {
        return Err(Error::Value(format!("{what}: bias element {i} is {}", b.data[i])));
    }
    Ok(())
}

impl CudaBackend {
    pub(crate) fn upload_slice<T: Copy>(&self, data: &[T]) -> Result<DeviceBuffer> {
        let b = self.pool.alloc(std::mem::size_of_val(data))?;
        b.upload(data)?;
        Ok(b)
    }

    pub(crate) fn prepare_conv_impl(&self, spec: ConvSpec, w: &HostTensor, b: Option<&HostTensor>) -> Result<CudaConv> {
        let what = format!("conv {}->{} {:?}", spec.cin, spec.cout, spec.k);
        check_weight(&what, w, &spec.weight_shape())?;
        if spec.bias != b.is_some() {
            return Err(Error::Shape(format!(
                "{what}: bias {} but the layer has {}",
                if b.is_some() { "given" } else { "missing" },
                if spec.bias { "one" } else { "none" }
            )));
        }
        if let Some(b) = b {
            check_bias(&what, b, spec.cout)?;
        }
        if spec.k.iter().any(|&k| k == 0 || k % 2 == 0) {
            return Err(Error::Shape(format!("{what}: 'same' padding needs odd kernel sizes")));
        }
        let (cin, cout) = (spec.cin, spec.cout);
        let kernel = ConvKernel::choose(cin, cout);
        let (wt, wf) = match kernel {
            ConvKernel::Mma { .. } => (Some(self.upload_slice(&pack_mma_weights(&spec, &w.data))?), None),
            ConvKernel::Direct { cob } => (None, Some(self.upload_slice(&pack_direct_weights(&spec, &w.data, cob))?)),
        };
        let bias = b.map(|b| self.upload_slice(&b.data)).transpose()?;
        Ok(CudaConv { spec, kernel, wt, wf, bias })
    }

    pub(crate) fn prepare_conv_t_impl(&self, spec: ConvTSpec, w: &HostTensor, b: &HostTensor) -> Result<CudaConvT> {
        let what = format!("transposed conv {}->{} {:?}", spec.cin, spec.cout, spec.k);
        check_weight(&what, w, &spec.weight_shape())?;
        check_bias(&what, b, spec.cout)?;
        let (cin, cout) = (spec.cin, spec.cout);
        let bn = match ConvKernel::choose(cin, cout) {
            ConvKernel::Mma { bn } => bn,
            ConvKernel::Direct { .. } => {
                return Err(Error::Shape(format!(
                    "{what}: the CUDA backend runs transposed convs on the tensor cores, which need Cin % 32 == 0 and \
                     Cout % 16 == 0"
                )))
            }
        };
        let v = pack_convt_weights(&spec, &w.data);
        Ok(CudaConvT { spec, bn, wt: self.upload_slice(&v)?, bias: self.upload_slice(&b.data)? })
    }

    /// Runs `conv` on `x`; with `stats`, also returns the per-tile statistics partials.
    pub(crate) fn run_conv(
        &self,
        x: &CudaTensor,
        conv: &CudaConv,
        stats: bool,
    ) -> Result<(CudaTensor, Option<DeviceBuffer>)> {
        let spec = conv.spec;
        let (n, c, dims) = x.shape();
        if c != spec.cin {
            return Err(Error::Shape(format!(
                "conv {}->{} {:?} given a tensor with {c} channels",
                spec.cin, spec.cout, spec.k
            )));
        }
        check_shape("conv output", n, spec.cout, dims)?;
        let vox = numel(dims);
        let tiles = vox.div_ceil(TILE_ROWS);
        let y = self.new_tensor(n, spec.cout, dims)?;
        let partial = if stats { Some(self.pool.alloc(n * tiles * spec.cout * 8)?) } else { None };
        let mut p = ConvParams {
            x: x.src(),
            wt: conv.wt.as_ref().map_or(0, |b| b.ptr()),
            wf: conv.wf.as_ref().map_or(0, |b| b.ptr()),
            bias: conv.bias.as_ref().map_or(0, |b| b.ptr()),
            y: y.buf.ptr(),
            partial: partial.as_ref().map_or(0, |b| b.ptr()),
            skip: Src::default(),
            h: dims[0] as i32,
            w: dims[1] as i32,
            d: dims[2] as i32,
            cout: spec.cout as i32,
            kh: spec.k[0] as i32,
            kw: spec.k[1] as i32,
            kd: spec.k[2] as i32,
            tiles: tiles as i32,
            ..Default::default()
        };
        match conv.kernel {
            ConvKernel::Mma { bn } => {
                let smem = mma_smem(bn, spec.cin);
                let kernel = match bn {
                    16 => k::CONV_MMA_F16_BN16,
                    32 => k::CONV_MMA_F16_BN32,
                    _ => k::CONV_MMA_F16_BN64,
                };
                let grid = (tiles as u32, (spec.cout / bn) as u32, n as u32);
                self.dev.launch(kernel, grid, (MMA_BM as u32, 1, 1), smem, &p)?;
            }
            ConvKernel::Direct { cob } => {
                let wbytes = cob * spec.taps() * spec.cin * 4;
                // Stage the group's weights in shared memory when they fit comfortably.
                let smem = if wbytes <= 32 * 1024 {
                    p.wf_smem = 1;
                    wbytes
                } else {
                    0
                };
                let kernel = match cob {
                    1 => k::CONV_DIRECT_F16_CO1,
                    2 => k::CONV_DIRECT_F16_CO2,
                    8 => k::CONV_DIRECT_F16_CO8,
                    _ => k::CONV_DIRECT_F16_CO32,
                };
                let grid = (tiles as u32, spec.cout.div_ceil(cob) as u32, n as u32);
                self.dev.launch(kernel, grid, (TILE_ROWS as u32, 1, 1), smem, &p)?;
            }
        }
        Ok((y, partial))
    }

    /// `skip + replicate_pad_end(conv_transpose(x), skip size)`.
    pub(crate) fn run_up_add(&self, x: &CudaTensor, ct: &CudaConvT, skip: &CudaTensor) -> Result<CudaTensor> {
        let spec = ct.spec;
        let (n, c, dims) = x.shape();
        let (sn, sc, sdims) = skip.shape();
        if c != spec.cin || sc != spec.cout || sn != n {
            return Err(Error::Shape(format!(
                "up_add: transposed conv {}->{} given input ({n}, {c}, ..) and skip ({sn}, {sc}, ..)",
                spec.cin, spec.cout
            )));
        }
        let offs = numel(spec.k);
        if n * offs > 65535 {
            return Err(Error::Shape(format!("up_add: batch {n} is too large")));
        }
        let vox = numel(dims);
        let tiles = vox.div_ceil(TILE_ROWS);
        let y = self.new_tensor(n, spec.cout, sdims)?;
        let p = ConvParams {
            x: x.src(),
            wt: ct.wt.ptr(),
            bias: ct.bias.ptr(),
            y: y.buf.ptr(),
            skip: skip.src(),
            h: dims[0] as i32,
            w: dims[1] as i32,
            d: dims[2] as i32,
            cout: spec.cout as i32,
            kh: spec.k[0] as i32,
            kw: spec.k[1] as i32,
            kd: spec.k[2] as i32,
            tiles: tiles as i32,
            hs: sdims[0] as i32,
            ws: sdims[1] as i32,
            ds: sdims[2] as i32,
            ..Default::default()
        };
        let kernel: Kernel = match ct.bn {
            16 => k::CONVT_ADD_MMA_F16_BN16,
            32 => k::CONVT_ADD_MMA_F16_BN32,
            _ => k::CONVT_ADD_MMA_F16_BN64,
        };
        let grid = (tiles as u32, (spec.cout / ct.bn) as u32, (n * offs) as u32);
        self.dev.launch(kernel, grid, (MMA_BM as u32, 1, 1), mma_smem(ct.bn, spec.cin), &p)?;
        Ok(y)
    }
}

/// PyTorch's `(cout, cin, taps)` -> fp16 `(cout, taps, cin)`: each output channel's GEMM row
/// runs over taps, then input channels, the kernels' k-tile order.
pub(crate) fn pack_mma_weights(spec: &ConvSpec, w: &[f32]) -> Vec<f16> {
    let (cin, cout, taps) = (spec.cin, spec.cout, spec.taps());
    let mut v = Vec::with_capacity(cout * taps * cin);
    for co in 0..cout {
        for t in 0..taps {
            for ci in 0..cin {
                v.push(f16::from_f32(w[(co * cin + ci) * taps + t]));
            }
        }
    }
    v
}

/// PyTorch's `(cout, cin, taps)` -> f32 `(cout padded to cob, taps, cin)`, rounded through fp16
/// like the tensor-core path so both kernels compute the same function; padding channels are 0.
pub(crate) fn pack_direct_weights(spec: &ConvSpec, w: &[f32], cob: usize) -> Vec<f32> {
    let (cin, cout, taps) = (spec.cin, spec.cout, spec.taps());
    let mut v = vec![0f32; cout.div_ceil(cob) * cob * taps * cin];
    for co in 0..cout {
        for t in 0..taps {
            for ci in 0..cin {
                v[(co * taps + t) * cin + ci] = f16::from_f32(w[(co * cin + ci) * taps + t]).to_f32();
            }
        }
    }
    v
}

/// PyTorch's transposed weight `(cin, cout, offsets)` -> fp16 `(offsets, cout, cin)`: one GEMM
/// B matrix per kernel offset.
pub(crate) fn pack_convt_weights(spec: &ConvTSpec, w: &[f32]) -> Vec<f16> {
    let (cin, cout, offs) = (spec.cin, spec.cout, numel(spec.k));
    let mut v = Vec::with_capacity(offs * cout * cin);
    for o in 0..offs {
        for co in 0..cout {
            for ci in 0..cin {
                v.push(f16::from_f32(w[(ci * cout + co) * offs + o]));
            }
        }
    }
    v
}

/// Dynamic shared memory of conv_mma.cu: the A and B stages, the input's per-channel
/// (scale, shift), and the statistics reduction (4 warps x BN sums + BN means).
fn mma_smem(bn: usize, cin: usize) -> usize {
    MMA_STAGES * (MMA_BM + bn) * MMA_BK * 2 + cin * 8 + 5 * bn * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_network_conv_has_a_kernel() {
        use crate::model::catalog::{layers, LayerKind};
        for l in layers() {
            if let LayerKind::Conv(s) = l.kind {
                match ConvKernel::choose(s.cin, s.cout) {
                    ConvKernel::Mma { bn } => assert_eq!(s.cout % bn, 0, "{}", l.prefix),
                    ConvKernel::Direct { cob } => {
                        assert!(s.cin == 1 || s.cout <= 2, "{} runs direct: {}->{}", l.prefix, s.cin, s.cout);
                        assert!(cob >= s.cout.min(32));
                    }
                }
            }
            if let LayerKind::ConvT(s) = l.kind {
                assert!(matches!(ConvKernel::choose(s.cin, s.cout), ConvKernel::Mma { .. }), "{}", l.prefix);
            }
        }
    }

    #[test]
    fn weight_packing_puts_input_channels_innermost() {
        // Weight value = its PyTorch flat index, so every packed slot names where it came from.
        let spec = ConvSpec { cin: 3, cout: 5, k: [3, 1, 2], bias: false };
        let w: Vec<f32> = (0..5 * 3 * 6).map(|i| i as f32).collect();
        let m = pack_mma_weights(&spec, &w);
        let d = pack_direct_weights(&spec, &w, 8);
        assert_eq!(d.len(), 8 * 6 * 3);
        for co in 0..5 {
            for t in 0..6 {
                for ci in 0..3 {
                    let want = ((co * 3 + ci) * 6 + t) as f32;
                    assert_eq!(m[(co * 6 + t) * 3 + ci].to_f32(), want);
                    assert_eq!(d[(co * 6 + t) * 3 + ci], want);
                }
            }
        }
        assert!(d[5 * 6 * 3..].iter().all(|&v| v == 0.0), "padding channels are zero");
        let ts = ConvTSpec { cin: 4, cout: 2, k: [2, 2, 1] };
        let w: Vec<f32> = (0..4 * 2 * 4).map(|i| i as f32).collect();
        let p = pack_convt_weights(&ts, &w);
        for o in 0..4 {
            for co in 0..2 {
                for ci in 0..4 {
                    assert_eq!(p[(o * 2 + co) * 4 + ci].to_f32(), ((ci * 2 + co) * 4 + o) as f32);
                }
            }
        }
    }

    #[test]
    fn tensor_core_shared_memory_fits_an_sm() {
        // 227 KB per block on sm_90, 163 KB on sm_80; 3 blocks per SM are the design point.
        assert!(mma_smem(64, 256) * 3 <= 227 * 1024);
        assert!(mma_smem(64, 256) <= 99 * 1024);
    }
}
