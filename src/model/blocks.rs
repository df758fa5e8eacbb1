//! The reference's building blocks over any [`Backend`], each built from its spec in
//! [`crate::model::catalog`] (which names and shapes every layer): encoders, decoder, the two
//! attention modules, the context block and the decoder's upsampling stage.

use crate::backend::{Backend, DropoutSite};
use crate::error::{Error, Result};
use crate::model::catalog::{
    AttentionSpec, ChannelAttentionSpec, ContextSpec, DecoderSpec, EncoderSpec, Layer, LayerKind, SpatialAttentionSpec,
    UpSpec,
};
use crate::tensor::Dims;
use crate::weights::StateDict;

/// Prepares layers on a backend from a state dict, checking each tensor's shape against the
/// layer's spec.
pub struct Loader<'a, B: Backend> {
    pub backend: &'a B,
    pub sd: &'a StateDict,
}

impl<'a, B: Backend> Loader<'a, B> {
    fn tensor(&self, key: &str) -> Result<&'a crate::tensor::HostTensor> {
        self.sd.get(key).ok_or_else(|| Error::Shape(format!("missing tensor {key}")))
    }

    pub fn conv(&self, layer: &Layer) -> Result<B::Conv> {
        let prefix = &layer.prefix;
        let LayerKind::Conv(spec) = layer.kind else {
            return Err(Error::Other(format!("internal: {prefix} is not a convolution")));
        };
        let w = self.tensor(&format!("{prefix}.weight"))?;
        let b = if spec.bias { Some(self.tensor(&format!("{prefix}.bias"))?) } else { None };
        check_shape(prefix, "weight", &w.shape, &spec.weight_shape())?;
        self.backend.prepare_conv(prefix, spec, w, b)
    }

    pub fn conv_t(&self, layer: &Layer) -> Result<B::ConvT> {
        let prefix = &layer.prefix;
        let LayerKind::ConvT(spec) = layer.kind else {
            return Err(Error::Other(format!("internal: {prefix} is not a transposed convolution")));
        };
        let w = self.tensor(&format!("{prefix}.weight"))?;
        let b = self.tensor(&format!("{prefix}.bias"))?;
        check_shape(prefix, "weight", &w.shape, &spec.weight_shape())?;
        self.backend.prepare_conv_t(prefix, spec, w, b)
    }

    fn convs<const N: usize>(&self, layers: &[Layer; N]) -> Result<[B::Conv; N]> {
        let v = layers.iter().map(|l| self.conv(l)).collect::<Result<Vec<_>>>()?;
        v.try_into().map_err(|_| Error::Other("internal: layer count".into()))
    }
}

fn check_shape(prefix: &str, what: &str, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        return Err(Error::Shape(format!("{prefix}.{what} has shape {got:?}, the network needs {want:?}")));
    }
    Ok(())
}

/// `EncoderA`/`EncoderB`: two residual pairs of conv-IN(-ReLU), the first with a 1x1 shortcut.
pub struct Encoder<B: Backend> {
    c1a: B::Conv,
    c1b: B::Conv,
    c2a: B::Conv,
    c2b: B::Conv,
    shortcut: B::Conv,
}

impl<B: Backend> Encoder<B> {
    pub fn load(l: &Loader<B>, spec: &EncoderSpec) -> Result<Self> {
        let [c1a, c1b, c2a, c2b, shortcut] = l.convs(&spec.layers())?;
        Ok(Encoder { c1a, c1b, c2a, c2b, shortcut })
    }

    pub fn forward(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let a = be.dropout(be.conv_norm(x, &self.c1a, None, true)?, DropoutSite::Network)?;
        let s = be.conv(x, &self.shortcut)?;
        let x1 = be.conv_norm(&a, &self.c1b, Some(&s), true)?;
        drop((a, s));
        let b = be.dropout(be.conv_norm(&x1, &self.c2a, None, true)?, DropoutSite::Network)?;
        be.conv_norm(&b, &self.c2b, Some(&x1), true)
    }
}

/// `Decoder(c, c)`: (3,3,1) conv-IN-ReLU, (1,1,3) conv-IN, plus a 1x1 shortcut, ReLU.
pub struct Decoder<B: Backend> {
    c1: B::Conv,
    c2: B::Conv,
    shortcut: B::Conv,
}

impl<B: Backend> Decoder<B> {
    pub fn load(l: &Loader<B>, spec: &DecoderSpec) -> Result<Self> {
        let [c1, c2, shortcut] = l.convs(&spec.layers())?;
        Ok(Decoder { c1, c2, shortcut })
    }

    /// Takes `x` by value to free it once both of its readers have run.
    pub fn forward(&self, be: &B, x: B::Tensor) -> Result<B::Tensor> {
        let a = be.dropout(be.conv_norm(&x, &self.c1, None, true)?, DropoutSite::Network)?;
        let s = be.conv(&x, &self.shortcut)?;
        drop(x);
        be.conv_norm(&a, &self.c2, Some(&s), true)
    }
}

/// Two factorised branches ((3,1,1) then (1,3,1), and the reverse) whose sum through a sigmoid
/// weights every voxel: `out = x * w + x`. Returns the map `w` too.
pub struct SpatialAttention<B: Backend> {
    b1a: B::Conv,
    b1b: B::Conv,
    b2a: B::Conv,
    b2b: B::Conv,
}

impl<B: Backend> SpatialAttention<B> {
    pub fn load(l: &Loader<B>, spec: &SpatialAttentionSpec) -> Result<Self> {
        let [b1a, b1b, b2a, b2b] = l.convs(&spec.layers())?;
        Ok(SpatialAttention { b1a, b1b, b2a, b2b })
    }

    pub fn forward(&self, be: &B, x: B::Tensor) -> Result<(B::Tensor, B::Tensor)> {
        let t = be.conv_norm(&x, &self.b1a, None, true)?;
        let b1 = be.conv_norm(&t, &self.b1b, None, false)?;
        let t = be.conv_norm(&x, &self.b2a, None, true)?;
        let b2 = be.conv_norm(&t, &self.b2b, None, false)?;
        drop(t);
        let w = be.sigmoid_sum(&b1, &b2)?;
        let out = be.attend(x, &w)?;
        Ok((out, w))
    }
}

/// Squeeze-style channel attention without a sigmoid: pool to half size, two 3x3x3 conv-IN,
/// upsample back (trilinear, align_corners) and `out = x * w + x`.
pub struct ChannelAttention<B: Backend> {
    c0: B::Conv,
    c1: B::Conv,
}

impl<B: Backend> ChannelAttention<B> {
    pub fn load(l: &Loader<B>, spec: &ChannelAttentionSpec) -> Result<Self> {
        let [c0, c1] = l.convs(&spec.layers())?;
        Ok(ChannelAttention { c0, c1 })
    }

    pub fn forward(&self, be: &B, x: B::Tensor) -> Result<B::Tensor> {
        let (_, _, d) = be.shape(&x);
        let p = be.adaptive_avg_pool(&x, [d[0] / 2, d[1] / 2, d[2] / 2])?;
        let f = be.dropout(be.conv_norm(&p, &self.c0, None, true)?, DropoutSite::Fixed)?;
        let f = be.conv_norm(&f, &self.c1, None, false)?;
        let w = be.resize_trilinear(&f, d)?;
        be.attend(x, &w)
    }
}

/// The bottleneck's context block: multi-scale max pools (2, 4) and anisotropic whole-axis pools
/// (12,1,1), (1,12,1), (1,1,8), each convolved and upsampled back, merged residually.
pub struct ContextBlock<B: Backend> {
    trans: B::Conv,
    c1_1: B::Conv,
    c1_2: B::Conv,
    /// `conv2_0` .. `conv2_7`.
    c2: [B::Conv; 8],
    c3: B::Conv,
    score0: B::Conv,
    score1: B::Conv,
}

/// Anisotropic pool kernels of the context block (the reference's `kernel_size=(12, 12, 8)`).
pub const CONTEXT_POOLS: [Dims; 3] = [[12, 1, 1], [1, 12, 1], [1, 1, 8]];

impl<B: Backend> ContextBlock<B> {
    pub fn load(l: &Loader<B>, spec: &ContextSpec) -> Result<Self> {
        let c = spec.layers();
        Ok(ContextBlock {
            trans: l.conv(&c.trans)?,
            c1_1: l.conv(&c.c1_1)?,
            c1_2: l.conv(&c.c1_2)?,
            c2: l.convs(&c.c2)?,
            c3: l.conv(&c.c3)?,
            score0: l.conv(&c.score0)?,
            score1: l.conv(&c.score1)?,
        })
    }

    pub fn forward(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let (_, _, size) = be.shape(x);
        // The reference's hard-coded Dropout3d follows every conv-IN-ReLU of the block.
        let dropout = |t| be.dropout(t, DropoutSite::Fixed);
        let x0 = dropout(be.conv_norm(x, &self.trans, None, true)?)?;
        let x1 = dropout(be.conv_norm(&x0, &self.c1_1, None, true)?)?;
        // Branch 1: full resolution and max pools by 2 and 4.
        let a0 = be.conv_norm(&x1, &self.c2[0], None, false)?;
        let a1 = {
            let p = be.max_pool(&x1, [2, 2, 2])?;
            let c = be.conv_norm(&p, &self.c2[1], None, false)?;
            be.resize_trilinear(&c, size)?
        };
        let a2 = {
            let p = be.max_pool(&x1, [4, 4, 4])?;
            let c = be.conv_norm(&p, &self.c2[2], None, false)?;
            be.resize_trilinear(&c, size)?
        };
        drop(x1);
        let s = be.sum(&[&a0, &a1, &a2], true)?;
        drop((a0, a1, a2));
        let o1 = dropout(be.conv_norm(&s, &self.c2[6], None, true)?)?;
        // Branch 2: whole-axis anisotropic pools.
        let x2 = dropout(be.conv_norm(&x0, &self.c1_2, None, true)?)?;
        let mut bs = Vec::with_capacity(3);
        for (k, conv) in CONTEXT_POOLS.iter().zip(&self.c2[3..6]) {
            let p = be.max_pool(&x2, *k)?;
            let c = be.conv_norm(&p, conv, None, false)?;
            bs.push(be.resize_trilinear(&c, size)?);
        }
        drop(x2);
        let s = be.sum(&[&bs[0], &bs[1], &bs[2]], true)?;
        drop(bs);
        let o2 = dropout(be.conv_norm(&s, &self.c2[7], None, true)?)?;
        let cat = be.concat(&o1, &o2)?;
        drop((o1, o2));
        let o = be.conv_norm(&cat, &self.c3, Some(&x0), true)?;
        drop((cat, x0));
        let s = dropout(be.conv_norm(&o, &self.score0, None, true)?)?;
        be.conv(&s, &self.score1)
    }
}

/// The attention applied inside a decoder stage.
pub enum StageAttention<B: Backend> {
    Channel(ChannelAttention<B>),
    Spatial(SpatialAttention<B>),
}

/// `Up`: transposed conv, replicate pad to the skip, sum with the skip, attention, decoder.
pub struct Up<B: Backend> {
    up: B::ConvT,
    attention: StageAttention<B>,
    convs: Decoder<B>,
}

impl<B: Backend> Up<B> {
    /// The stage with its attention, loaded under the shared module's own name.
    pub fn load(l: &Loader<B>, spec: &UpSpec) -> Result<Self> {
        let attention = match &spec.attention {
            AttentionSpec::Channel(a) => StageAttention::Channel(ChannelAttention::load(l, a)?),
            AttentionSpec::Spatial(a) => StageAttention::Spatial(SpatialAttention::load(l, a)?),
        };
        Ok(Up { up: l.conv_t(&spec.up())?, attention, convs: Decoder::load(l, &spec.decoder)? })
    }

    /// Returns the stage output and, for spatial attention, its map. Takes the input and the
    /// skip by value: both are dead after the upsampling, and at full resolution they are the
    /// largest tensors of the pass.
    pub fn forward(&self, be: &B, x: B::Tensor, skip: B::Tensor) -> Result<(B::Tensor, Option<B::Tensor>)> {
        let s = be.up_add(&x, &self.up, &skip)?;
        drop((x, skip));
        let (s, w) = match &self.attention {
            StageAttention::Channel(a) => (a.forward(be, s)?, None),
            StageAttention::Spatial(a) => {
                let (s, w) = a.forward(be, s)?;
                (s, Some(w))
            }
        };
        Ok((self.convs.forward(be, s)?, w))
    }
}
