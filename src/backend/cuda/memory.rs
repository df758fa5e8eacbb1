//! Device memory: a caching pool of raw allocations in size classes.
//!
//! A forward pass allocates and frees the same few dozen sizes over and over; after the first
//! pass every request is served from the free lists without a driver call. A buffer returns to
//! its free list when dropped and may be handed out again at once: all work runs in order on the
//! device's one stream, so a kernel queued later cannot overtake the earlier kernels that still
//! read the old contents.
//!
//! Planned passes (`backend::arena`, used by `graph::GraphedForward`): [`Pool::record`] runs a
//! pass on pooled buffers while logging every allocation and free; [`Pool::planned`] runs a
//! later pass of the same shape with every buffer at its planned offset in one [`Arena`],
//! checking request by request that the pass repeats the recorded one. A planned pass makes
//! no driver call to allocate or free, so it can be captured into a CUDA graph, and its
//! addresses are the same every time, so the graph can be replayed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::result as cu;
use cudarc::driver::sys;
use cudarc::driver::{CudaContext, CudaStream};

use super::device::derr;
use crate::backend::arena::{Plan, Replay, Trace, DEVICE_ALIGN};
use crate::error::{Error, Result};

struct PoolInner {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    device_name: String,
    free: Mutex<FreeLists>,
    /// Calls of [`Pool::alloc`], planned or not: a replayed graph must not change it.
    alloc_calls: AtomicU64,
}

#[derive(Default)]
struct FreeLists {
    by_class: HashMap<usize, Vec<sys::CUdeviceptr>>,
    cached_bytes: usize,
    live_bytes: usize,
    peak_bytes: usize,
    arena_bytes: usize,
    session: Session,
    /// Numbers the sessions, so a buffer outliving its session is not logged into the next.
    generation: u64,
}

/// What [`Pool::alloc`] does besides handing out memory.
#[derive(Default)]
enum Session {
    #[default]
    Plain,
    /// Logs each allocation and free of the pass.
    Recording(Trace),
    /// Hands out the plan's offsets in `base`'s arena, checking the pass against the plan.
    Planned { plan: Arc<Plan>, base: sys::CUdeviceptr, replay: Replay },
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
        Pool {
            inner: Arc::new(PoolInner {
                ctx,
                stream,
                device_name,
                free: Mutex::new(FreeLists::default()),
                alloc_calls: AtomicU64::new(0),
            }),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, FreeLists>> {
        self.inner.free.lock().map_err(|_| Error::Device("memory pool poisoned".into()))
    }

    /// A buffer of at least `bytes` bytes; contents undefined. In a planned pass, the next
    /// planned buffer (an error if the pass asks for something else than the recorded one).
    pub fn alloc(&self, bytes: usize) -> Result<DeviceBuffer> {
        self.inner.alloc_calls.fetch_add(1, Ordering::Relaxed);
        {
            let mut f = self.lock()?;
            let generation = f.generation;
            if let Session::Planned { plan, base, replay } = &mut f.session {
                let (id, offset) = replay.alloc(plan, bytes)?;
                return Ok(DeviceBuffer {
                    ptr: *base + offset as u64,
                    bytes,
                    backing: Backing::Arena,
                    traced: Some((generation, id)),
                    pool: self.inner.clone(),
                });
            }
        }
        let mut buf = self.alloc_pooled(bytes)?;
        let mut f = self.lock()?;
        let generation = f.generation;
        if let Session::Recording(trace) = &mut f.session {
            buf.traced = Some((generation, trace.alloc(bytes, DEVICE_ALIGN)));
        }
        Ok(buf)
    }

    fn alloc_pooled(&self, bytes: usize) -> Result<DeviceBuffer> {
        let class = size_class(bytes);
        {
            let mut f = self.lock()?;
            if let Some(p) = f.by_class.get_mut(&class).and_then(|v| v.pop()) {
                f.cached_bytes -= class;
                f.live_bytes += class;
                f.peak_bytes = f.peak_bytes.max(f.live_bytes);
                return Ok(DeviceBuffer::pooled(p, bytes, class, &self.inner));
            }
        }
        let p = match self.inner.raw_alloc(class) {
            Ok(p) => p,
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                // Give cached buffers of other sizes back to the driver and try once more.
                self.inner.trim();
                self.inner.raw_alloc(class).map_err(|e| self.alloc_error(e, class, "needed"))?
            }
            Err(e) => return Err(self.alloc_error(e, class, "needed")),
        };
        let mut f = self.lock()?;
        f.live_bytes += class;
        f.peak_bytes = f.peak_bytes.max(f.live_bytes);
        Ok(DeviceBuffer::pooled(p, bytes, class, &self.inner))
    }

    /// Runs `pass` on pooled buffers and returns what it allocated and freed, in order. Every
    /// buffer the pass allocates must be freed by its end (the trace is the plan of a pass that
    /// leaves nothing behind in the arena).
    pub fn record<R>(&self, pass: impl FnOnce() -> Result<R>) -> Result<(R, Trace)> {
        self.begin(Session::Recording(Trace::new()))?;
        let r = pass();
        let session = self.end();
        let r = r?;
        let Session::Recording(trace) = session? else {
            return Err(Error::Other("internal: the pool's recording session was replaced".into()));
        };
        if trace.live_at_end() != 0 {
            return Err(Error::Other(format!(
                "internal: {} buffers allocated in a recorded pass outlive it",
                trace.live_at_end()
            )));
        }
        Ok((r, trace))
    }

    /// Runs `pass` with its buffers at `plan`'s offsets in `arena`: no driver allocation, the
    /// same addresses every time. Fails (never overlaps buffers) if the pass diverges from the
    /// recorded one, or if one of its buffers outlives it.
    pub fn planned<R>(&self, plan: &Arc<Plan>, arena: &Arena, pass: impl FnOnce() -> Result<R>) -> Result<R> {
        if arena.bytes < plan.size || !Arc::ptr_eq(&arena.pool, &self.inner) {
            return Err(Error::Other(format!(
                "internal: an arena of {} bytes (of this pool: {}) for a plan of {} bytes",
                arena.bytes,
                Arc::ptr_eq(&arena.pool, &self.inner),
                plan.size
            )));
        }
        self.begin(Session::Planned { plan: plan.clone(), base: arena.ptr, replay: Replay::new() })?;
        let r = pass();
        let session = self.end();
        let r = r?;
        match session? {
            Session::Planned { plan, mut replay, .. } => replay.finish(&plan)?,
            _ => return Err(Error::Other("internal: the pool's planned session was replaced".into())),
        }
        Ok(r)
    }

    fn begin(&self, session: Session) -> Result<()> {
        let mut f = self.lock()?;
        if !matches!(f.session, Session::Plain) {
            return Err(Error::Device(
                "the GPU memory pool is already in a recorded or planned pass (one pass at a time per backend)".into(),
            ));
        }
        f.generation += 1;
        f.session = session;
        Ok(())
    }

    fn end(&self) -> Result<Session> {
        let mut f = self.lock()?;
        f.generation += 1;
        Ok(std::mem::take(&mut f.session))
    }

    /// A failed allocation of `bytes` as an error: out of memory says how much is free and what
    /// to do (`what` names the request: "needed", "the planned arena needs").
    fn alloc_error(&self, e: cu::DriverError, bytes: usize, what: &str) -> Error {
        if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            let (free, total) = self.inner.ctx.mem_get_info().unwrap_or((0, 0));
            Error::Device(format!(
                "out of GPU memory: {what} {} ({} free of {} on {}); use a smaller batch",
                human(bytes),
                human(free),
                human(total),
                self.inner.device_name
            ))
        } else {
            derr(format!("cannot allocate {} of GPU memory", human(bytes)), e)
        }
    }

    /// One device buffer for a planned pass's arena, outside the size classes.
    pub fn arena(&self, bytes: usize) -> Result<Arena> {
        let bytes = bytes.max(DEVICE_ALIGN);
        let ptr = self.inner.raw_alloc(bytes).map_err(|e| self.alloc_error(e, bytes, "the planned arena needs"))?;
        self.lock()?.arena_bytes += bytes;
        Ok(Arena { ptr, bytes, pool: self.inner.clone() })
    }

    /// Number of [`Pool::alloc`] calls so far.
    pub fn alloc_count(&self) -> u64 {
        self.inner.alloc_calls.load(Ordering::Relaxed)
    }

    /// Bytes held by planned arenas.
    pub fn arena_bytes(&self) -> usize {
        self.lock().map(|f| f.arena_bytes).unwrap_or(0)
    }

    /// Frees all cached (unused) buffers.
    pub fn trim(&self) {
        self.inner.trim();
    }

    /// (bytes in use, bytes cached, peak bytes in use).
    /// Starts a new peak from the bytes in use now.
    pub fn reset_peak(&self) {
        if let Ok(mut f) = self.inner.free.lock() {
            f.peak_bytes = f.live_bytes;
        }
    }

    pub fn usage(&self) -> (usize, usize, usize) {
        self.inner.free.lock().map(|f| (f.live_bytes, f.cached_bytes, f.peak_bytes)).unwrap_or((0, 0, 0))
    }
}

/// The memory of a planned pass: one driver allocation, freed (after the stream drains) on drop.
pub struct Arena {
    ptr: sys::CUdeviceptr,
    bytes: usize,
    pool: Arc<PoolInner>,
}

impl Arena {
    pub fn len(&self) -> usize {
        self.bytes
    }
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // Queued kernels (a replayed graph) may still use it.
        let _ = self.pool.stream.synchronize();
        self.pool.raw_free(self.ptr);
        let _ = self.pool.stream.synchronize();
        if let Ok(mut f) = self.pool.free.lock() {
            f.arena_bytes -= self.bytes;
        }
    }
}

/// Where a buffer's memory comes from.
enum Backing {
    /// A size-class block, returned to the free lists on drop.
    Pooled { class: usize },
    /// A slice of a planned arena, which owns the memory.
    Arena,
}

/// Device memory owned by the pool (or a planned arena); returns to it on drop.
pub struct DeviceBuffer {
    ptr: sys::CUdeviceptr,
    bytes: usize,
    backing: Backing,
    /// `(session generation, id)` when allocated in a recorded or planned pass.
    traced: Option<(u64, usize)>,
    pool: Arc<PoolInner>,
}

impl DeviceBuffer {
    fn pooled(ptr: sys::CUdeviceptr, bytes: usize, class: usize, pool: &Arc<PoolInner>) -> Self {
        DeviceBuffer { ptr, bytes, backing: Backing::Pooled { class }, traced: None, pool: pool.clone() }
    }

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
    /// on return, except pinned memory, which the copy reads asynchronously: keep it until the
    /// stream has passed the copy).
    pub fn upload<T: Copy>(&self, data: &[T]) -> Result<()> {
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
        let Ok(mut f) = self.pool.free.lock() else { return };
        if let Some((generation, id)) = self.traced {
            let current = f.generation == generation;
            match &mut f.session {
                Session::Recording(trace) if current => trace.free(id),
                Session::Planned { replay, .. } if current => replay.free(id),
                // Its pass is over: a pooled buffer simply goes back to the free lists.
                _ => {}
            }
        }
        if let Backing::Pooled { class } = self.backing {
            f.live_bytes -= class;
            f.cached_bytes += class;
            f.by_class.entry(class).or_default().push(self.ptr);
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
