//! Launch wrappers for the non-conv ops: InstanceNorm statistics, pools, resize, elementwise.

use std::sync::Arc;

use super::kernels::{self as k, Kernel};
use super::memory::DeviceBuffer;
use super::params::{EwParams, PoolParams, Src, StatsParams, TILE_ROWS};
use super::tensor::{check_shape, CudaTensor, PendingNorm};
use super::CudaBackend;
use crate::error::{Error, Result};
use crate::tensor::{numel, Dims};

const EW_BLOCK: u32 = 256;
pub(crate) const IN_EPS: f32 = 1e-5;

impl CudaBackend {
    /// Merges per-tile partials into `(N, C)` of `(mean, rstd)`.
    pub(crate) fn finalize_stats(
        &self,
        partial: &DeviceBuffer,
        n: usize,
        c: usize,
        vox: usize,
    ) -> Result<DeviceBuffer> {
        let stats = self.pool.alloc(n * c * 8)?;
        let p = StatsParams {
            partial: partial.ptr(),
            stats: stats.ptr(),
            n: n as i32,
            c: c as i32,
            tiles: vox.div_ceil(TILE_ROWS) as i32,
            vox: vox as i32,
            eps: IN_EPS,
            ..Default::default()
        };
        self.dev.launch(k::STATS_FINALIZE_F32, (c.div_ceil(32) as u32, n as u32, 1), (32, 8, 1), 0, &p)?;
        Ok(stats)
    }

    /// Instance-norm statistics of a tensor that did not come out of a conv epilogue.
    pub(crate) fn compute_stats(&self, x: &CudaTensor) -> Result<DeviceBuffer> {
        let (n, c, dims) = x.shape();
        let vox = numel(dims);
        let tiles = vox.div_ceil(TILE_ROWS);
        let partial = self.pool.alloc(n * tiles * c * 8)?;
        let p = StatsParams {
            x: x.src(),
            partial: partial.ptr(),
            n: n as i32,
            c: c as i32,
            tiles: tiles as i32,
            vox: vox as i32,
            eps: IN_EPS,
            ..Default::default()
        };
        self.dev.launch(k::STATS_PARTIAL_F16, (tiles as u32, c.div_ceil(32) as u32, n as u32), (32, 8, 1), 0, &p)?;
        self.finalize_stats(&partial, n, c, vox)
    }

    /// `x` with the statistics attached as a pending norm.
    pub(crate) fn lazy_norm(&self, x: CudaTensor, stats: DeviceBuffer, relu: bool) -> CudaTensor {
        CudaTensor { norm: Some(PendingNorm { stats: Arc::new(stats), relu }), ..x }
    }

    /// `relu?(sum of the inputs as their consumers see them)`; also materialises a pending norm.
    pub(crate) fn run_sum(&self, xs: &[&CudaTensor], relu: bool) -> Result<CudaTensor> {
        let Some(first) = xs.first() else {
            return Err(Error::Shape("sum of no tensors".into()));
        };
        let (n, c, dims) = first.shape();
        for x in xs {
            if x.shape() != (n, c, dims) {
                return Err(Error::Shape(format!("sum: shapes {:?} and {:?} differ", first.shape(), x.shape())));
            }
        }
        if xs.len() > 4 {
            // Four inputs per launch: fold the rest in pairs of launches.
            let head = self.run_sum(&xs[..4], false)?;
            let mut rest: Vec<&CudaTensor> = vec![&head];
            rest.extend_from_slice(&xs[4..]);
            return self.run_sum(&rest, relu);
        }
        let y = self.new_tensor(n, c, dims)?;
        let mut p = self.ew_params(&y);
        for (i, x) in xs.iter().enumerate() {
            p.inputs[i] = x.src();
        }
        p.count = xs.len() as i32;
        p.relu = relu as i32;
        self.launch_ew(if c % 8 == 0 { k::SUM_F16_V8 } else { k::SUM_F16_V1 }, &y, c % 8 == 0, &p)?;
        Ok(y)
    }

    /// A plain (normalised) copy of a lazy tensor; plain tensors are returned as they are.
    pub(crate) fn materialize(&self, x: CudaTensor) -> Result<CudaTensor> {
        if x.norm.is_none() {
            return Ok(x);
        }
        self.run_sum(&[&x], false)
    }

    pub(crate) fn run_instance_norm(
        &self,
        x: CudaTensor,
        residual: Option<&CudaTensor>,
        relu: bool,
    ) -> Result<CudaTensor> {
        let x = self.materialize(x)?;
        let stats = self.compute_stats(&x)?;
        self.finish_norm(x, stats, residual, relu)
    }

    /// Attaches the statistics; with a residual, applies norm + add + ReLU in one pass.
    pub(crate) fn finish_norm(
        &self,
        raw: CudaTensor,
        stats: DeviceBuffer,
        residual: Option<&CudaTensor>,
        relu: bool,
    ) -> Result<CudaTensor> {
        match residual {
            None => Ok(self.lazy_norm(raw, stats, relu)),
            Some(r) => {
                if r.shape() != raw.shape() {
                    return Err(Error::Shape(format!(
                        "instance_norm: residual of shape {:?} for a tensor of shape {:?}",
                        r.shape(),
                        raw.shape()
                    )));
                }
                let lazy = self.lazy_norm(raw, stats, false);
                self.run_sum(&[&lazy, r], relu)
            }
        }
    }

    pub(crate) fn run_max_pool(&self, x: &CudaTensor, k: Dims) -> Result<CudaTensor> {
        let (n, c, d) = x.shape();
        if k.contains(&0) {
            return Err(Error::Shape(format!("max_pool: kernel {k:?} has a zero")));
        }
        let od = [d[0] / k[0], d[1] / k[1], d[2] / k[2]];
        if od.contains(&0) {
            return Err(Error::Shape(format!("max_pool: kernel {k:?} is larger than the input {d:?}")));
        }
        self.pool_like(x, od, k, if c % 8 == 0 { k::MAX_POOL_F16_V8 } else { k::MAX_POOL_F16_V1 }, n, c)
    }

    pub(crate) fn run_adaptive_avg_pool(&self, x: &CudaTensor, out: Dims) -> Result<CudaTensor> {
        let (n, c, _) = x.shape();
        if out.contains(&0) {
            return Err(Error::Shape(format!("adaptive_avg_pool: output size {out:?} has a zero")));
        }
        let kernel = if c % 8 == 0 { k::AVG_POOL_ADAPTIVE_F16_V8 } else { k::AVG_POOL_ADAPTIVE_F16_V1 };
        self.pool_like(x, out, [1, 1, 1], kernel, n, c)
    }

    pub(crate) fn run_resize(&self, x: &CudaTensor, out: Dims) -> Result<CudaTensor> {
        let (n, c, _) = x.shape();
        if out.contains(&0) {
            return Err(Error::Shape(format!("resize_trilinear: output size {out:?} has a zero")));
        }
        let kernel = if c % 8 == 0 { k::RESIZE_TRILINEAR_F16_V8 } else { k::RESIZE_TRILINEAR_F16_V1 };
        self.pool_like(x, out, [1, 1, 1], kernel, n, c)
    }

    fn pool_like(&self, x: &CudaTensor, od: Dims, k: Dims, kernel: Kernel, n: usize, c: usize) -> Result<CudaTensor> {
        let d = x.dims;
        let y = self.new_tensor(n, c, od)?;
        let p = PoolParams {
            x: x.src(),
            y: y.buf.ptr(),
            n: n as i32,
            c: c as i32,
            h: d[0] as i32,
            w: d[1] as i32,
            d: d[2] as i32,
            oh: od[0] as i32,
            ow: od[1] as i32,
            od: od[2] as i32,
            kh: k[0] as i32,
            kw: k[1] as i32,
            kd: k[2] as i32,
            pad_: 0,
        };
        let items = n * numel(od) * if c % 8 == 0 { c / 8 } else { c };
        self.dev.launch(kernel, (self.dev.grid_for(items, EW_BLOCK), 1, 1), (EW_BLOCK, 1, 1), 0, &p)?;
        Ok(y)
    }

    pub(crate) fn run_sigmoid_sum(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        if a.shape() != b.shape() {
            return Err(Error::Shape(format!("sigmoid_sum: shapes {:?} and {:?} differ", a.shape(), b.shape())));
        }
        let (n, c, dims) = a.shape();
        let y = self.new_tensor(n, c, dims)?;
        let mut p = self.ew_params(&y);
        p.inputs[0] = a.src();
        p.inputs[1] = b.src();
        self.launch_ew(k::SIGMOID_SUM_F16, &y, false, &p)?;
        Ok(y)
    }

    pub(crate) fn run_attend(&self, x: CudaTensor, w: &CudaTensor) -> Result<CudaTensor> {
        let (n, c, dims) = x.shape();
        let (wn, wc, wd) = w.shape();
        if wn != n || wd != dims || (wc != 1 && wc != c) {
            return Err(Error::Shape(format!(
                "attend: weights of shape {:?} for a tensor of shape {:?} (need 1 or {c} channels, same size)",
                w.shape(),
                x.shape()
            )));
        }
        // x*w+x reads and writes each element once, so a plain x that nobody else holds is
        // updated in place (not when outputs are poisoned: every element must be seen written).
        let in_place = x.norm.is_none() && Arc::strong_count(&x.buf) == 1 && !self.poisoning();
        let y = if in_place { x.clone() } else { self.new_tensor(n, c, dims)? };
        let mut p = self.ew_params(&y);
        p.inputs[0] = x.src();
        p.inputs[1] = w.src();
        self.launch_ew(if c % 8 == 0 { k::ATTEND_F16_V8 } else { k::ATTEND_F16_V1 }, &y, c % 8 == 0, &p)?;
        Ok(y)
    }

    pub(crate) fn run_concat(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        let (n, ca, dims) = a.shape();
        let (bn, cb, bd) = b.shape();
        if bn != n || bd != dims {
            return Err(Error::Shape(format!("concat: shapes {:?} and {:?} differ", a.shape(), b.shape())));
        }
        let c = ca + cb;
        let y = self.new_tensor(n, c, dims)?;
        let mut p = self.ew_params(&y);
        p.inputs[0] = a.src();
        p.inputs[1] = b.src();
        let vec = ca % 8 == 0 && cb % 8 == 0;
        self.launch_ew(if vec { k::CONCAT_F16_V8 } else { k::CONCAT_F16_V1 }, &y, vec, &p)?;
        Ok(y)
    }

    /// `x` flipped along the axes set in `axes` (H, W, D).
    pub fn flip(&self, x: &CudaTensor, axes: [bool; 3]) -> Result<CudaTensor> {
        let (n, c, dims) = x.shape();
        let y = self.new_tensor(n, c, dims)?;
        let mut p = self.ew_params(&y);
        p.inputs[0] = x.src();
        p.flip = flip_bits(axes);
        self.launch_ew(if c % 8 == 0 { k::FLIP_F16_V8 } else { k::FLIP_F16_V1 }, &y, c % 8 == 0, &p)?;
        Ok(y)
    }

    /// The tensor as PyTorch-layout f32 on the device.
    pub(crate) fn to_ncdhw_f32(&self, x: &CudaTensor) -> Result<DeviceBuffer> {
        let out = self.pool.alloc(x.numel() * 4)?;
        self.to_ncdhw_f32_into(x, &out)?;
        Ok(out)
    }

    /// [`Self::to_ncdhw_f32`] into an existing buffer (a graph's fixed output).
    pub(crate) fn to_ncdhw_f32_into(&self, x: &CudaTensor, out: &DeviceBuffer) -> Result<()> {
        let (n, c, dims) = x.shape();
        if out.len() < x.numel() * 4 {
            return Err(Error::Other(format!(
                "internal: {} bytes for an f32 copy of a tensor of {} values",
                out.len(),
                x.numel()
            )));
        }
        let p = EwParams {
            inputs: [x.src(), Src::default(), Src::default(), Src::default()],
            yf: out.ptr(),
            n: n as i32,
            c: c as i32,
            h: dims[0] as i32,
            w: dims[1] as i32,
            d: dims[2] as i32,
            ..Default::default()
        };
        let items = x.numel();
        self.dev.launch(k::TO_NCDHW_F32, (self.dev.grid_for(items, EW_BLOCK), 1, 1), (EW_BLOCK, 1, 1), 0, &p)
    }

    fn ew_params(&self, y: &CudaTensor) -> EwParams {
        let (n, c, dims) = y.shape();
        EwParams {
            y: y.buf.ptr(),
            n: n as i32,
            c: c as i32,
            h: dims[0] as i32,
            w: dims[1] as i32,
            d: dims[2] as i32,
            ..Default::default()
        }
    }

    fn launch_ew(&self, kernel: Kernel, y: &CudaTensor, vec8: bool, p: &EwParams) -> Result<()> {
        check_shape(kernel.name, y.n, y.c, y.dims)?;
        let items = if vec8 { y.numel() / 8 } else { y.numel() };
        self.dev.launch(kernel, (self.dev.grid_for(items, EW_BLOCK), 1, 1), (EW_BLOCK, 1, 1), 0, p)
    }
}

pub(crate) fn flip_bits(axes: [bool; 3]) -> i32 {
    axes[0] as i32 | (axes[1] as i32) << 1 | (axes[2] as i32) << 2
}
