//! One training step's forward and backward pass: the network on the gradient tape, the
//! reference's losses, and the gradients of every parameter (and of the input).

use std::collections::BTreeMap;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::unet25d::Unet25d;
use crate::tensor::HostTensor;
use crate::train::loss;
use crate::train::tape::TapeBackend;
use crate::weights::StateDict;

/// The loss terms of one step (each already averaged over the batch).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossTerms {
    /// Dice + cross-entropy on the logits.
    pub dice_ce: f64,
    /// `0.2 * Dice` summed over the three spatial attention maps.
    pub attention: f64,
}

impl LossTerms {
    pub fn total(&self) -> f64 {
        self.dice_ce + self.attention
    }
}

/// What a step produces.
pub struct StepResult {
    pub loss: LossTerms,
    /// Parameter gradients by checkpoint key (shared modules once, under `attention_k`).
    pub grads: BTreeMap<String, Vec<f32>>,
    /// The input's gradient, PyTorch layout (with [`InputGrad::Wanted`]).
    pub input_grad: Option<HostTensor>,
    /// Wall time: `forward`, `loss`, then `backward <op>` per op kind.
    pub seconds: Vec<(String, f64)>,
}

/// Whether a step also computes the gradient with respect to its input image (the gradient
/// checks compare it; training needs only the parameters').
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputGrad {
    Wanted,
    Skipped,
}

/// Forward, losses and backward for a batch `image` `(N, 1, H, W, D)` with its 0/1 `label`
/// (`N * H * W * D` values, the same layout). The tape is empty afterwards.
pub fn forward_backward(
    tape: &TapeBackend,
    weights: &StateDict,
    image: &HostTensor,
    label: &[u8],
    input_grad: InputGrad,
) -> Result<StepResult> {
    let (n, c, dims) = image.ncdims()?;
    if label.len() != image.numel() || c != 1 {
        return Err(Error::Shape(format!(
            "training batch: image {:?} with {} label values (need one channel and one label per voxel)",
            image.shape,
            label.len()
        )));
    }
    if let Some(i) = image.first_non_finite() {
        return Err(Error::Shape(format!("training batch: non-finite image value at flat index {i}")));
    }
    tape.clear();
    let t0 = std::time::Instant::now();
    let net = Unet25d::new(tape, weights)?;
    let x = match input_grad {
        InputGrad::Wanted => tape.upload(image)?,
        InputGrad::Skipped => tape.constant(image)?,
    };
    let out = net.forward(tape, &x)?;
    let cpu = tape.cpu();
    let mut seconds = vec![("forward".to_string(), t0.elapsed().as_secs_f64())];
    let t0 = std::time::Instant::now();
    let (dice, ce, g_logits) = loss::dice_ce(&out.logits.value().data, label, n)?;
    let mut seeds = vec![(&out.logits, cpu.from_channels_last(n, 2, dims, g_logits)?)];
    let mut attention = 0.0;
    for w in [&out.w0, &out.w1, &out.w2] {
        let od = w.value().dims;
        let target = loss::attention_target(label, n, dims, od);
        let (l, g) = loss::attention_dice(&w.value().data, &target, n)?;
        attention += l;
        seeds.push((w, cpu.from_channels_last(n, 1, od, g)?));
    }
    seconds.push(("loss".to_string(), t0.elapsed().as_secs_f64()));
    let g = tape.backward(seeds)?;
    seconds.extend(g.seconds.iter().map(|(op, s)| (format!("backward {op}"), *s)));
    let input_grad = g.of(&x).map(|t| cpu.download(t)).transpose()?;
    Ok(StepResult { loss: LossTerms { dice_ce: dice + ce, attention }, grads: g.params, input_grad, seconds })
}
