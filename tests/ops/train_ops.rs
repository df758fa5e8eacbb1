//! Every backward op of the gradient tape against central finite differences of the float64
//! oracle (`backend::cpu::reference`), on the cases of the op-test matrix marked `grad`
//! (`common::op_cases`: small odd sizes, since each sampled entry costs two oracle calls).
//!
//! Each op runs forward on the tape (the CPU engine's float32 kernels), its output is checked
//! against the oracle, the loss is `L = sum(y * r)` for a fixed random `r`, and the analytic
//! gradients of every input and parameter are compared with `(L(x+h) - L(x-h)) / 2h` of the
//! oracle. Tolerance: relative L2 1e-4 per tensor (the analytic side is float32).

use crate::common;

use common::op_cases::{self, check_grads, fd_check};
use common::Rng;
use fmseg::backend::cpu::reference::{self as oracle, Tensor64};
use fmseg::backend::cpu::CpuBackend;
use fmseg::backend::{Backend, ConvSpec};
use fmseg::tensor::HostTensor;
use fmseg::train::tape::{TapeBackend, Var};

fn tape() -> TapeBackend {
    TapeBackend::new(CpuBackend::new(2).unwrap())
}

/// The gradient of `sum(y * r)` with respect to the leaf `x`, in PyTorch layout.
fn input_gradient(t: &TapeBackend, x: &Var, y: &Var, r: &HostTensor) -> HostTensor {
    let g = t.backward(vec![(y, t.cpu().upload(r).unwrap())]).unwrap();
    t.cpu().download(g.of(x).expect("the input has a gradient")).unwrap()
}

#[test]
fn grad_conv() {
    check_grads(&op_cases::conv());
}

/// The classifier's whole graph on the tape: every parameter and both inputs.
#[test]
fn grad_classifier() {
    check_grads(&op_cases::classifier());
}

#[test]
fn grad_conv_norm() {
    check_grads(&op_cases::conv_norm());
}

#[test]
fn grad_instance_norm() {
    check_grads(&op_cases::instance_norm());
}

#[test]
fn grad_max_pool() {
    check_grads(&op_cases::max_pool());
}

#[test]
fn grad_adaptive_avg_pool() {
    check_grads(&op_cases::adaptive_avg_pool());
}

#[test]
fn grad_resize_trilinear() {
    check_grads(&op_cases::resize_trilinear());
}

#[test]
fn grad_up_add() {
    check_grads(&op_cases::up_add());
}

#[test]
fn grad_sum() {
    check_grads(&op_cases::sum());
}

#[test]
fn grad_sigmoid_sum() {
    check_grads(&op_cases::sigmoid_sum());
}

#[test]
fn grad_attend() {
    check_grads(&op_cases::attend());
}

#[test]
fn grad_concat() {
    check_grads(&op_cases::concat());
}

/// Training-mode Dropout3d in a conv -> instance norm -> ReLU block: whole channels dropped at
/// about the site's rate, the rest scaled by 1/(1-p), and a
/// backward that matches finite differences with the same masks.
#[test]
fn dropout_in_conv_norm_relu_blocks() {
    use fmseg::backend::DropoutSite;
    use fmseg::train::tape::Dropout;
    let mut rng = Rng::fresh("dropout_in_conv_norm_relu_blocks");
    let (n, cin, c, d) = (2, 3, 64, [5, 4, 3]);
    let vox = 60;
    let spec = ConvSpec { cin, cout: c, k: [1, 1, 1], bias: true };
    let x = rng.tensor(&[n, cin, d[0], d[1], d[2]]);
    let w = rng.tensor(&spec.weight_shape());
    let b = rng.tensor(&[c]);
    // conv -> IN -> ReLU -> dropout, as the model's blocks call it.
    let forward = |site: DropoutSite, dropout: Option<Dropout>| {
        let t = tape();
        t.set_dropout(dropout);
        let conv = t.prepare_conv("down_1.down.1.conv1.0.block.0", spec, &w, Some(&b)).unwrap();
        let xv = t.upload(&x).unwrap();
        let y = t.dropout(t.conv_norm(&xv, &conv, None, true).unwrap(), site).unwrap();
        (t, xv, y)
    };
    let drop = Some(Dropout { p: 0.5, fixed: 0.2, seed: 7 });
    let (t0, _, y0) = forward(DropoutSite::Network, None);
    let plain = t0.download(&y0).unwrap();
    let (t, xv, y) = forward(DropoutSite::Network, drop);
    let dropped = t.download(&y).unwrap();
    let mut masks = vec![0f64; n * c];
    for s in 0..n * c {
        let (p, q) = (&plain.data[s * vox..][..vox], &dropped.data[s * vox..][..vox]);
        if q.iter().all(|&v| v == 0.0) {
            continue;
        }
        assert!(
            p.iter().zip(q).all(|(a, b)| (2.0 * a - b).abs() <= 1e-5 * a.abs().max(1.0)),
            "kept channel scaled by 2"
        );
        masks[s] = 2.0;
    }
    let zeroed = masks.iter().filter(|&&m| m == 0.0).count();
    // 128 channels at p = 0.5: 64 +- 4 sigma (sigma = 5.7).
    assert!((41..=87).contains(&zeroed), "{zeroed} of 128 channels dropped at p = 0.5");
    // The same masks in a naive float64 forward: finite differences of the input.
    let r = rng.tensor(&[n, c, d[0], d[1], d[2]]);
    let gx = input_gradient(&t, &xv, &y, &r);
    let (x64, w64, b64) = (Tensor64::from(&x), Tensor64::from(&w), Tensor64::from(&b));
    fd_check("conv-norm-dropout-relu input", &x64.data, &gx.data, 1e-4, &|v| {
        let xp = Tensor64::new(x64.shape.clone(), v.to_vec());
        let z = oracle::conv_norm(&xp, &w64, Some(&b64.data), None, false);
        z.data.iter().enumerate().map(|(i, v)| (v * masks[i / vox]).max(0.0) * r.data[i] as f64).sum()
    });
    // Each site draws at its own rate (where the model calls it: model::cost's test).
    let count = |site: DropoutSite| {
        let (t, _, y) = forward(site, Some(Dropout { p: 0.0, fixed: 0.5, seed: 3 }));
        let v = t.download(&y).unwrap();
        (0..n * c).filter(|s| v.data[s * vox..][..vox].iter().all(|&q| q == 0.0)).count()
    };
    assert!(count(DropoutSite::Fixed) > 30);
    assert_eq!(count(DropoutSite::Network), 0, "p = 0 at the network's rate here");
}

/// A convolution reading a conv -> norm -> ReLU -> dropout output keeps the norm's xhat and
/// recomputes its input from it in the backward (instead of keeping a second full-size tensor):
/// every gradient must be the same, to the bit, as when it keeps the value itself, for a padded
/// (3x3x1) and an unpadded (1x1x1) reader.
#[test]
fn recomputed_conv_input_gives_identical_gradients() {
    use fmseg::backend::DropoutSite;
    use fmseg::train::tape::Dropout;
    let mut rng = Rng::fresh("recomputed_conv_input_gives_identical_gradients");
    let (n, cin, c, d) = (2, 3, 8, [7, 6, 4]);
    let first = ConvSpec { cin, cout: c, k: [3, 3, 1], bias: true };
    let k331 = ConvSpec { cin: c, cout: 5, k: [3, 3, 1], bias: true };
    let k111 = ConvSpec { cin: c, cout: 4, k: [1, 1, 1], bias: false };
    let x = rng.tensor(&[n, cin, d[0], d[1], d[2]]);
    let params: Vec<(ConvSpec, HostTensor, HostTensor)> =
        [first, k331, k111].into_iter().map(|s| (s, rng.tensor(&s.weight_shape()), rng.tensor(&[s.cout]))).collect();
    let (r1, r2) = (rng.tensor(&[n, 5, d[0], d[1], d[2]]), rng.tensor(&[n, 4, d[0], d[1], d[2]]));
    let run = |keep_value: bool| {
        let t = tape();
        t.set_dropout(Some(Dropout { p: 0.5, fixed: 0.2, seed: 11 }));
        let convs: Vec<_> = params
            .iter()
            .enumerate()
            .map(|(i, (s, w, b))| t.prepare_conv(&format!("layer{i}"), *s, w, s.bias.then_some(b)).unwrap())
            .collect();
        let xv = t.upload(&x).unwrap();
        let a = t.dropout(t.conv_norm(&xv, &convs[0], None, true).unwrap(), DropoutSite::Network).unwrap();
        assert!(a.recomputable(), "a norm + ReLU + dropout output is recomputable");
        // A one-term sum is a copy the tape keeps as a value.
        let a = if keep_value { t.sum(&[&a], false).unwrap() } else { a };
        assert_eq!(a.recomputable(), !keep_value);
        let (y1, y2) = (t.conv(&a, &convs[1]).unwrap(), t.conv(&a, &convs[2]).unwrap());
        drop(a);
        let g = t.backward(vec![(&y1, t.cpu().upload(&r1).unwrap()), (&y2, t.cpu().upload(&r2).unwrap())]).unwrap();
        let gx = t.cpu().download(g.of(&xv).unwrap()).unwrap();
        (g.params, gx.data)
    };
    let (p_kept, gx_kept) = run(true);
    let (p_recomputed, gx_recomputed) = run(false);
    assert_eq!(p_kept.keys().collect::<Vec<_>>(), p_recomputed.keys().collect::<Vec<_>>());
    for (name, g) in &p_kept {
        assert!(g.iter().any(|&v| v != 0.0), "{name}: an all-zero gradient proves nothing");
        assert_eq!(g, &p_recomputed[name], "{name}");
    }
    assert_eq!(gx_kept, gx_recomputed, "input gradient");
}
