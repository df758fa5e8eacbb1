//! What one forward pass of the network costs, found by running the real graph on the
//! shape-only backend (`backend::shape`), so no count is written down twice: the activation
//! arena the CUDA engine plans ([`forward_plan`], [`planned_arena_bytes`]), and the arithmetic
//! and least memory traffic of every op ([`forward_cost`], [`forward_flops`]).

use crate::backend::arena::{self, Plan, Trace};
use crate::backend::profile::Profiled;
use crate::backend::shape::ShapeBackend;
use crate::error::{Error, Result};
use crate::model::catalog;
use crate::model::Unet25d;
use crate::tensor::{Dims, HostTensor};
use crate::weights::StateDict;

/// Zeros for every parameter (the shape-only backend reads shapes, never values).
fn zero_weights() -> StateDict {
    let mut sd = StateDict::new();
    for (key, shape) in catalog::tensor_keys() {
        sd.insert(key, HostTensor::zeros(shape));
    }
    sd
}

/// The allocations and frees of one network forward pass over a batch of `batch` inputs of
/// size `dims` on the CUDA engine: from the first buffer after the (separately held) input to
/// the last free once the outputs are dropped. Everything allocated is freed.
pub fn forward_trace(dims: Dims, batch: usize) -> Result<Trace> {
    if batch == 0 {
        return Err(Error::Shape("empty batch".into()));
    }
    let be = ShapeBackend::new();
    let model = Unet25d::new(&be, &zero_weights())?;
    let x = be.untracked(batch, 1, dims);
    let out = model.forward(&be, &x)?;
    drop(out);
    let trace = be.trace();
    if trace.live_at_end() != 0 {
        return Err(Error::Other(format!(
            "internal: {} buffers of the shape-only forward pass were never freed",
            trace.live_at_end()
        )));
    }
    Ok(trace)
}

/// The arena plan of one forward pass (see [`forward_trace`]).
pub fn forward_plan(dims: Dims, batch: usize) -> Result<Plan> {
    arena::plan(&forward_trace(dims, batch)?)
}

/// Bytes of the activation arena the CUDA engine plans for a batch of `batch` inputs of size
/// `dims` (the input and the f32 logits buffers, and the weights, come on top).
pub fn planned_arena_bytes(dims: Dims, batch: usize) -> Result<usize> {
    Ok(forward_plan(dims, batch)?.size)
}

/// Arithmetic and traffic of one forward pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    /// Floating-point operations (2 per multiply-add) of the convolutions and transposed
    /// convolutions (everything else is memory-bound).
    pub flops: f64,
    /// The least memory traffic: each op's inputs and weights read once, its output written
    /// once, at `elem_bytes` per activation element.
    pub bytes: f64,
}

/// [`Cost`] of one forward pass over a batch of `batch` inputs of size `dims`.
pub fn forward_cost(dims: Dims, batch: usize, elem_bytes: usize) -> Result<Cost> {
    if batch == 0 {
        return Err(Error::Shape("empty batch".into()));
    }
    let be = Profiled::new(ShapeBackend::new()).with_element_bytes(elem_bytes);
    let model = Unet25d::new(&be, &zero_weights())?;
    let x = be.inner.untracked(batch, 1, dims);
    drop(model.forward(&be, &x)?);
    let table = be.table();
    Ok(Cost { flops: table.iter().map(|(_, s)| s.flops).sum(), bytes: table.iter().map(|(_, s)| s.bytes).sum() })
}

/// Floating-point operations of one forward pass over one input of `dims`.
pub fn forward_flops(dims: Dims) -> Result<f64> {
    Ok(forward_cost(dims, 1, 4)?.flops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::catalog::PATCH;
    use crate::tensor::numel;

    const MIB: f64 = 1024.0 * 1024.0;

    #[test]
    fn network_arena_has_no_overlaps_and_is_near_the_lower_bound() {
        for batch in [1usize, 8, 16] {
            let trace = forward_trace(PATCH, batch).unwrap();
            let plan = arena::plan(&trace).unwrap();
            // `plan` verifies; check again independently of it, brute force.
            for (i, a) in plan.blocks.iter().enumerate() {
                for b in &plan.blocks[i + 1..] {
                    if a.start < b.end && b.start < a.end {
                        assert!(
                            a.offset + a.footprint() <= b.offset || b.offset + b.footprint() <= a.offset,
                            "batch {batch}: blocks {} and {} overlap",
                            a.id,
                            b.id
                        );
                    }
                }
            }
            let total: usize = plan.blocks.iter().map(|b| b.footprint()).sum();
            eprintln!(
                "192x192x16 batch {batch:>2}: {} allocations, arena {:.1} MiB, max-live {:.1} MiB ({:.3}x), \
                 {:.1} MiB allocated in all",
                plan.blocks.len(),
                plan.size as f64 / MIB,
                plan.max_live as f64 / MIB,
                plan.overhead(),
                total as f64 / MIB
            );
            assert!(plan.overhead() <= 1.10, "batch {batch}: arena {:.3}x the lower bound", plan.overhead());
            assert!(plan.size * 2 < total, "batch {batch}: the arena reuses memory");
        }
    }

    #[test]
    fn arena_scales_with_the_batch_and_meets_the_memory_target() {
        let one = planned_arena_bytes(PATCH, 1).unwrap();
        let eight = planned_arena_bytes(PATCH, 8).unwrap();
        // Every buffer scales with the batch; only alignment rounding does not.
        let ratio = eight as f64 / one as f64;
        assert!((7.9..=8.05).contains(&ratio), "arena batch 8 / batch 1 = {ratio:.3}");
        // The target: GPU memory at batch 8 under 2 GB. On top of the arena: the
        // weights (at most 4 bytes per parameter: fp16 for the tensor-core convs, f32 for the
        // rest and the biases), the fp16 input and the f32 logits buffers.
        let weights = crate::model::catalog::parameter_count() * 4;
        let io = 8 * numel(PATCH) * (2 + 2 * 4);
        let total = eight + weights + io;
        eprintln!(
            "batch 8: arena {:.1} MiB + weights <= {:.1} MiB + input/logits {:.1} MiB = {:.1} MiB",
            eight as f64 / MIB,
            weights as f64 / MIB,
            io as f64 / MIB,
            total as f64 / MIB
        );
        assert!(total < 2_000_000_000, "predicted GPU memory at batch 8: {total} bytes");
        // 4 full-resolution 32-channel tensors per sample at the peak (the last decoder: the
        // lazy first conv, the shortcut, the raw second conv and the residual sum) plus the maps.
        let per_sample_peak = 4 * 32 * numel(PATCH) * 2;
        assert!(one >= per_sample_peak && one < per_sample_peak + per_sample_peak / 8, "batch 1 arena {one}");
    }

    #[test]
    fn an_empty_batch_and_a_small_input_are_rejected() {
        assert!(forward_trace(PATCH, 0).is_err());
        assert!(forward_trace([100, 100, 8], 1).is_err(), "below the network's minimum input");
        assert!(forward_cost(PATCH, 0, 4).is_err());
    }

    #[test]
    fn dropout_where_the_reference_has_it() {
        // The reference's `_ConvINReLU3D` blocks: two per encoder (5) and one per decoder (4)
        // at the network's rate; six in the context block and one per channel attention
        // (attention_4, and attention_3 inside up_4) at the fixed 0.2. None in the spatial
        // attention, none where a residual joins.
        let be = ShapeBackend::new();
        let model = Unet25d::new(&be, &zero_weights()).unwrap();
        drop(model.forward(&be, &be.untracked(1, 1, PATCH)).unwrap());
        assert_eq!(be.dropout_calls(), [14, 8]);
    }

    #[test]
    fn flops_of_a_patch_as_counted_by_hand() {
        // 135.0 GFLOP per 192x192x16 patch, the figure the CPU-speed issue's floor was worked
        // out from (and what the catalog's name-matching count gave before this graph-run one
        // replaced it), linear in the batch.
        let one = forward_flops(PATCH).unwrap();
        assert!((one / 1e9 - 134.99).abs() < 0.01, "{:.3} GFLOP", one / 1e9);
        let two = forward_cost(PATCH, 2, 4).unwrap();
        assert_eq!(two.flops, 2.0 * one);
        let half = forward_cost(PATCH, 1, 2).unwrap();
        assert!(two.bytes > 0.0 && (forward_cost(PATCH, 1, 4).unwrap().bytes / half.bytes - 2.0).abs() < 0.2);
    }
}
