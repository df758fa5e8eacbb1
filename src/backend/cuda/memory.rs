//! Device memory: a caching pool of raw allocations in size classes.
//!
//! A forward pass allocates and frees the same few dozen sizes over and over; after the first
//! pass every request is served from the free lists without a driver call. A buffer returns to
//! its free list when dropped and may be handed out again at once: all work runs in order on the
//! device's one stream, so a kernel queued later cannot overtake the earlier kernels that still
//! read the old contents. (The next step, a planned arena with CUDA-graph replay, replaces the
//! free lists by fixed offsets; every allocation already goes through [`Pool::alloc`].)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::result as cu;
use cudarc::driver::sys;
use cudarc::driver::{CudaContext, CudaStream};

use super::device::derr;
use crate::error::{Error, Result};

struct PoolInner {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    device_name: String,
    free: Mutex<FreeLists>,
}

#[derive(Default)]
struct FreeLists {
    by_class: HashMap<usize, Vec<sys::CUdeviceptr>>,
    cached_bytes: usize,
    live_bytes: usize,
    peak_bytes: usize,
}

impl PoolInner {
    fn raw_alloc(&self, bytes: usize) -> std::result::Result<sys::CUdeviceptr, cu::DriverError> {
        self.ctx.bind_to_thread()?;
        unsafe {
            if self.ctx.has_async_alloc() {
                cu::malloc_async(self.stream.cu_stream(), bytes)
            } else {
                cu::malloc_sync(bytes)
            }
        }
    }

    fn raw_free(&self, p: sys::CUdeviceptr) {
        if self.ctx.bind_to_thread().is_err() {
            return;
        }
        unsafe {
            let _ =
                if self.ctx.has_async_alloc() { cu::free_async(p, self.stream.cu_stream()) } else { cu::free_sync(p) };
        }
    }

    /// Frees every cached buffer (after the stream drains, since queued kernels may use them).
    fn trim(&self) {
        let drained: Vec<sys::CUdeviceptr> = match self.free.lock() {
            Ok(mut f) => {
                f.cached_bytes = 0;
                f.by_class.drain().flat_map(|(_, v)| v).collect()
            }
            Err(_) => return,
        };
        let _ = self.stream.synchronize();
        for p in drained {
            self.raw_free(p);
        }
        let _ = self.stream.synchronize();
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        self.trim();
    }
}

/// The caching allocator of one device.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

/// Size classes: 4 KiB minimum, then 8 steps per power of two (at most 12.5 % slack), so the
/// few sizes of a forward pass map to few classes and different batch sizes share little.
fn size_class(bytes: usize) -> usize {
    let bytes = bytes.max(1);
    let high_bit = 1usize << (usize::BITS - 1 - bytes.leading_zeros());
    let step = (high_bit / 8).max(4096);
    bytes.div_ceil(step) * step
}

impl Pool {
    pub fn new(ctx: Arc<CudaContext>, stream: Arc<CudaStream>, device_name: String) -> Self {
        Pool { inner: Arc::new(PoolInner { ctx, stream, device_name, free: Mutex::new(FreeLists::default()) }) }
    }

    /// A buffer of at least `bytes` bytes; contents undefined.
    pub fn alloc(&self, bytes: usize) -> Result<DeviceBuffer> {
        let class = size_class(bytes);
        {
            let mut f = self.inner.free.lock().map_err(|_| Error::Device("memory pool poisoned".into()))?;
            if let Some(p) = f.by_class.get_mut(&class).and_then(|v| v.pop()) {
                f.cached_bytes -= class;
                f.live_bytes += class;
                f.peak_bytes = f.peak_bytes.max(f.live_bytes);
                return Ok(DeviceBuffer { ptr: p, bytes, class, pool: self.inner.clone() });
            }
        }
        let p = match self.inner.raw_alloc(class) {
            Ok(p) => p,
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                // Give cached buffers of other sizes back to the driver and try once more.
                self.inner.trim();
                self.inner.raw_alloc(class).map_err(|e| {
                    if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                        let (free, total) = self.inner.ctx.mem_get_info().unwrap_or((0, 0));
                        Error::Device(format!(
                            "out of GPU memory: needed {} more ({} free of {} on {}); use a smaller batch",
                            human(class),
                            human(free),
                            human(total),
                            self.inner.device_name
                        ))
                    } else {
                        derr(format!("cannot allocate {} of GPU memory", human(class)), e)
                    }
                })?
            }
            Err(e) => return Err(derr(format!("cannot allocate {} of GPU memory", human(class)), e)),
        };
        let mut f = self.inner.free.lock().map_err(|_| Error::Device("memory pool poisoned".into()))?;
        f.live_bytes += class;
        f.peak_bytes = f.peak_bytes.max(f.live_bytes);
        Ok(DeviceBuffer { ptr: p, bytes, class, pool: self.inner.clone() })
    }

    /// Frees all cached (unused) buffers.
    pub fn trim(&self) {
        self.inner.trim();
    }

    /// (bytes in use, bytes cached, peak bytes in use).
    pub fn usage(&self) -> (usize, usize, usize) {
        self.inner.free.lock().map(|f| (f.live_bytes, f.cached_bytes, f.peak_bytes)).unwrap_or((0, 0, 0))
    }
}

/// Device memory owned by the pool; returns to it on drop.
pub struct DeviceBuffer {
    ptr: sys::CUdeviceptr,
    bytes: usize,
    class: usize,
    pool: Arc<PoolInner>,
}

impl DeviceBuffer {
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
    /// Requested size in bytes.
    pub fn len(&self) -> usize {
        self.bytes
    }
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Copies `data` to the start of the buffer (ordered on the stream; `data` may be dropped
    /// on return).
    pub fn upload<T: Copy>(&mut self, data: &[T]) -> Result<()> {
        let n = std::mem::size_of_val(data);
        if n > self.bytes {
            return Err(Error::Device(format!("upload of {n} bytes into a buffer of {}", self.bytes)));
        }
        self.pool.ctx.bind_to_thread().map_err(|e| derr("cannot make the CUDA context current", e))?;
        unsafe { cu::memcpy_htod_async(self.ptr, data, self.pool.stream.cu_stream()) }
            .map_err(|e| derr(format!("cannot copy {} to the GPU", human(n)), e))
    }

    /// Copies the start of the buffer into `out`, waiting for all queued work first.
    pub fn download<T: Copy>(&self, out: &mut [T]) -> Result<()> {
        let n = std::mem::size_of_val(out);
        if n > self.bytes {
            return Err(Error::Device(format!("download of {n} bytes from a buffer of {}", self.bytes)));
        }
        self.pool.ctx.bind_to_thread().map_err(|e| derr("cannot make the CUDA context current", e))?;
        unsafe { cu::memcpy_dtoh_async(out, self.ptr, self.pool.stream.cu_stream()) }
            .map_err(|e| derr(format!("cannot copy {} from the GPU", human(n)), e))?;
        self.pool.stream.synchronize().map_err(|e| derr("GPU work failed before a download", e))
    }

    /// Fills the buffer with a 16-bit pattern (e.g. fp16 NaN to poison outputs in tests).
    pub fn fill_u16(&mut self, bits: u16) -> Result<()> {
        self.pool.ctx.bind_to_thread().map_err(|e| derr("cannot make the CUDA context current", e))?;
        unsafe { sys::cuMemsetD16Async(self.ptr, bits, self.bytes / 2, self.pool.stream.cu_stream()) }
            .result()
            .map_err(|e| derr("cannot fill a GPU buffer", e))
    }

    /// Fills the buffer with a 32-bit pattern (f32 zeros, f32 NaN).
    pub fn fill_u32(&mut self, bits: u32) -> Result<()> {
        self.pool.ctx.bind_to_thread().map_err(|e| derr("cannot make the CUDA context current", e))?;
        unsafe { sys::cuMemsetD32Async(self.ptr, bits, self.bytes / 4, self.pool.stream.cu_stream()) }
            .result()
            .map_err(|e| derr("cannot fill a GPU buffer", e))
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if let Ok(mut f) = self.pool.free.lock() {
            f.live_bytes -= self.class;
            f.cached_bytes += self.class;
            f.by_class.entry(self.class).or_default().push(self.ptr);
        }
    }
}

/// Bytes as a short human-readable size.
pub fn human(bytes: usize) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes as f64 >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_the_request_with_little_slack() {
        for bytes in [1usize, 4095, 4096, 4097, 100_000, 37_748_736, 301_989_888, 1 << 30] {
            let c = size_class(bytes);
            assert!(c >= bytes, "{bytes} -> {c}");
            assert!(c - bytes <= (bytes / 8).max(4096), "{bytes} -> {c}");
            assert_eq!(c % 4096, 0);
        }
        assert_eq!(size_class(37_748_736), 37_748_736);
    }
}
