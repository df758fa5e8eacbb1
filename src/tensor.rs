//! Host tensors: plain row-major float32 arrays in PyTorch's layout, used at every
//! boundary (weights, `.npy` files, the engine's inputs and outputs).
//! Backends keep their own internal layouts (channels-last on the CPU, NDHWC FP16 on CUDA).

use crate::error::{Error, Result};

/// Spatial extent `(H, W, D)` in MONAI order: the last axis is the slice axis.
pub type Dims = [usize; 3];

pub fn numel(d: Dims) -> usize {
    d[0] * d[1] * d[2]
}

/// A dense row-major float32 tensor (PyTorch layout, e.g. `(N, C, H, W, D)`).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::Shape(format!("shape {:?} holds {} values but {} were given", shape, n, data.len())));
        }
        Ok(HostTensor { shape, data })
    }

    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        HostTensor { shape, data: vec![0.0; n] }
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// `(N, C, H, W, D)` of a 5-D tensor.
    pub fn ncdims(&self) -> Result<(usize, usize, Dims)> {
        match self.shape.as_slice() {
            &[n, c, h, w, d] => Ok((n, c, [h, w, d])),
            s => Err(Error::Shape(format!("expected a 5-D (N,C,H,W,D) tensor, got {s:?}"))),
        }
    }

    /// First index of a non-finite value, if any.
    pub fn first_non_finite(&self) -> Option<usize> {
        self.data.iter().position(|v| !v.is_finite())
    }
}

/// Relative L2 error `||a - b|| / ||b||`, accumulated in f64.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "rel_l2 on different lengths");
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let d = x as f64 - y as f64;
        num += d * d;
        den += (y as f64) * (y as f64);
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "max_abs_diff on different lengths");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
