//! Activations on the GPU: FP16, channels-last `(N, H, W, D, C)`, possibly with an
//! InstanceNorm (+ReLU) still to apply.

use std::sync::Arc;

use half::f16;
use rayon::prelude::*;

use super::memory::DeviceBuffer;
use super::params::Src;
use crate::error::{Error, Result};
use crate::tensor::{numel, Dims};

/// An InstanceNorm whose statistics are known but which has not been applied: the raw conv
/// output stays in memory and every consumer normalises on load.
#[derive(Clone)]
pub(crate) struct PendingNorm {
    /// `(N, C)` of f32 `(mean, rstd)`.
    pub stats: Arc<DeviceBuffer>,
    pub relu: bool,
}

/// A batch `(N, C, H, W, D)` stored as fp16 `(N, H, W, D, C)` on the device.
#[derive(Clone)]
pub struct CudaTensor {
    pub(crate) buf: Arc<DeviceBuffer>,
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) dims: Dims,
    pub(crate) norm: Option<PendingNorm>,
}

impl CudaTensor {
    pub fn shape(&self) -> (usize, usize, Dims) {
        (self.n, self.c, self.dims)
    }
    pub fn vox(&self) -> usize {
        numel(self.dims)
    }
    pub fn numel(&self) -> usize {
        self.n * self.c * self.vox()
    }
    /// Whether an InstanceNorm is pending (applied by the next kernel that reads this tensor).
    pub fn is_lazy(&self) -> bool {
        self.norm.is_some()
    }

    /// The kernels' view of this tensor.
    pub(crate) fn src(&self) -> Src {
        Src {
            data: self.buf.ptr(),
            stats: self.norm.as_ref().map_or(0, |n| n.stats.ptr()),
            relu: self.norm.as_ref().is_some_and(|n| n.relu) as i32,
            c: self.c as i32,
        }
    }
}

/// Checks that a shape fits the kernels' 32-bit spatial and channel indexing.
pub(crate) fn check_shape(what: &str, n: usize, c: usize, dims: Dims) -> Result<()> {
    let vox = numel(dims);
    if n == 0 || c == 0 || vox == 0 {
        return Err(Error::Shape(format!(
            "{what}: empty tensor of shape ({n}, {c}, {}, {}, {})",
            dims[0], dims[1], dims[2]
        )));
    }
    if vox > i32::MAX as usize || c > i32::MAX as usize || n > 65535 {
        return Err(Error::Shape(format!(
            "{what}: shape ({n}, {c}, {}, {}, {}) is too large for the CUDA kernels",
            dims[0], dims[1], dims[2]
        )));
    }
    Ok(())
}

/// PyTorch layout f32 `(N, C, vox)` -> fp16 `(N, vox, C)`.
pub(crate) fn ncdhw_to_ndhwc_f16(data: &[f32], n: usize, c: usize, vox: usize) -> Vec<f16> {
    let mut out = vec![f16::ZERO; n * c * vox];
    ncdhw_to_ndhwc_f16_into(data, c, vox, &mut out);
    out
}

/// [`ncdhw_to_ndhwc_f16`] into `out` (`data.len()` values; a pinned staging buffer).
pub(crate) fn ncdhw_to_ndhwc_f16_into(data: &[f32], c: usize, vox: usize, out: &mut [f16]) {
    out.par_chunks_mut(c * 4096).enumerate().for_each(|(chunk, o)| {
        let first = chunk * 4096; // voxel index over (N, vox)
        for (j, px) in o.chunks_mut(c).enumerate() {
            let nv = first + j;
            let (s, v) = (nv / vox, nv % vox);
            for (ch, dst) in px.iter_mut().enumerate() {
                *dst = f16::from_f32(data[(s * c + ch) * vox + v]);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_conversion_moves_channels_innermost() {
        let (n, c, vox) = (2, 3, 5000);
        let data: Vec<f32> = (0..n * c * vox).map(|i| (i % 1000) as f32).collect();
        let out = ncdhw_to_ndhwc_f16(&data, n, c, vox);
        for s in 0..n {
            for v in [0, 1, 4095, 4096, 4999] {
                for ch in 0..c {
                    assert_eq!(out[(s * vox + v) * c + ch].to_f32(), data[(s * c + ch) * vox + v]);
                }
            }
        }
    }
}
