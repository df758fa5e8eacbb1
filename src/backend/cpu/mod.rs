//! The CPU engine: float32 values and accumulation, channels-last `(N, H, W, D, C)` tensors,
//! multi-threaded with a private rayon pool, buffers recycled through a pool.

pub mod buffer;
pub mod conv;
pub mod layout;
pub mod norm;
pub mod pool;
pub mod reference;
pub mod resize;
pub mod scratch;
pub mod winograd;

use std::sync::Arc;

use rayon::prelude::*;

use crate::backend::{Backend, ConvSpec, ConvTSpec};
use crate::error::{Error, Result};
use crate::tensor::{numel, Dims, HostTensor};
use buffer::{Buffer, Pool};
use conv::PackedConv;
use scratch::Scratch;

/// A batch of feature maps, channels-last: `data[((s * H + h) * W + w) * D + d) * C + c]`.
pub struct CpuTensor {
    pub n: usize,
    pub c: usize,
    pub dims: Dims,
    pub data: Buffer,
}

impl CpuTensor {
    fn sample_len(&self) -> usize {
        numel(self.dims) * self.c
    }
    pub fn sample(&self, s: usize) -> &[f32] {
        &self.data[s * self.sample_len()..][..self.sample_len()]
    }
}

/// Convolution weights on the CPU: packed for the direct kernel, and Winograd-transformed for
/// in-plane 3x3 kernels (used where the tensor suits it).
pub struct CpuConv {
    pub direct: PackedConv,
    pub winograd: Option<winograd::WinogradConv>,
}

impl CpuConv {
    /// `weight` is PyTorch's `(cout, cin, kH, kW, kD)`, of `spec.weight_shape()` (the caller
    /// checks); Winograd output tiles up to `max_tile` (see [`CpuBackend::with_winograd_tile`]).
    pub fn new(spec: ConvSpec, weight: &[f32], bias: Option<&[f32]>, max_tile: usize) -> Self {
        let winograd =
            winograd::WinogradConv::handles(&spec).then(|| winograd::WinogradConv::new(spec, bias, max_tile));
        CpuConv { direct: PackedConv::new(spec, weight, bias), winograd }
    }
}

pub struct CpuConvT {
    spec: ConvTSpec,
    packed: PackedConv,
}

/// The CPU backend. `threads` worker threads (all cores by default).
pub struct CpuBackend {
    pool: rayon::ThreadPool,
    buffers: Arc<Pool>,
    /// The ops' small vectors, reused from op to op (ops on one backend run one at a time; one
    /// that finds it busy uses fresh vectors).
    scratch: std::sync::Mutex<Scratch>,
    threads: usize,
    winograd: bool,
    /// Largest Winograd output tile: 4 (F(4x4, 3x3) where it pays) or 2 (F(2x2, 3x3) only).
    winograd_tile: usize,
}

impl CpuBackend {
    /// `threads = 0` uses every available core; more threads than cores are capped to the
    /// cores (extra workers only contend for them: 100,000 requested ran 40x slower).
    pub fn new(threads: usize) -> Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = if threads == 0 { cores } else { threads.min(cores) };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("fmseg-cpu-{i}"))
            .build()
            .map_err(|e| Error::Device(format!("cannot start {threads} CPU worker threads: {e}")))?;
        Ok(CpuBackend {
            pool,
            buffers: Arc::new(Pool::default()),
            scratch: Default::default(),
            threads,
            winograd: true,
            winograd_tile: 4,
        })
    }

    /// Turns Winograd F(2x2,3x3) for in-plane 3x3 convolutions on or off (on by default; off,
    /// every convolution is a direct summation).
    pub fn with_winograd(mut self, on: bool) -> Self {
        self.winograd = on;
        self
    }

    /// Caps the Winograd output tile: below 4, F(2x2, 3x3) only; 4 or more, F(4x4, 3x3) where
    /// it pays (the default). F(4x4)'s transforms cost about one more decimal digit of float32
    /// error than F(2x2)'s: harmless for inference (2.7e-6 at worst against the float64 oracle
    /// in `tests/ops`), but the training tape's forward keeps F(2x2), since its gradients are
    /// ill-conditioned (instance norms' backward subtracts nearly equal terms) and amplify
    /// forward error into the sampled gradient entries of `tests/ops/train_grad.rs` (F(4x4)
    /// there: 2.7e-2, tolerance 1e-2). Its data gradients' convolutions run F(4x4) (see
    /// `train::tape::conv_backward`): measured, that leaves every gradient's error the same.
    pub fn with_winograd_tile(mut self, max_tile: usize) -> Self {
        self.winograd_tile = if max_tile >= 4 { 4 } else { 2 };
        self
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on this backend's worker threads.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// Keep up to `bytes` of freed tensor buffers for reuse (default 1 GiB; see
    /// [`buffer::Pool::set_limit`]).
    pub fn set_buffer_limit(&self, bytes: usize) {
        self.buffers.set_limit(bytes / std::mem::size_of::<f32>());
    }

    /// A scratch buffer of `len` floats from the pool with unspecified contents (for callers
    /// that write or clear it themselves), returned to it when dropped.
    pub fn scratch(&self, len: usize) -> Buffer {
        Buffer::new(self.buffers.take(len), Some(self.buffers.clone()))
    }

    /// A scratch buffer of `len` floats from the pool (zeroed), returned to it when dropped.
    pub fn scratch_zeroed(&self, len: usize) -> Buffer {
        Buffer::new(self.buffers.take_zeroed(len), Some(self.buffers.clone()))
    }

    /// Drops the recycled buffers (memory goes back to the OS).
    pub fn release_buffers(&self) {
        self.buffers.clear();
    }

    pub(crate) fn tensor(&self, n: usize, c: usize, dims: Dims) -> CpuTensor {
        let data = Buffer::new(self.buffers.take(n * c * numel(dims)), Some(self.buffers.clone()));
        CpuTensor { n, c, dims, data }
    }

    /// Wraps channels-last data (for callers that already hold that layout).
    pub fn from_channels_last(&self, n: usize, c: usize, dims: Dims, data: Vec<f32>) -> Result<CpuTensor> {
        if data.len() != n * c * numel(dims) {
            return Err(Error::Shape(format!("{} values for a {n}x{c}x{dims:?} tensor", data.len())));
        }
        Ok(CpuTensor { n, c, dims, data: Buffer::new(data, Some(self.buffers.clone())) })
    }

    /// A convolution and its output's instance-norm statistics per sample, gathered in the
    /// convolution's epilogue as [`Backend::conv_norm`] gathers them (the training tape
    /// normalises the output itself, keeping xhat).
    pub fn conv_with_stats(&self, x: &CpuTensor, conv: &CpuConv) -> Result<(CpuTensor, Vec<Vec<norm::Stats>>)> {
        let spec = conv.direct.spec;
        check_cin(x, &spec)?;
        let mut out = self.tensor(x.n, spec.cout, x.dims);
        let vox = numel(out.dims);
        let mut stats = Vec::with_capacity(x.n);
        self.install(|| {
            self.conv_each(x, self.winograd_for(x, conv), &conv.direct, &mut out, true, |_, _, sc| {
                norm::params_from_sums(&sc.totals, vox, &mut sc.params);
                stats.push(norm::stats_from_params(&sc.params));
            })
        });
        Ok((out, stats))
    }

    /// The Winograd form of `cv` when it applies to `x`.
    fn winograd_for<'a>(&self, x: &CpuTensor, cv: &'a CpuConv) -> Option<&'a winograd::WinogradConv> {
        cv.winograd.as_ref().filter(|w| self.winograd && w.suits(x.dims))
    }

    /// Convolves every sample of `x` into `out` (by `wg` when given, else directly by `conv`),
    /// calling `each(s, sample_out, scratch)` after sample `s`; with `sums`, that sample's
    /// per-channel sums are in `scratch.totals` then.
    fn conv_each(
        &self,
        x: &CpuTensor,
        wg: Option<&winograd::WinogradConv>,
        conv: &PackedConv,
        out: &mut CpuTensor,
        sums: bool,
        mut each: impl FnMut(usize, &mut [f32], &mut Scratch),
    ) {
        let out_len = out.sample_len();
        let spec = conv.spec;
        let needs_pad = wg.is_none() && spec.k.iter().any(|&k| k > 1);
        let mut pad = needs_pad.then(|| self.buffers.take(conv::padded_len(x.dims, x.c, spec.k)));
        let mut busy = None;
        let mut held = self.scratch.try_lock();
        let sc: &mut Scratch = match held.as_deref_mut() {
            Ok(sc) => sc,
            Err(_) => busy.insert(Scratch::default()),
        };
        {
            for s in 0..x.n {
                let dst = &mut out.data[s * out_len..][..out_len];
                match (wg, pad.as_mut()) {
                    (Some(w), _) => w.conv_sample(x.sample(s), x.dims, conv, dst, sc, sums),
                    (None, Some(p)) => {
                        conv::pad_input(x.sample(s), x.dims, x.c, spec.pad(), p);
                        conv::conv_sample(p, x.dims, conv, dst, sc, sums)
                    }
                    (None, None) => conv::conv_sample(x.sample(s), x.dims, conv, dst, sc, sums),
                }
                each(s, dst, sc);
            }
        }
        if let Some(p) = pad {
            self.buffers.give(p);
        }
    }
}

fn check_cin(x: &CpuTensor, spec: &ConvSpec) -> Result<()> {
    if x.c != spec.cin {
        return Err(Error::Shape(format!("conv expects {} input channels, got {}", spec.cin, x.c)));
    }
    Ok(())
}

fn same_shape(a: &CpuTensor, b: &CpuTensor, what: &str) -> Result<()> {
    if a.n != b.n || a.c != b.c || a.dims != b.dims {
        return Err(Error::Shape(format!(
            "{what}: shapes differ ({}x{}x{:?} vs {}x{}x{:?})",
            a.n, a.c, a.dims, b.n, b.c, b.dims
        )));
    }
    Ok(())
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Conv = CpuConv;
    type ConvT = CpuConvT;

    fn name(&self) -> String {
        format!("cpu ({} threads)", self.threads)
    }

    fn upload(&self, x: &HostTensor) -> Result<CpuTensor> {
        let (n, c, dims) = x.ncdims()?;
        let vox = numel(dims);
        let mut t = self.tensor(n, c, dims);
        self.install(|| {
            for s in 0..n {
                let dst = &mut t.data[s * c * vox..][..c * vox];
                layout::to_channels_last_into(&x.data[s * c * vox..][..c * vox], c, vox, dst);
            }
        });
        Ok(t)
    }

    fn download(&self, x: &CpuTensor) -> Result<HostTensor> {
        let vox = numel(x.dims);
        // The one allocation of a forward pass after warm-up: the logits it returns.
        let mut data = vec![0f32; x.n * x.c * vox];
        self.install(|| {
            for (s, dst) in data.chunks_exact_mut(x.c * vox).enumerate() {
                layout::to_channels_first_into(x.sample(s), x.c, vox, dst);
            }
        });
        HostTensor::new(vec![x.n, x.c, x.dims[0], x.dims[1], x.dims[2]], data)
    }

    fn shape(&self, x: &CpuTensor) -> (usize, usize, Dims) {
        (x.n, x.c, x.dims)
    }

    fn prepare_conv(
        &self,
        _name: &str,
        spec: ConvSpec,
        weight: &HostTensor,
        bias: Option<&HostTensor>,
    ) -> Result<CpuConv> {
        if weight.shape != spec.weight_shape() {
            return Err(Error::Shape(format!("conv weight {:?}, expected {:?}", weight.shape, spec.weight_shape())));
        }
        if let Some(b) = bias {
            if b.shape != [spec.cout] {
                return Err(Error::Shape(format!("conv bias {:?}, expected [{}]", b.shape, spec.cout)));
            }
        }
        Ok(CpuConv::new(spec, &weight.data, bias.map(|b| b.data.as_slice()), self.winograd_tile))
    }

    fn prepare_conv_t(&self, _name: &str, spec: ConvTSpec, weight: &HostTensor, bias: &HostTensor) -> Result<CpuConvT> {
        if weight.shape != spec.weight_shape() || bias.shape != [spec.cout] {
            return Err(Error::Shape(format!(
                "transposed conv weight {:?} / bias {:?}, expected {:?} / [{}]",
                weight.shape,
                bias.shape,
                spec.weight_shape(),
                spec.cout
            )));
        }
        Ok(CpuConvT {
            spec,
            packed: PackedConv::from_transposed(spec.cin, spec.cout, spec.k, &weight.data, &bias.data),
        })
    }

    fn conv(&self, x: &CpuTensor, conv: &CpuConv) -> Result<CpuTensor> {
        let spec = conv.direct.spec;
        check_cin(x, &spec)?;
        let mut out = self.tensor(x.n, spec.cout, x.dims);
        self.install(|| self.conv_each(x, self.winograd_for(x, conv), &conv.direct, &mut out, false, |_, _, _| {}));
        Ok(out)
    }

    /// The statistics come from the conv's epilogue, so the output is read once more only to be
    /// normalised in place.
    fn conv_norm(&self, x: &CpuTensor, conv: &CpuConv, residual: Option<&CpuTensor>, relu: bool) -> Result<CpuTensor> {
        let spec = conv.direct.spec;
        check_cin(x, &spec)?;
        let mut out = self.tensor(x.n, spec.cout, x.dims);
        if let Some(r) = residual {
            same_shape(&out, r, "instance norm residual")?;
        }
        let (c, vox) = (out.c, numel(out.dims));
        self.install(|| {
            self.conv_each(x, self.winograd_for(x, conv), &conv.direct, &mut out, true, |s, dst, sc| {
                norm::params_from_sums(&sc.totals, vox, &mut sc.params);
                norm::apply_params(dst, c, &sc.params, residual.map(|r| r.sample(s)), relu);
            })
        });
        Ok(out)
    }

    fn instance_norm(&self, mut x: CpuTensor, residual: Option<&CpuTensor>, relu: bool) -> Result<CpuTensor> {
        if let Some(r) = residual {
            same_shape(&x, r, "instance norm residual")?;
        }
        let len = x.sample_len();
        let c = x.c;
        self.install(|| {
            for s in 0..x.n {
                let xs = &mut x.data[s * len..][..len];
                let stats = norm::channel_stats(xs, c);
                norm::apply(xs, c, &stats, residual.map(|r| r.sample(s)), relu);
            }
        });
        Ok(x)
    }

    fn max_pool(&self, x: &CpuTensor, k: Dims) -> Result<CpuTensor> {
        let od = [x.dims[0] / k[0], x.dims[1] / k[1], x.dims[2] / k[2]];
        if od.contains(&0) {
            return Err(Error::Shape(format!("max pool {k:?} of a {:?} tensor leaves nothing", x.dims)));
        }
        let mut out = self.tensor(x.n, x.c, od);
        let ol = out.sample_len();
        self.install(|| {
            for s in 0..x.n {
                pool::max_pool(x.sample(s), x.dims, x.c, k, &mut out.data[s * ol..][..ol]);
            }
        });
        Ok(out)
    }

    fn adaptive_avg_pool(&self, x: &CpuTensor, od: Dims) -> Result<CpuTensor> {
        if od.contains(&0) {
            return Err(Error::Shape(format!("adaptive pool of {:?} to {od:?}", x.dims)));
        }
        let mut out = self.tensor(x.n, x.c, od);
        let ol = out.sample_len();
        self.install(|| {
            for s in 0..x.n {
                pool::adaptive_avg_pool(x.sample(s), x.dims, x.c, od, &mut out.data[s * ol..][..ol]);
            }
        });
        Ok(out)
    }

    fn resize_trilinear(&self, x: &CpuTensor, od: Dims) -> Result<CpuTensor> {
        let mut out = self.tensor(x.n, x.c, od);
        let ol = out.sample_len();
        self.install(|| {
            for s in 0..x.n {
                resize::resize_trilinear(x.sample(s), x.dims, x.c, od, &mut out.data[s * ol..][..ol]);
            }
        });
        Ok(out)
    }

    fn up_add(&self, x: &CpuTensor, ct: &CpuConvT, skip: &CpuTensor) -> Result<CpuTensor> {
        let ConvTSpec { cin, cout, k } = ct.spec;
        if x.c != cin || skip.c != cout || x.n != skip.n {
            return Err(Error::Shape(format!(
                "up stage: input {}ch, skip {}ch, transposed conv {cin}->{cout}",
                x.c, skip.c
            )));
        }
        let up = [x.dims[0] * k[0], x.dims[1] * k[1], x.dims[2] * k[2]];
        let sd = skip.dims;
        if (0..3).any(|i| sd[i] < up[i] || sd[i] > up[i] + 1) {
            return Err(Error::Shape(format!("up stage: upsampled {up:?} cannot be padded to the skip's {sd:?}")));
        }
        // The transposed conv as a 1x1 conv to (tap, cout) channels, then a gather that applies
        // the replicate pad (index clamping) and adds the skip.
        let mut wide = self.tensor(x.n, ct.packed.spec.cout, x.dims);
        let mut out = self.tensor(x.n, cout, sd);
        self.install(|| {
            self.conv_each(x, None, &ct.packed, &mut wide, false, |_, _, _| {});
            let wl = wide.sample_len();
            let ol = out.sample_len();
            for s in 0..x.n {
                let w = &wide.data[s * wl..][..wl];
                let sk = skip.sample(s);
                let o = &mut out.data[s * ol..][..ol];
                o.par_chunks_mut(sd[1] * sd[2] * cout).enumerate().for_each(|(h, plane)| {
                    let hu = h.min(up[0] - 1);
                    for wv in 0..sd[1] {
                        let wu = wv.min(up[1] - 1);
                        for z in 0..sd[2] {
                            let zu = z.min(up[2] - 1);
                            let src_vox = ((hu / k[0]) * x.dims[1] + wu / k[1]) * x.dims[2] + zu / k[2];
                            let tap = ((hu % k[0]) * k[1] + wu % k[1]) * k[2] + zu % k[2];
                            let src = &w[(src_vox * k.iter().product::<usize>() + tap) * cout..][..cout];
                            let vox = (h * sd[1] + wv) * sd[2] + z;
                            let skv = &sk[vox * cout..][..cout];
                            let dst = &mut plane[(wv * sd[2] + z) * cout..][..cout];
                            for ch in 0..cout {
                                dst[ch] = skv[ch] + src[ch];
                            }
                        }
                    }
                });
            }
        });
        Ok(out)
    }

    fn sum(&self, xs: &[&CpuTensor], relu: bool) -> Result<CpuTensor> {
        let first = xs.first().ok_or_else(|| Error::Shape("sum of no tensors".into()))?;
        for x in &xs[1..] {
            same_shape(first, x, "sum")?;
        }
        let mut out = self.tensor(first.n, first.c, first.dims);
        let lo = if relu { 0.0 } else { f32::NEG_INFINITY };
        self.install(|| {
            out.data.par_chunks_mut(1 << 14).enumerate().for_each(|(i, dst)| {
                let (off, len) = (i << 14, dst.len());
                dst.copy_from_slice(&first.data[off..][..len]);
                for x in &xs[1..] {
                    for (d, v) in dst.iter_mut().zip(&x.data[off..][..len]) {
                        *d += v;
                    }
                }
                dst.iter_mut().for_each(|d| *d = d.max(lo));
            });
        });
        Ok(out)
    }

    fn sigmoid_sum(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        same_shape(a, b, "sigmoid of a sum")?;
        let mut out = self.tensor(a.n, a.c, a.dims);
        self.install(|| {
            out.data.par_chunks_mut(1 << 14).enumerate().for_each(|(i, dst)| {
                let off = i << 14;
                for ((d, x), y) in dst.iter_mut().zip(&a.data[off..]).zip(&b.data[off..]) {
                    *d = 1.0 / (1.0 + (-(x + y)).exp());
                }
            });
        });
        Ok(out)
    }

    fn attend(&self, mut x: CpuTensor, w: &CpuTensor) -> Result<CpuTensor> {
        if w.n != x.n || w.dims != x.dims || (w.c != 1 && w.c != x.c) {
            return Err(Error::Shape(format!("attention map {}x{:?} for a {}x{:?} tensor", w.c, w.dims, x.c, x.dims)));
        }
        let c = x.c;
        let wc = w.c;
        self.install(|| {
            let xl = x.sample_len();
            for s in 0..x.n {
                let ws = w.sample(s);
                let xs = &mut x.data[s * xl..][..xl];
                xs.par_chunks_mut(4096 * c).enumerate().for_each(|(i, chunk)| {
                    for (j, v) in chunk.chunks_exact_mut(c).enumerate() {
                        let vox = i * 4096 + j;
                        if wc == 1 {
                            let g = ws[vox];
                            v.iter_mut().for_each(|e| *e = *e * g + *e);
                        } else {
                            for (e, g) in v.iter_mut().zip(&ws[vox * c..][..c]) {
                                *e = *e * g + *e;
                            }
                        }
                    }
                });
            }
        });
        Ok(x)
    }

    fn concat(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        if a.n != b.n || a.dims != b.dims {
            return Err(Error::Shape(format!("concat of {:?} and {:?}", a.dims, b.dims)));
        }
        let c = a.c + b.c;
        let mut out = self.tensor(a.n, c, a.dims);
        self.install(|| {
            out.data.par_chunks_mut(c).enumerate().for_each(|(v, dst)| {
                dst[..a.c].copy_from_slice(&a.data[v * a.c..][..a.c]);
                dst[a.c..].copy_from_slice(&b.data[v * b.c..][..b.c]);
            });
        });
        Ok(out)
    }
}
