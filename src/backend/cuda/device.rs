//! The CUDA device: driver discovery, context and stream, the embedded kernel modules (loaded
//! lazily, once) and kernel launches. Every driver call's result is checked and turned into an
//! [`Error::Device`] that says what failed; debug builds (and `FMSEG_CUDA_SYNC=1`) synchronise
//! after every launch so a faulting kernel is named at its launch (`FMSEG_CUDA_SYNC=0` turns
//! that off).

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::result::{self as cu, DriverError};
use cudarc::driver::sys;
use cudarc::driver::{CudaContext, CudaGraph, CudaStream};

use super::kernels::{Kernel, Module, KERNELS_BUILT};
use crate::error::{Error, Result};

/// Turns a driver error into a device error naming what was being done.
pub(crate) fn derr(what: impl std::fmt::Display, e: DriverError) -> Error {
    let name = e.error_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|_| format!("{:?}", e.0));
    let text = e.error_string().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Error::Device(format!("{what}: {name} ({text})"))
}

/// A loaded module; unloaded when the device goes.
struct LoadedModule {
    raw: sys::CUmodule,
}

/// A kernel handle. CUfunction is a plain driver handle, valid while its module is loaded,
/// which the device keeps until it is dropped.
#[derive(Clone, Copy)]
pub(crate) struct Func(sys::CUfunction);

// SAFETY: driver handles may be used from any thread once the context is current there
// (every launch binds the context first).
unsafe impl Send for LoadedModule {}
unsafe impl Sync for LoadedModule {}
unsafe impl Send for Func {}
unsafe impl Sync for Func {}

/// One GPU with one stream. All work is ordered on that stream, which is what makes the buffer
/// pool's immediate reuse of freed buffers safe.
pub struct Device {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub name: String,
    pub cc: (i32, i32),
    pub sm_count: i32,
    pub total_mem: usize,
    max_smem_optin: i32,
    modules: Mutex<HashMap<Module, LoadedModule>>,
    functions: Mutex<HashMap<&'static str, Func>>,
    sync_each_launch: bool,
    /// A graph capture is under way on the stream: launches must not synchronise.
    capturing: AtomicBool,
}

/// An instantiated CUDA graph of work captured on the device's stream.
pub(crate) struct Graph(CudaGraph);

// SAFETY: a graph and its executable may be used from any thread as long as calls on them are
// serialised (CUDA's graph thread-safety rules); `Graph` is only reached through `&mut`
// (`GraphedForward::run`), which serialises them, and each call binds the context first.
unsafe impl Send for Graph {}

impl Graph {
    /// Queues one replay of the graph on the device's stream.
    pub(crate) fn launch(&self) -> Result<()> {
        self.0.launch().map_err(|e| derr("cannot launch the CUDA graph", e))
    }
}

impl Device {
    /// Opens GPU `ordinal`. Fails with a clear message when this build has no kernels, when no
    /// driver or GPU is present, or when the GPU is older than compute capability 8.0.
    pub fn open(ordinal: usize) -> Result<Self> {
        if !KERNELS_BUILT {
            return Err(Error::Device(
                "this fmseg was built without CUDA kernels (nvcc was not found at build time); install the \
                 toolchain with scripts/install-cuda-toolchain.sh and rebuild"
                    .into(),
            ));
        }
        // With dynamic loading the first driver call panics when libcuda is missing: ask first.
        if !unsafe { sys::is_culib_present() } {
            return Err(Error::Device(
                "no CUDA driver found (libcuda.so is not installed or not on the library path)".into(),
            ));
        }
        cu::init().map_err(|e| {
            if e.0 == sys::CUresult::CUDA_ERROR_NO_DEVICE {
                Error::Device("no CUDA GPU found (the driver is installed but reports no device)".into())
            } else {
                derr("cannot initialise the CUDA driver", e)
            }
        })?;
        let count = cu::device::get_count().map_err(|e| derr("cannot count CUDA devices", e))?;
        if count <= 0 {
            return Err(Error::Device("no CUDA GPU found".into()));
        }
        if ordinal >= count as usize {
            return Err(Error::Device(format!("CUDA device {ordinal} does not exist ({count} GPU(s) found)")));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| derr(format!("cannot open CUDA device {ordinal}"), e))?;
        let name = ctx.name().map_err(|e| derr("cannot read the GPU name", e))?;
        let cc = ctx.compute_capability().map_err(|e| derr("cannot read the compute capability", e))?;
        if cc.0 < 8 {
            return Err(Error::Device(format!(
                "GPU {name} has compute capability {}.{}; fmseg's kernels need 8.0 or newer",
                cc.0, cc.1
            )));
        }
        let attr = |a| ctx.attribute(a).map_err(|e| derr("cannot read a device attribute", e));
        let sm_count = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let max_smem_optin = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
        let total_mem = ctx.total_mem().map_err(|e| derr("cannot read the GPU memory size", e))?;
        // One stream and stream-ordered reuse: cudarc's per-buffer event tracking is not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| derr("cannot create a CUDA stream", e))?;
        // FMSEG_CUDA_SYNC=1 / 0 forces the per-launch check on / off (benchmarks of test builds).
        let sync_each_launch = match std::env::var("FMSEG_CUDA_SYNC") {
            Ok(v) => v != "0",
            Err(_) => cfg!(debug_assertions),
        };
        Ok(Device {
            ctx,
            stream,
            name,
            cc,
            sm_count,
            total_mem,
            max_smem_optin,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            sync_each_launch,
            capturing: AtomicBool::new(false),
        })
    }

    pub(crate) fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| derr("cannot make the CUDA context current", e))
    }

    /// Loads `module` if needed: the sm_90a cubin on compute capability 9.0, else the PTX
    /// (JIT-compiled by the driver for the GPU at hand).
    fn module(&self, module: Module) -> Result<sys::CUmodule> {
        let mut mods = self.modules.lock().map_err(|_| Error::Device("module table poisoned".into()))?;
        if let Some(m) = mods.get(&module) {
            return Ok(m.raw);
        }
        self.bind()?;
        let load_ptx = || {
            let ptx = CString::new(module.ptx())
                .map_err(|_| Error::Device(format!("PTX of {} contains a NUL byte", module.name())))?;
            unsafe { cu::module::load_data(ptx.as_ptr() as *const c_void) }
                .map_err(|e| derr(format!("cannot load kernel module {} (PTX) on {}", module.name(), self.name), e))
        };
        let raw = if self.cc == (9, 0) {
            let bin = module.cubin_sm90a();
            // The cubin should always load on compute capability 9.0; the PTX is the fallback.
            match unsafe { cu::module::load_data(bin.as_ptr() as *const c_void) } {
                Ok(m) => m,
                Err(_) => load_ptx()?,
            }
        } else {
            load_ptx()?
        };
        mods.insert(module, LoadedModule { raw });
        Ok(raw)
    }

    /// The kernel, loaded and cached on first use. Its dynamic shared-memory limit is raised to
    /// the device maximum so launches may ask for more than 48 KB.
    pub(crate) fn function(&self, kernel: Kernel) -> Result<Func> {
        let Kernel { module, name } = kernel;
        if let Some(f) = self.functions.lock().map_err(|_| Error::Device("function table poisoned".into()))?.get(name) {
            return Ok(*f);
        }
        let m = self.module(module)?;
        let cname = CString::new(name).map_err(|_| Error::Device(format!("bad kernel name {name}")))?;
        let f = unsafe { cu::module::get_function(m, cname) }
            .map_err(|e| derr(format!("kernel {name} not found in module {}", module.name()), e))?;
        let static_smem = unsafe {
            cu::function::get_function_attribute(f, sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
        }
        .map_err(|e| derr(format!("cannot query kernel {name}"), e))?;
        unsafe {
            cu::function::set_function_attribute(
                f,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                self.max_smem_optin - static_smem,
            )
        }
        .map_err(|e| derr(format!("cannot raise the shared-memory limit of kernel {name}"), e))?;
        let f = Func(f);
        self.functions.lock().map_err(|_| Error::Device("function table poisoned".into()))?.insert(name, f);
        Ok(f)
    }

    /// Largest dynamic shared memory one block may use.
    pub(crate) fn max_dynamic_smem(&self) -> usize {
        self.max_smem_optin.max(0) as usize
    }

    /// Launches `kernel` with its parameter block `params` (passed by value).
    pub(crate) fn launch<P: Copy>(
        &self,
        kernel: Kernel,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        smem: usize,
        params: &P,
    ) -> Result<()> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        let name = kernel.name;
        if grid.1 > 65535 || grid.2 > 65535 {
            return Err(Error::Device(format!("kernel {name}: grid {grid:?} exceeds the device limits")));
        }
        if smem > self.max_dynamic_smem() {
            return Err(Error::Device(format!(
                "kernel {name} needs {smem} bytes of shared memory; {} allows {}",
                self.name,
                self.max_dynamic_smem()
            )));
        }
        self.bind()?;
        let f = self.function(kernel)?;
        let mut p = *params;
        let mut args = [&mut p as *mut P as *mut c_void];
        unsafe { cu::launch_kernel(f.0, grid, block, smem as u32, self.stream.cu_stream(), &mut args) }.map_err(
            |e| derr(format!("cannot launch kernel {name} (grid {grid:?}, block {block:?}, {smem} B smem)"), e),
        )?;
        if self.sync_each_launch && !self.capturing.load(Ordering::Relaxed) {
            self.stream.synchronize().map_err(|e| derr(format!("kernel {name} failed"), e))?;
        }
        Ok(())
    }

    /// Captures the work `f` queues on the stream into a graph, instantiated and uploaded.
    /// `f` must not allocate or free device memory, synchronise, or read results on the host
    /// (the driver rejects those during a capture, and the capture is then invalid); the
    /// per-launch debug synchronisation (`FMSEG_CUDA_SYNC`) is suspended meanwhile. Kernels
    /// and modules must already be loaded (run `f`'s work once before).
    pub(crate) fn capture(&self, f: impl FnOnce() -> Result<()>) -> Result<Graph> {
        self.bind()?;
        // Thread-local mode: an unsafe call from this thread (cuMemAlloc, a synchronisation)
        // fails at once instead of corrupting the capture silently.
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| derr("cannot begin a CUDA graph capture", e))?;
        self.capturing.store(true, Ordering::Relaxed);
        let queued = f();
        self.capturing.store(false, Ordering::Relaxed);
        // End the capture whatever happened, so the stream is usable again.
        let graph = self.stream.end_capture(sys::CUgraphInstantiate_flags(0));
        queued?;
        let graph = graph
            .map_err(|e| {
                derr("CUDA graph capture failed (an operation that cannot be captured ran during the pass)", e)
            })?
            .ok_or_else(|| Error::Device("CUDA graph capture recorded no work".into()))?;
        graph.upload().map_err(|e| derr("cannot upload the CUDA graph", e))?;
        Ok(Graph(graph))
    }

    /// Waits for all queued work; reports an asynchronous kernel failure.
    pub fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.stream.synchronize().map_err(|e| derr("CUDA stream failed", e))
    }

    /// (free, total) device memory in bytes.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        self.ctx.mem_get_info().map_err(|e| derr("cannot query GPU memory", e))
    }

    /// Grid size for a grid-stride elementwise kernel over `items` work items.
    pub(crate) fn grid_for(&self, items: usize, block: u32) -> u32 {
        let want = items.div_ceil(block as usize);
        let cap = (self.sm_count.max(1) as usize) * 32;
        want.clamp(1, cap) as u32
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.bind();
        let _ = self.stream.synchronize();
        if let Ok(mut mods) = self.modules.lock() {
            for (_, m) in mods.drain() {
                unsafe {
                    let _ = cu::module::unload(m.raw);
                }
            }
        }
    }
}
