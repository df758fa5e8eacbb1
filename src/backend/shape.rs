//! A backend that computes nothing and allocates nothing: its tensors carry a shape and a
//! drop guard, and every buffer the CUDA backend would allocate for an op is logged to a
//! [`Trace`] (allocation with the CUDA engine's byte count, free when the last holder drops).
//! Running the real model graph on it (`crate::model::cost`) gives the activation lifetimes of
//! a forward pass without a GPU, which [`arena::plan`](super::arena::plan) turns into the arena
//! the CUDA engine will use.
//!
//! It mirrors `backend::cuda` op by op (`ops.rs`, `conv.rs`, `mod.rs`): fp16 channels-last
//! activations (`n * c * vox * 2` bytes); a conv followed by InstanceNorm keeps the raw output
//! plus an `(N, C)` f32 `(mean, rstd)` buffer (a lazy norm), after a per-128-voxel-tile
//! partials buffer (`n * tiles * c * 8` bytes) freed once the statistics are merged; a residual
//! add materialises into a new tensor; `attend` works in place on an unshared plain tensor.
//! The GPU test `arena_trace_of_the_shape_backend_matches_the_device` (tests/gpu.rs) checks the
//! mirror against the trace the CUDA pool records.

use std::sync::{Arc, Mutex};

use super::arena::{Trace, DEVICE_ALIGN};
use super::{Backend, ConvSpec, ConvTSpec, DropoutSite};
use crate::error::{Error, Result};
use crate::tensor::{numel, Dims, HostTensor};

/// Voxels per statistics tile of the CUDA conv epilogue (`TILE_ROWS` in `backend::cuda`, which
/// asserts that the two agree).
pub const STATS_TILE_ROWS: usize = 128;

/// One logged buffer; its drop is the free.
struct Slot {
    id: usize,
    trace: Arc<Mutex<Trace>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut t) = self.trace.lock() {
            t.free(self.id);
        }
    }
}

/// A batch `(N, C, H, W, D)` of no values. Field order as in `CudaTensor`, so a tensor frees its
/// data before its statistics, like the CUDA one.
#[derive(Clone)]
pub struct ShapeTensor {
    /// None: a buffer outside the trace (an input that lives elsewhere).
    buf: Option<Arc<Slot>>,
    n: usize,
    c: usize,
    dims: Dims,
    /// The statistics buffer of a pending InstanceNorm.
    norm: Option<Arc<Slot>>,
}

/// See the module documentation.
#[derive(Clone, Default)]
pub struct ShapeBackend {
    trace: Arc<Mutex<Trace>>,
    /// `Backend::dropout` calls per site (network rate, fixed rate): where the graph drops.
    dropouts: Arc<Mutex<[usize; 2]>>,
}

impl ShapeBackend {
    pub fn new() -> Self {
        ShapeBackend::default()
    }

    /// How many times the graph asked for dropout at the network's rate and at the fixed one.
    pub fn dropout_calls(&self) -> [usize; 2] {
        self.dropouts.lock().map(|d| *d).unwrap_or_default()
    }

    /// The events logged so far.
    pub fn trace(&self) -> Trace {
        self.trace.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// A tensor whose buffer is not part of the trace (the network input of a planned pass,
    /// which has its own buffer).
    pub fn untracked(&self, n: usize, c: usize, dims: Dims) -> ShapeTensor {
        ShapeTensor { buf: None, n, c, dims, norm: None }
    }

    fn buffer(&self, bytes: usize) -> Result<Arc<Slot>> {
        let mut t = self.trace.lock().map_err(|_| Error::Other("shape backend trace poisoned".into()))?;
        let id = t.alloc(bytes, DEVICE_ALIGN);
        Ok(Arc::new(Slot { id, trace: self.trace.clone() }))
    }

    fn tensor(&self, n: usize, c: usize, dims: Dims) -> Result<ShapeTensor> {
        if n == 0 || c == 0 || numel(dims) == 0 {
            return Err(Error::Shape(format!("empty tensor of shape ({n}, {c}, {dims:?})")));
        }
        Ok(ShapeTensor { buf: Some(self.buffer(n * c * numel(dims) * 2)?), n, c, dims, norm: None })
    }

    /// Statistics partials, then the merged `(N, C)` statistics; the partials are freed.
    fn stats(&self, n: usize, c: usize, dims: Dims) -> Result<Arc<Slot>> {
        let partial = self.buffer(n * numel(dims).div_ceil(STATS_TILE_ROWS) * c * 8)?;
        let stats = self.buffer(n * c * 8)?;
        drop(partial);
        Ok(stats)
    }

    fn finish_norm(&self, raw: ShapeTensor, stats: Arc<Slot>, residual: Option<&ShapeTensor>) -> Result<ShapeTensor> {
        let lazy = ShapeTensor { norm: Some(stats), ..raw };
        match residual {
            None => Ok(lazy),
            Some(r) => {
                same_shape("instance_norm residual", &lazy, r)?;
                self.sum(&[&lazy, r], false)
            }
        }
    }
}

fn same_shape(what: &str, a: &ShapeTensor, b: &ShapeTensor) -> Result<()> {
    if (a.n, a.c, a.dims) != (b.n, b.c, b.dims) {
        return Err(Error::Shape(format!(
            "{what}: shapes ({}, {}, {:?}) and ({}, {}, {:?}) differ",
            a.n, a.c, a.dims, b.n, b.c, b.dims
        )));
    }
    Ok(())
}

impl Backend for ShapeBackend {
    type Tensor = ShapeTensor;
    type Conv = ConvSpec;
    type ConvT = ConvTSpec;

    fn name(&self) -> String {
        "shape-only (allocation trace of the CUDA engine)".into()
    }

    fn upload(&self, x: &HostTensor) -> Result<ShapeTensor> {
        let (n, c, dims) = x.ncdims()?;
        self.tensor(n, c, dims)
    }

    fn download(&self, _x: &ShapeTensor) -> Result<HostTensor> {
        Err(Error::Other("the shape-only backend holds no values to download".into()))
    }

    fn shape(&self, x: &ShapeTensor) -> (usize, usize, Dims) {
        (x.n, x.c, x.dims)
    }

    fn prepare_conv(
        &self,
        _name: &str,
        spec: ConvSpec,
        weight: &HostTensor,
        bias: Option<&HostTensor>,
    ) -> Result<ConvSpec> {
        if weight.shape != spec.weight_shape() || bias.is_some() != spec.bias {
            return Err(Error::Shape(format!("conv {spec:?}: weight of shape {:?}", weight.shape)));
        }
        Ok(spec)
    }

    fn prepare_conv_t(
        &self,
        _name: &str,
        spec: ConvTSpec,
        weight: &HostTensor,
        _bias: &HostTensor,
    ) -> Result<ConvTSpec> {
        if weight.shape != spec.weight_shape() {
            return Err(Error::Shape(format!("transposed conv {spec:?}: weight of shape {:?}", weight.shape)));
        }
        Ok(spec)
    }

    fn conv(&self, x: &ShapeTensor, conv: &ConvSpec) -> Result<ShapeTensor> {
        if x.c != conv.cin {
            return Err(Error::Shape(format!("conv {}->{} given {} channels", conv.cin, conv.cout, x.c)));
        }
        self.tensor(x.n, conv.cout, x.dims)
    }

    fn instance_norm(&self, x: ShapeTensor, residual: Option<&ShapeTensor>, _relu: bool) -> Result<ShapeTensor> {
        let x = if x.norm.is_some() { self.sum(&[&x], false)? } else { x };
        let stats = self.stats(x.n, x.c, x.dims)?;
        self.finish_norm(x, stats, residual)
    }

    fn conv_norm(
        &self,
        x: &ShapeTensor,
        conv: &ConvSpec,
        residual: Option<&ShapeTensor>,
        _relu: bool,
    ) -> Result<ShapeTensor> {
        let y = self.conv(x, conv)?;
        let stats = self.stats(y.n, y.c, y.dims)?;
        self.finish_norm(y, stats, residual)
    }

    fn max_pool(&self, x: &ShapeTensor, k: Dims) -> Result<ShapeTensor> {
        if k.contains(&0) || (0..3).any(|i| x.dims[i] < k[i]) {
            return Err(Error::Shape(format!("max_pool: kernel {k:?} for an input of {:?}", x.dims)));
        }
        self.tensor(x.n, x.c, [x.dims[0] / k[0], x.dims[1] / k[1], x.dims[2] / k[2]])
    }

    fn adaptive_avg_pool(&self, x: &ShapeTensor, out: Dims) -> Result<ShapeTensor> {
        self.tensor(x.n, x.c, out)
    }

    fn resize_trilinear(&self, x: &ShapeTensor, out: Dims) -> Result<ShapeTensor> {
        self.tensor(x.n, x.c, out)
    }

    fn up_add(&self, x: &ShapeTensor, conv_t: &ConvTSpec, skip: &ShapeTensor) -> Result<ShapeTensor> {
        if x.c != conv_t.cin || skip.c != conv_t.cout || skip.n != x.n {
            return Err(Error::Shape(format!("up_add: {conv_t:?} given {} and skip {} channels", x.c, skip.c)));
        }
        self.tensor(x.n, conv_t.cout, skip.dims)
    }

    fn sum(&self, xs: &[&ShapeTensor], _relu: bool) -> Result<ShapeTensor> {
        let Some(first) = xs.first() else {
            return Err(Error::Shape("sum of no tensors".into()));
        };
        for x in xs {
            same_shape("sum", first, x)?;
        }
        if xs.len() > 4 {
            // As the CUDA engine: four inputs per launch, the rest folded in.
            let head = self.sum(&xs[..4], false)?;
            let mut rest: Vec<&ShapeTensor> = vec![&head];
            rest.extend_from_slice(&xs[4..]);
            return self.sum(&rest, false);
        }
        self.tensor(first.n, first.c, first.dims)
    }

    fn sigmoid_sum(&self, a: &ShapeTensor, b: &ShapeTensor) -> Result<ShapeTensor> {
        same_shape("sigmoid_sum", a, b)?;
        self.tensor(a.n, a.c, a.dims)
    }

    fn attend(&self, x: ShapeTensor, w: &ShapeTensor) -> Result<ShapeTensor> {
        if w.n != x.n || w.dims != x.dims || (w.c != 1 && w.c != x.c) {
            return Err(Error::Shape(format!("attend: weights with {} channels for {} channels", w.c, x.c)));
        }
        // In place on a plain tensor nobody else holds, as the CUDA engine (without poisoning).
        let in_place = x.norm.is_none() && x.buf.as_ref().is_some_and(|b| Arc::strong_count(b) == 1);
        if in_place {
            Ok(x)
        } else {
            self.tensor(x.n, x.c, x.dims)
        }
    }

    fn concat(&self, a: &ShapeTensor, b: &ShapeTensor) -> Result<ShapeTensor> {
        if a.n != b.n || a.dims != b.dims {
            return Err(Error::Shape("concat: shapes differ".into()));
        }
        self.tensor(a.n, a.c + b.c, a.dims)
    }

    /// The identity, as on the CUDA engine; counted.
    fn dropout(&self, x: ShapeTensor, site: DropoutSite) -> Result<ShapeTensor> {
        if let Ok(mut d) = self.dropouts.lock() {
            d[site as usize] += 1;
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_mirrors_the_cuda_engine_op_by_op() {
        // conv_norm with a residual on a (2, 32, 8x8x4) tensor: output, partials, statistics,
        // partials freed, the materialised sum, then the raw output and its statistics freed.
        let be = ShapeBackend::new();
        let x = be.untracked(2, 32, [8, 8, 4]);
        let r = be.tensor(2, 16, [8, 8, 4]).unwrap();
        let spec = ConvSpec { cin: 32, cout: 16, k: [3, 3, 1], bias: true };
        let y = be.conv_norm(&x, &spec, Some(&r), true).unwrap();
        drop((r, y));
        use crate::backend::arena::Event::*;
        let t = 2 * 16 * 256 * 2;
        let tiles = 256usize.div_ceil(STATS_TILE_ROWS);
        assert_eq!(
            be.trace().events,
            vec![
                Alloc { id: 0, bytes: t, align: 256 },                  // residual
                Alloc { id: 1, bytes: t, align: 256 },                  // raw conv output
                Alloc { id: 2, bytes: 2 * tiles * 16 * 8, align: 256 }, // partials
                Alloc { id: 3, bytes: 2 * 16 * 8, align: 256 },         // (mean, rstd)
                Free { id: 2 },
                Alloc { id: 4, bytes: t, align: 256 }, // norm + residual
                Free { id: 1 },
                Free { id: 3 },
                Free { id: 0 },
                Free { id: 4 },
            ]
        );
        // attend works in place on an unshared plain tensor, not on a shared or lazy one.
        let be = ShapeBackend::new();
        let w = be.tensor(1, 1, [4, 4, 4]).unwrap();
        let a = be.tensor(1, 8, [4, 4, 4]).unwrap();
        let n = be.trace().allocations();
        let a = be.attend(a, &w).unwrap();
        assert_eq!(be.trace().allocations(), n, "in place");
        let shared = a.clone();
        let _b = be.attend(a, &w).unwrap();
        assert_eq!(be.trace().allocations(), n + 1, "a shared tensor is not overwritten");
        drop(shared);
    }

    #[test]
    fn download_is_an_error_and_an_empty_batch_is_rejected() {
        let be = ShapeBackend::new();
        let t = be.tensor(1, 1, [2, 2, 2]).unwrap();
        assert!(be.download(&t).is_err());
    }
}
