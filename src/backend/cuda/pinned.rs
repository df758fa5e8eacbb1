//! Page-locked host buffers and the staging of a network input and its logits through them
//! (the planned, graph-replayed forward pass in `engine::graphed` copies through these).

use std::sync::Arc;

use cudarc::driver::result as cu;
use cudarc::driver::{CudaContext, CudaStream};
use half::f16;

use super::device::derr;
use super::memory::DeviceBuffer;
use super::tensor::{ncdhw_to_ndhwc_f16_into, CudaTensor};
use super::CudaBackend;
use crate::error::{Error, Result};
use crate::tensor::{numel, Dims, HostTensor};

/// Page-locked host memory: copies from and to it run asynchronously at full bus speed.
pub struct PinnedBuffer<T: bytemuck::Pod> {
    ptr: *mut T,
    len: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
}

// SAFETY: the buffer is plain host memory owned by this value; access goes through & / &mut.
unsafe impl<T: bytemuck::Pod + Send> Send for PinnedBuffer<T> {}
unsafe impl<T: bytemuck::Pod + Sync> Sync for PinnedBuffer<T> {}

impl<T: bytemuck::Pod> PinnedBuffer<T> {
    /// `len` zeroed values.
    pub fn new(backend: &CudaBackend, len: usize) -> Result<Self> {
        let dev = &backend.dev;
        dev.bind()?;
        let bytes = (len * std::mem::size_of::<T>()).max(1);
        let raw = unsafe { cu::malloc_host(bytes, 0) }
            .map_err(|e| derr(format!("cannot allocate {bytes} bytes of pinned host memory"), e))?;
        if raw.is_null() {
            return Err(Error::Device(format!("cuMemHostAlloc of {bytes} bytes returned null")));
        }
        // SAFETY: `raw` points to `bytes` writable bytes; zero is a valid `T` (Pod).
        unsafe { std::ptr::write_bytes(raw as *mut u8, 0, bytes) };
        Ok(PinnedBuffer { ptr: raw as *mut T, len, ctx: dev.ctx.clone(), stream: dev.stream.clone() })
    }

    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `len` initialised values, owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as above, borrowed mutably through self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T: bytemuck::Pod> Drop for PinnedBuffer<T> {
    fn drop(&mut self) {
        // A copy from or to it may still be queued.
        if self.ctx.bind_to_thread().is_ok() {
            let _ = self.stream.synchronize();
            unsafe {
                let _ = cu::free_host(self.ptr as *mut std::ffi::c_void);
            }
        }
    }
}

/// `x` -> fp16 channels-last in the pinned buffer -> the device input (queued).
/// The previous pass has finished with `host_in` (every call ends waiting for its download).
pub fn stage(input: &CudaTensor, host_in: &mut PinnedBuffer<f16>, x: &HostTensor) -> Result<()> {
    let (_, c, dims) = x.ncdims()?;
    ncdhw_to_ndhwc_f16_into(&x.data, c, numel(dims), host_in.as_mut_slice());
    input.buf.upload(host_in.as_slice())
}

/// Logits buffer -> pinned buffer (waiting for the pass) -> a host tensor.
pub fn fetch_logits(
    logits: &DeviceBuffer,
    host_out: &mut PinnedBuffer<f32>,
    n: usize,
    dims: Dims,
) -> Result<HostTensor> {
    logits.download(host_out.as_mut_slice())?;
    HostTensor::new(vec![n, 2, dims[0], dims[1], dims[2]], host_out.as_slice().to_vec())
}
