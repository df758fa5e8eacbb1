//! The gradient fixture: one training step (weights_seed0, batch 2, Dice + CE + attention loss)
//! through fmseg's tape. Tolerances: loss terms 1e-5 relative; every gradient's norm and its
//! sampled entries (relative L2 over the samples) 1e-3; the 57 mathematically zero gradients
//! (conv biases right before an instance norm) below 1e-6.

use crate::common;

use fmseg::backend::cpu::CpuBackend;
use fmseg::train::step;
use fmseg::train::tape::TapeBackend;

/// One training step on the reference fixture's weights, input and label: the loss terms and
/// every gradient (input first, then parameters by checkpoint key).
struct Step {
    dice_ce: f64,
    attention: f64,
    grads: Vec<(String, Vec<f32>)>,
}

fn step() -> Option<Step> {
    step_with(step::InputGrad::Wanted)
}

fn step_with(input_grad: step::InputGrad) -> Option<Step> {
    let path = common::fixture("grad_seed0_batch2.safetensors")?;
    let weights = common::fixture("weights_seed0.pth")?;
    let case = common::Case::open(&path);
    let sd = fmseg::weights::load_canonical(&weights).unwrap();
    let tape = TapeBackend::new(CpuBackend::new(0).unwrap());
    let input = case.f32("input");
    let label: Vec<u8> = case.f32("label").data.iter().map(|&v| v as u8).collect();
    let t0 = std::time::Instant::now();
    let r = step::forward_backward(&tape, &sd, &input, &label, input_grad).unwrap();
    eprintln!("forward + backward, batch 2: {:.2} s: {:?}", t0.elapsed().as_secs_f64(), r.seconds);
    let mut grads = Vec::new();
    if input_grad == step::InputGrad::Wanted {
        grads.push(("input".to_string(), r.input_grad.expect("input gradient").data));
    } else {
        assert!(r.input_grad.is_none(), "an input gradient that was not asked for");
    }
    for (key, _) in fmseg::model::catalog::tensor_keys() {
        // Shared modules are differentiated once, under `attention_k`.
        if key.starts_with("up_") && key.contains(".attention.") {
            continue;
        }
        let v = r.grads.get(&key).unwrap_or_else(|| panic!("no gradient for {key}")).clone();
        grads.push((key, v));
    }
    Some(Step { dice_ce: r.loss.dice_ce, attention: r.loss.attention, grads })
}

/// Compares a step with a fixture in the reference's format; returns the mismatches.
fn compare(step: &Step, case: &common::Case, loss_tol: [f64; 2], sample_tol: f64) -> Vec<String> {
    let mut failures = Vec::new();
    for ((name, got), tol) in
        [("loss_dice_ce", step.dice_ce), ("loss_attention", step.attention)].into_iter().zip(loss_tol)
    {
        let want = case.f64(name)[0];
        let e = (got - want).abs() / want.abs();
        eprintln!("{name}: {got:.8} vs {want:.8} (rel {e:.2e})");
        if e > tol {
            failures.push(format!("{name}: {got} vs {want} (rel {e:.2e} > {tol:e})"));
        }
    }
    let mut zero = 0;
    let (mut worst_norm, mut worst_val) = (0f64, 0f64);
    for (name, g) in &step.grads {
        let want_norm = case.f64(&format!("grad.{name}.norm"))[0];
        let norm = g.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        if want_norm < 1e-10 {
            zero += 1;
            if norm >= 1e-6 {
                failures.push(format!("{name}: gradient norm {norm:e}, should be zero"));
            }
            continue;
        }
        let e_norm = (norm - want_norm).abs() / want_norm;
        let idx = case.i64(&format!("grad.{name}.idx"));
        let sampled: Vec<f32> = idx.iter().map(|&i| g[i as usize]).collect();
        let e_val = common::rel_l2_f64(&sampled, &case.f64(&format!("grad.{name}.val")));
        (worst_norm, worst_val) = (worst_norm.max(e_norm), worst_val.max(e_val));
        if e_norm > 1e-3 || e_val > sample_tol {
            failures.push(format!(
                "{name}: norm {norm:.6e} vs {want_norm:.6e} (rel {e_norm:.2e}), samples rel L2 {e_val:.2e}"
            ));
        }
    }
    eprintln!("worst gradient norm error {worst_norm:.2e}, worst sampled entries {worst_val:.2e}");
    // The fixtures' 144 gradient tensors: the input and 143 distinct parameters, 57 of them
    // conv biases right before an instance norm (mathematically zero).
    assert_eq!(step.grads.len(), 144, "every gradient tensor compared");
    assert_eq!(zero, 57, "mathematically zero gradients");
    failures
}

/// The strict check against PyTorch float64 autograd on the same step with the network in
/// eval() mode (`tests/data/grad_eval_seed0.safetensors`, written by
/// `scripts/make_grad_fixture.py`): every loss term within 1e-5, every gradient norm within
/// 1e-3, sampled entries within 1e-2.
///
/// Why 1e-2 for entries: this step's gradients are badly conditioned in float32 (a random
/// network, 60 instance norms whose backward subtracts nearly equal terms). PyTorch's own
/// float32 CPU autograd, against the same float64 result, is off by up to 2.3e-2 (48 of the 87
/// non-zero tensors above 1e-3); fmseg's tape, with float64 sums in the weight gradients and
/// norm statistics, by up to 8e-3 (norms within 9e-4). A wrong backward is off by O(1).
#[test]
fn gradients_match_pytorch_float64_autograd() {
    let Some(step) = step() else { return };
    let ours = common::Case::open(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/grad_eval_seed0.safetensors"),
    );
    let failures = compare(&step, &ours, [1e-5, 1e-5], 1e-2);
    assert!(failures.is_empty(), "{} mismatches against PyTorch float64:\n{}", failures.len(), failures.join("\n"));

    // The reference's own fixture was taken in train() mode, where the reference's hard-coded
    // Dropout3d(p=0.2) in the channel attention and the context block drew random channel
    // masks: the deep layers' gradients there depend on those masks (5-15 % between masks
    // here) and cannot be reproduced. What the masks barely move is still checked: the
    // Dice + CE term to 1e-5 and the attention term to 1e-4 (masks move it by up to ~6e-5),
    // and the exactly zero gradients.
    let reference = common::Case::open(&common::fixture("grad_seed0_batch2.safetensors").unwrap());
    let failures = compare(&step, &reference, [1e-5, 1e-4], 1e-2);
    let loss_or_zero: Vec<&String> =
        failures.iter().filter(|f| f.starts_with("loss") || f.contains("should be zero")).collect();
    assert!(loss_or_zero.is_empty(), "against the reference fixture: {loss_or_zero:?}");
    eprintln!(
        "{} of 87 non-zero gradient tensors differ from the dropout-affected reference fixture by > 1e-3",
        failures.len()
    );
}

/// Training skips the input image's gradient (the first convolutions then compute only their
/// parameters' gradients): every parameter gradient stays the same to the bit.
#[test]
fn skipping_the_input_gradient_leaves_parameter_gradients_unchanged() {
    let Some(full) = step() else { return };
    let skipped = step_with(step::InputGrad::Skipped).unwrap();
    assert_eq!(full.grads.len(), skipped.grads.len() + 1);
    for ((name, a), (other, b)) in full.grads[1..].iter().zip(&skipped.grads) {
        assert_eq!(name, other);
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} differs");
    }
}
