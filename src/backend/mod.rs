//! The operation set of the network, as one trait with one implementation per device.
//!
//! The model graph (`crate::model`) is written once against [`Backend`]; the CPU backend is
//! the fallback that runs anywhere and the numerical oracle for every other backend.
//! The ops sit at the granularity where fusion pays (conv, then a fused
//! normalise + residual + ReLU), so a backend can keep an instance norm pending and apply it
//! when the next kernel loads its input.

pub mod arena;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod profile;
pub mod shape;

use crate::error::Result;
use crate::tensor::{Dims, HostTensor};

/// A convolution's static description. Padding is always "same" (`k / 2` per axis), stride 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    pub cin: usize,
    pub cout: usize,
    pub k: Dims,
    pub bias: bool,
}

impl ConvSpec {
    pub fn taps(&self) -> usize {
        self.k[0] * self.k[1] * self.k[2]
    }
    pub fn pad(&self) -> Dims {
        [self.k[0] / 2, self.k[1] / 2, self.k[2] / 2]
    }
    /// PyTorch weight shape `(cout, cin, kH, kW, kD)`.
    pub fn weight_shape(&self) -> Vec<usize> {
        vec![self.cout, self.cin, self.k[0], self.k[1], self.k[2]]
    }
}

/// A transposed convolution with kernel = stride (2x2x2 or 2x2x1): each input voxel
/// writes one disjoint `k` block of the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTSpec {
    pub cin: usize,
    pub cout: usize,
    pub k: Dims,
}

impl ConvTSpec {
    /// PyTorch weight shape `(cin, cout, kH, kW, kD)`.
    pub fn weight_shape(&self) -> Vec<usize> {
        vec![self.cin, self.cout, self.k[0], self.k[1], self.k[2]]
    }
}

/// Which rate a `Dropout3d` of the reference uses: the network's `dropout` (encoders,
/// decoders) or the 0.2 it hard-codes (context block, channel attention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropoutSite {
    Network,
    Fixed,
}

/// What the network needs from a device. Tensors are batches `(N, C, H, W, D)` in whatever
/// layout the backend prefers; `upload`/`download` convert from/to PyTorch layout.
/// Ops take inputs by value where the backend may reuse the buffer in place.
pub trait Backend: Send + Sync {
    type Tensor: Send + Sync;
    /// Convolution weights prepared for this device (packed, converted, uploaded).
    type Conv: Send + Sync;
    type ConvT: Send + Sync;

    fn name(&self) -> String;

    /// A host batch `(N, C, H, W, D)` (PyTorch layout, f32) onto the device. The contract: the
    /// caller passes finite values ([`crate::engine::check_input`] refuses anything else for
    /// every network input, with the count and the first index); backends may rely on it.
    /// The CUDA backend checks again and refuses a non-finite value (its FP16 layout cannot
    /// carry one through a norm); the CPU backend does not check (the float64 oracle tests
    /// upload what they like). Any shape the backend's ops accept is accepted here.
    fn upload(&self, x: &HostTensor) -> Result<Self::Tensor>;
    /// The device tensor back as a host batch in PyTorch layout, f32.
    fn download(&self, x: &Self::Tensor) -> Result<HostTensor>;
    /// `(N, C, dims)`.
    fn shape(&self, x: &Self::Tensor) -> (usize, usize, Dims);

    /// Wait until every op queued so far has finished: what a timer needs before it reads the
    /// clock. A no-op where ops run synchronously (the CPU).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// The layer `name` (its parameters are `{name}.weight` and `{name}.bias` in the
    /// checkpoint; a backend that records gradients reports them by it, the others use it in
    /// messages at most). `weight` is `(cout, cin, kH, kW, kD)`, `bias` `(cout,)`.
    fn prepare_conv(
        &self,
        name: &str,
        spec: ConvSpec,
        weight: &HostTensor,
        bias: Option<&HostTensor>,
    ) -> Result<Self::Conv>;
    /// The transposed convolution `name`: `weight` is `(cin, cout, kH, kW, kD)`, `bias` `(cout,)`.
    fn prepare_conv_t(
        &self,
        name: &str,
        spec: ConvTSpec,
        weight: &HostTensor,
        bias: &HostTensor,
    ) -> Result<Self::ConvT>;

    /// 3-D convolution, "same" zero padding, stride 1, with bias.
    fn conv(&self, x: &Self::Tensor, conv: &Self::Conv) -> Result<Self::Tensor>;

    /// `relu?(instance_norm(x) + residual)`: InstanceNorm3d without affine, eps 1e-5, biased
    /// variance, statistics per sample and channel over all voxels.
    fn instance_norm(&self, x: Self::Tensor, residual: Option<&Self::Tensor>, relu: bool) -> Result<Self::Tensor>;

    /// `relu?(instance_norm(conv(x)) + residual)`. Backends fuse this; the default composes.
    fn conv_norm(
        &self,
        x: &Self::Tensor,
        conv: &Self::Conv,
        residual: Option<&Self::Tensor>,
        relu: bool,
    ) -> Result<Self::Tensor> {
        let y = self.conv(x, conv)?;
        self.instance_norm(y, residual, relu)
    }

    /// Max pooling with stride = kernel, floor division of the size.
    fn max_pool(&self, x: &Self::Tensor, k: Dims) -> Result<Self::Tensor>;

    /// `adaptive_avg_pool3d` to `out` (PyTorch's start = floor(i*in/out), end = ceil((i+1)*in/out)).
    fn adaptive_avg_pool(&self, x: &Self::Tensor, out: Dims) -> Result<Self::Tensor>;

    /// Trilinear interpolation to `out`, `align_corners=True`.
    fn resize_trilinear(&self, x: &Self::Tensor, out: Dims) -> Result<Self::Tensor>;

    /// `skip + replicate_pad_end(conv_transpose(x), skip.dims)`: the decoder's upsampling step.
    fn up_add(&self, x: &Self::Tensor, conv_t: &Self::ConvT, skip: &Self::Tensor) -> Result<Self::Tensor>;

    /// `relu?(sum of xs)`, all the same shape.
    fn sum(&self, xs: &[&Self::Tensor], relu: bool) -> Result<Self::Tensor>;

    /// `sigmoid(a + b)` (the spatial attention map).
    fn sigmoid_sum(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// `x * w + x`; `w` has either one channel (broadcast over x's channels) or x's channels.
    fn attend(&self, x: Self::Tensor, w: &Self::Tensor) -> Result<Self::Tensor>;

    /// Channel concatenation `[a, b]`.
    fn concat(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// Training-mode `Dropout3d` at `site` (whole channels zeroed per sample, the rest scaled
    /// by `1 / (1 - p)`). Identity at inference, which is every backend but the training tape.
    fn dropout(&self, x: Self::Tensor, _site: DropoutSite) -> Result<Self::Tensor> {
        Ok(x)
    }
}
