//! The 2.5D-AttentionUNet graph (reference `Unet_seg.Unet`), over any backend.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::blocks::{ChannelAttention, ContextBlock, Encoder, Loader, Up};
use crate::model::catalog::{Unet25dSpec, MIN_INPUT};
use crate::weights::StateDict;

/// The network's outputs: 2-channel logits and the three spatial attention maps
/// (`w0` at full resolution, `w1` at 1/2, `w2` at 1/4 in-plane).
pub struct Output<T> {
    pub logits: T,
    pub w0: T,
    pub w1: T,
    pub w2: T,
}

/// Stage names reported to a probe, in order (the fixtures' `probe.<stage>`).
pub const PROBE_STAGES: [&str; 12] = [
    "conv_0",
    "down_1",
    "down_2",
    "down_3",
    "down_4",
    "context_block_1",
    "attention_4",
    "up_4",
    "up_3",
    "up_2",
    "up_1",
    "final_conv",
];

/// The network with its weights resident on a backend.
pub struct Unet25d<B: Backend> {
    conv_0: Encoder<B>,
    down: [Encoder<B>; 4],
    context: ContextBlock<B>,
    attention_4: ChannelAttention<B>,
    up_4: Up<B>,
    up_3: Up<B>,
    up_2: Up<B>,
    up_1: Up<B>,
    final_conv: B::Conv,
}

impl<B: Backend> Unet25d<B> {
    /// Prepares every layer on `backend`. The state dict must hold every key of the reference
    /// (check it first with `weights::load_canonical` for messages that name the file).
    pub fn new(backend: &B, sd: &StateDict) -> Result<Self> {
        let spec = Unet25dSpec::published();
        let l = Loader { backend, sd };
        let [d1, d2, d3, d4] = &spec.down;
        let [u4, u3, u2, u1] = &spec.up;
        Ok(Unet25d {
            conv_0: Encoder::load(&l, &spec.conv_0)?,
            down: [Encoder::load(&l, d1)?, Encoder::load(&l, d2)?, Encoder::load(&l, d3)?, Encoder::load(&l, d4)?],
            context: ContextBlock::load(&l, &spec.context)?,
            attention_4: ChannelAttention::load(&l, &spec.attention_4)?,
            up_4: Up::load(&l, u4)?,
            up_3: Up::load(&l, u3)?,
            up_2: Up::load(&l, u2)?,
            up_1: Up::load(&l, u1)?,
            final_conv: l.conv(&spec.final_conv)?,
        })
    }

    pub fn forward(&self, be: &B, x: &B::Tensor) -> Result<Output<B::Tensor>> {
        self.forward_probed(be, x, &mut |_, _| Ok(()))
    }

    /// Forward pass that hands each stage output (see [`PROBE_STAGES`]) to `probe`.
    pub fn forward_probed(
        &self,
        be: &B,
        x: &B::Tensor,
        probe: &mut dyn FnMut(&str, &B::Tensor) -> Result<()>,
    ) -> Result<Output<B::Tensor>> {
        let (_, c, dims) = be.shape(x);
        check_input(c, dims)?;
        // Each tensor is dropped as soon as nothing reads it any more: the planned GPU arena
        // (backend::arena) is as large as the most memory alive at one time.
        let x0 = self.conv_0.forward(be, x)?;
        probe("conv_0", &x0)?;
        let x1 = self.down[0].forward(be, &be.max_pool(&x0, [2, 2, 1])?)?;
        probe("down_1", &x1)?;
        let x2 = self.down[1].forward(be, &be.max_pool(&x1, [2, 2, 1])?)?;
        probe("down_2", &x2)?;
        let x3 = self.down[2].forward(be, &be.max_pool(&x2, [2, 2, 1])?)?;
        probe("down_3", &x3)?;
        let x4 = self.down[3].forward(be, &be.max_pool(&x3, [2, 2, 2])?)?;
        probe("down_4", &x4)?;
        let c4 = self.context.forward(be, &x4)?;
        drop(x4);
        probe("context_block_1", &c4)?;
        let a4 = self.attention_4.forward(be, c4)?;
        probe("attention_4", &a4)?;
        let (u4, _) = self.up_4.forward(be, a4, x3)?;
        probe("up_4", &u4)?;
        let (u3, w2) = self.up_3.forward(be, u4, x2)?;
        probe("up_3", &u3)?;
        let (u2, w1) = self.up_2.forward(be, u3, x1)?;
        probe("up_2", &u2)?;
        let (u1, w0) = self.up_1.forward(be, u2, x0)?;
        probe("up_1", &u1)?;
        let logits = be.conv(&u1, &self.final_conv)?;
        probe("final_conv", &logits)?;
        let missing = || Error::Other("internal: spatial attention returned no map".into());
        Ok(Output { logits, w0: w0.ok_or_else(missing)?, w1: w1.ok_or_else(missing)?, w2: w2.ok_or_else(missing)? })
    }
}

/// The reference accepts one input channel and H, W >= 192, D >= 16.
pub fn check_input(channels: usize, dims: crate::tensor::Dims) -> Result<()> {
    if channels != 1 {
        return Err(Error::Shape(format!("the network takes 1 input channel, got {channels}")));
    }
    if (0..3).any(|i| dims[i] < MIN_INPUT[i]) {
        return Err(Error::Shape(format!(
            "input of spatial size {}x{}x{} is smaller than the network's minimum {}x{}x{} (H x W x D)",
            dims[0], dims[1], dims[2], MIN_INPUT[0], MIN_INPUT[1], MIN_INPUT[2]
        )));
    }
    Ok(())
}
