//! The FP16 CUDA engine: hand-written kernels (`kernels/*.cu`, compiled by build.rs and
//! embedded), launched through the CUDA driver API (cudarc, loaded at run time).
//!
//! Layout and precision: activations are FP16 channels-last `(N, H, W, D, C)`; weights FP16
//! (f32 for the few CUDA-core convs); accumulation, InstanceNorm statistics and every
//! elementwise computation in f32. A conv followed by InstanceNorm returns a *lazy* tensor
//! (raw conv output + statistics computed in the conv's epilogue); the next kernel normalises
//! (and applies ReLU) while loading, so `conv -> IN -> ReLU` reads and writes each tensor once.
//! A residual add is one fused pass (norm + add + ReLU).
//!
//! Modules: `device` (driver, context, stream, module table, launches), `memory` (caching
//! pool), `tensor` (the lazy tensor), `conv` (weights and conv launches), `ops` (the other
//! ops), `window` (sliding-window blending and post-processing for the pipeline), `pinned`
//! (page-locked staging), `params` (kernel parameter blocks), `kernels` (the generated module
//! table). What runs the network or a study over these (`engine::graphed`,
//! `pipeline::device_study`) lives in the layers above.

mod conv;
mod device;
mod kernels;
mod memory;
mod ops;
mod params;
pub mod pinned;
mod tensor;
mod window;

use std::sync::atomic::{AtomicBool, Ordering};

pub use conv::{ConvKernel, CudaConv, CudaConvT};
pub use device::Device;
pub(crate) use device::Graph;
pub use kernels::{Kernel, Module, KERNELS, KERNELS_BUILT, RESOURCES as KERNEL_RESOURCES};
pub use memory::{Arena, DeviceBuffer, Pool};
pub use pinned::PinnedBuffer;
pub use tensor::CudaTensor;
pub use window::{Blend, DeviceVolume};

use crate::backend::{Backend, ConvSpec, ConvTSpec};
use crate::error::{Error, Result};
use crate::tensor::{numel, Dims, HostTensor};
use params::F16_NAN_BITS;
use tensor::{check_shape, ncdhw_to_ndhwc_f16};

// The shape-only backend's trace of this engine's statistics buffers uses the same tile.
const _: () = assert!(params::TILE_ROWS == crate::backend::shape::STATS_TILE_ROWS);

/// The CUDA backend on one GPU.
pub struct CudaBackend {
    pub(crate) dev: Device,
    pub(crate) pool: Pool,
    ordinal: usize,
    poison: AtomicBool,
}

impl CudaBackend {
    /// The first GPU.
    pub fn new() -> Result<Self> {
        Self::with_device(0)
    }

    /// GPU `ordinal`; a clear [`Error::Device`] when there is no usable GPU.
    pub fn with_device(ordinal: usize) -> Result<Self> {
        let dev = Device::open(ordinal)?;
        let pool = Pool::new(dev.ctx.clone(), dev.stream.clone(), dev.name.clone());
        Ok(CudaBackend { dev, pool, ordinal, poison: AtomicBool::new(false) })
    }

    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// Fill every new output with NaN before its kernel runs, so an element a kernel fails to
    /// write shows up in the result (tests).
    pub fn set_poison_outputs(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed);
    }

    pub(crate) fn poisoning(&self) -> bool {
        self.poison.load(Ordering::Relaxed)
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        self.dev.synchronize()
    }

    /// (bytes in use, bytes cached, peak bytes in use) of the memory pool.
    pub fn memory_usage(&self) -> (usize, usize, usize) {
        self.pool.usage()
    }

    /// Starts a new peak of [`Self::memory_usage`] from the bytes in use now.
    pub fn reset_memory_peak(&self) {
        self.pool.reset_peak()
    }

    /// Device memory bandwidth, bytes read + written per second: the best of five
    /// device-to-device copies of 1 GiB, timed with a synchronisation around each.
    pub fn copy_bandwidth(&self) -> Result<f64> {
        let bytes = 1usize << 30;
        let (src, dst) = (self.pool.alloc(bytes)?, self.pool.alloc(bytes)?);
        let mut best = 0f64;
        for i in 0..6 {
            self.synchronize()?;
            let t = std::time::Instant::now();
            self.dev.ctx.bind_to_thread().map_err(|e| device::derr("cannot make the CUDA context current", e))?;
            // SAFETY: both buffers hold `bytes` bytes of device memory owned by the pool.
            unsafe {
                cudarc::driver::result::memcpy_dtod_async(dst.ptr(), src.ptr(), bytes, self.dev.stream.cu_stream())
            }
            .map_err(|e| device::derr("device-to-device copy", e))?;
            self.synchronize()?;
            if i > 0 {
                best = best.max(2.0 * bytes as f64 / t.elapsed().as_secs_f64());
            }
        }
        Ok(best)
    }

    /// Bytes held by planned arenas (`GraphedForward`), on top of [`Self::memory_usage`].
    pub fn arena_bytes(&self) -> usize {
        self.pool.arena_bytes()
    }

    /// Number of device buffer requests so far (a replayed graph makes none).
    pub fn alloc_count(&self) -> u64 {
        self.pool.alloc_count()
    }

    /// Returns cached device memory to the driver.
    pub fn trim_memory(&self) {
        self.pool.trim()
    }

    /// A new uninitialised (poisoned in tests) activation tensor.
    pub(crate) fn new_tensor(&self, n: usize, c: usize, dims: Dims) -> Result<CudaTensor> {
        check_shape("tensor", n, c, dims)?;
        let mut buf = self.pool.alloc(n * c * numel(dims) * 2)?;
        if self.poisoning() {
            buf.fill_u16(F16_NAN_BITS)?;
        }
        Ok(CudaTensor { buf: std::sync::Arc::new(buf), n, c, dims, norm: None })
    }
}

impl Backend for CudaBackend {
    type Tensor = CudaTensor;
    type Conv = CudaConv;
    type ConvT = CudaConvT;

    fn synchronize(&self) -> Result<()> {
        self.dev.synchronize()
    }

    fn name(&self) -> String {
        format!(
            "cuda:{} ({}, compute capability {}.{}, {} SMs, FP16 tensor cores)",
            self.ordinal, self.dev.name, self.dev.cc.0, self.dev.cc.1, self.dev.sm_count
        )
    }

    fn upload(&self, x: &HostTensor) -> Result<CudaTensor> {
        let (n, c, dims) = x.ncdims()?;
        check_shape("upload", n, c, dims)?;
        if let Some(i) = x.first_non_finite() {
            return Err(Error::Value(format!("input element {i} is {}", x.data[i])));
        }
        let t = self.new_tensor(n, c, dims)?;
        t.buf.upload(&ncdhw_to_ndhwc_f16(&x.data, n, c, numel(dims)))?;
        Ok(t)
    }

    fn download(&self, x: &CudaTensor) -> Result<HostTensor> {
        let (n, c, dims) = x.shape();
        let dev = self.to_ncdhw_f32(x)?;
        let mut data = vec![0f32; x.numel()];
        dev.download(&mut data)?;
        HostTensor::new(vec![n, c, dims[0], dims[1], dims[2]], data)
    }

    fn shape(&self, x: &CudaTensor) -> (usize, usize, Dims) {
        x.shape()
    }

    fn prepare_conv(
        &self,
        _name: &str,
        spec: ConvSpec,
        weight: &HostTensor,
        bias: Option<&HostTensor>,
    ) -> Result<CudaConv> {
        self.prepare_conv_impl(spec, weight, bias)
    }

    fn prepare_conv_t(
        &self,
        _name: &str,
        spec: ConvTSpec,
        weight: &HostTensor,
        bias: &HostTensor,
    ) -> Result<CudaConvT> {
        self.prepare_conv_t_impl(spec, weight, bias)
    }

    fn conv(&self, x: &CudaTensor, conv: &CudaConv) -> Result<CudaTensor> {
        Ok(self.run_conv(x, conv, false)?.0)
    }

    fn instance_norm(&self, x: CudaTensor, residual: Option<&CudaTensor>, relu: bool) -> Result<CudaTensor> {
        self.run_instance_norm(x, residual, relu)
    }

    fn conv_norm(
        &self,
        x: &CudaTensor,
        conv: &CudaConv,
        residual: Option<&CudaTensor>,
        relu: bool,
    ) -> Result<CudaTensor> {
        let (y, partial) = self.run_conv(x, conv, true)?;
        let partial = partial.ok_or_else(|| Error::Other("internal: conv produced no statistics".into()))?;
        let stats = self.finalize_stats(&partial, y.n, y.c, y.vox())?;
        drop(partial);
        self.finish_norm(y, stats, residual, relu)
    }

    fn max_pool(&self, x: &CudaTensor, k: Dims) -> Result<CudaTensor> {
        self.run_max_pool(x, k)
    }

    fn adaptive_avg_pool(&self, x: &CudaTensor, out: Dims) -> Result<CudaTensor> {
        self.run_adaptive_avg_pool(x, out)
    }

    fn resize_trilinear(&self, x: &CudaTensor, out: Dims) -> Result<CudaTensor> {
        self.run_resize(x, out)
    }

    fn up_add(&self, x: &CudaTensor, conv_t: &CudaConvT, skip: &CudaTensor) -> Result<CudaTensor> {
        self.run_up_add(x, conv_t, skip)
    }

    fn sum(&self, xs: &[&CudaTensor], relu: bool) -> Result<CudaTensor> {
        self.run_sum(xs, relu)
    }

    fn sigmoid_sum(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        self.run_sigmoid_sum(a, b)
    }

    fn attend(&self, x: CudaTensor, w: &CudaTensor) -> Result<CudaTensor> {
        self.run_attend(x, w)
    }

    fn concat(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        self.run_concat(a, b)
    }
}
