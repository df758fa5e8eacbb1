//! Every CPU engine op against the naive float64 oracle (`backend::cpu::reference`) on random
//! inputs of odd sizes. Tolerance: relative L2 1e-5 (float32 accumulation over at most a few
//! thousand terms) unless stated.

use crate::common;

use common::Rng;
use fmseg::backend::cpu::{reference, CpuBackend};
use fmseg::backend::{Backend, ConvSpec, ConvTSpec};
use fmseg::tensor::{rel_l2, HostTensor};

const TOL: f64 = 1e-5;

fn backend() -> CpuBackend {
    CpuBackend::new(2).unwrap()
}

fn check(what: &str, got: &HostTensor, want: &HostTensor, tol: f64) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    assert!(got.data.iter().all(|v| v.is_finite()), "{what}: non-finite output");
    let e = rel_l2(&got.data, &want.data);
    assert!(e < tol, "{what}: relative L2 error {e:.3e} >= {tol:.0e}");
}

const KERNELS: [[usize; 3]; 8] =
    [[3, 3, 1], [1, 1, 3], [3, 3, 3], [3, 1, 1], [1, 3, 1], [1, 3, 3], [3, 1, 3], [1, 1, 1]];

#[test]
fn conv_every_kernel_shape_matches_reference() {
    let be = backend();
    let mut rng = Rng::fresh("conv");
    let dims_set = [[7, 9, 5], [5, 3, 6], [4, 11, 3], [2, 1, 8], [3, 3, 2]];
    for k in KERNELS {
        for (cin, cout) in [(1, 32), (3, 5), (17, 16), (32, 33), (16, 1), (32, 2)] {
            let dims = dims_set[rng.below(dims_set.len())];
            let n = 1 + rng.below(2);
            let x = rng.tensor(&[n, cin, dims[0], dims[1], dims[2]]);
            let w = rng.tensor(&[cout, cin, k[0], k[1], k[2]]);
            let b = rng.tensor(&[cout]);
            let spec = ConvSpec { cin, cout, k, bias: true };
            let conv = be.prepare_conv("test", spec, &w, Some(&b)).unwrap();
            let y = be.download(&be.conv(&be.upload(&x).unwrap(), &conv).unwrap()).unwrap();
            let want = reference::conv3d(&x, &w, Some(&b.data));
            check(&format!("conv k={k:?} {cin}->{cout} dims={dims:?} n={n}"), &y, &want, TOL);
        }
    }
}

#[test]
fn conv_without_bias_and_wide_channels() {
    let be = backend();
    let mut rng = Rng::fresh("conv_wide");
    let x = rng.tensor(&[1, 70, 5, 4, 3]);
    let w = rng.tensor(&[130, 70, 3, 3, 3]);
    let spec = ConvSpec { cin: 70, cout: 130, k: [3, 3, 3], bias: false };
    let conv = be.prepare_conv("test", spec, &w, None).unwrap();
    let y = be.download(&be.conv(&be.upload(&x).unwrap(), &conv).unwrap()).unwrap();
    check("conv 70->130 3x3x3 no bias", &y, &reference::conv3d(&x, &w, None), TOL);
}

#[test]
fn instance_norm_with_residual_and_relu() {
    let be = backend();
    let mut rng = Rng::fresh("instance_norm");
    for (relu, res) in [(false, false), (true, false), (true, true), (false, true)] {
        let mut x = rng.tensor(&[2, 5, 9, 7, 3]);
        // A large per-channel offset against a small spread: the variance must stay exact.
        x.data.iter_mut().enumerate().for_each(|(i, v)| *v = *v * 0.01 + 50.0 * ((i / 189) % 5) as f32);
        let r = rng.tensor(&[2, 5, 9, 7, 3]);
        let rt = be.upload(&r).unwrap();
        let y = be.instance_norm(be.upload(&x).unwrap(), res.then_some(&rt), relu).unwrap();
        let want = reference::instance_norm(&x, res.then_some(&r), relu);
        check(&format!("instance norm relu={relu} residual={res}"), &be.download(&y).unwrap(), &want, 1e-5);
    }
}

#[test]
fn max_pools_of_the_network() {
    let be = backend();
    let mut rng = Rng::fresh("max_pool");
    for (k, dims) in [
        ([2, 2, 1], [9, 7, 5]),
        ([2, 2, 2], [7, 9, 5]),
        ([4, 4, 4], [13, 12, 9]),
        ([12, 1, 1], [13, 14, 9]),
        ([1, 12, 1], [12, 14, 9]),
        ([1, 1, 8], [12, 14, 9]),
    ] {
        let x = rng.tensor(&[2, 3, dims[0], dims[1], dims[2]]);
        let y = be.download(&be.max_pool(&be.upload(&x).unwrap(), k).unwrap()).unwrap();
        check(&format!("max pool {k:?} of {dims:?}"), &y, &reference::max_pool(&x, k), 0.0 + 1e-12);
    }
}

#[test]
fn adaptive_avg_pool_odd_sizes() {
    let be = backend();
    let mut rng = Rng::fresh("adaptive_avg_pool");
    for (dims, od) in
        [([12, 12, 8], [6, 6, 4]), ([12, 14, 9], [6, 7, 4]), ([25, 29, 18], [12, 14, 9]), ([5, 3, 7], [2, 1, 3])]
    {
        let x = rng.tensor(&[2, 4, dims[0], dims[1], dims[2]]);
        let y = be.download(&be.adaptive_avg_pool(&be.upload(&x).unwrap(), od).unwrap()).unwrap();
        check(&format!("adaptive avg pool {dims:?}->{od:?}"), &y, &reference::adaptive_avg_pool(&x, od), TOL);
    }
}

#[test]
fn trilinear_align_corners() {
    let be = backend();
    let mut rng = Rng::fresh("trilinear");
    for (dims, od) in [
        ([6, 6, 4], [12, 12, 8]),
        ([1, 12, 8], [12, 12, 8]),
        ([3, 3, 2], [12, 14, 9]),
        ([6, 7, 4], [12, 14, 9]),
        ([12, 1, 9], [12, 14, 9]),
    ] {
        let x = rng.tensor(&[2, 3, dims[0], dims[1], dims[2]]);
        let y = be.download(&be.resize_trilinear(&be.upload(&x).unwrap(), od).unwrap()).unwrap();
        check(&format!("trilinear {dims:?}->{od:?}"), &y, &reference::resize_trilinear(&x, od), 1e-6);
    }
}

#[test]
fn up_add_transposed_conv_replicate_pad_and_skip() {
    let be = backend();
    let mut rng = Rng::fresh("up_add");
    for (k, dims, extra) in
        [([2, 2, 2], [3, 4, 3], [0, 1, 1]), ([2, 2, 1], [5, 3, 4], [1, 0, 0]), ([2, 2, 1], [4, 4, 3], [0, 0, 0])]
    {
        let (cin, cout) = (6, 5);
        let x = rng.tensor(&[2, cin, dims[0], dims[1], dims[2]]);
        let w = rng.tensor(&[cin, cout, k[0], k[1], k[2]]);
        let b = rng.tensor(&[cout]);
        let sd = [dims[0] * k[0] + extra[0], dims[1] * k[1] + extra[1], dims[2] * k[2] + extra[2]];
        let skip = rng.tensor(&[2, cout, sd[0], sd[1], sd[2]]);
        let ct = be.prepare_conv_t("test", ConvTSpec { cin, cout, k }, &w, &b).unwrap();
        let y = be.up_add(&be.upload(&x).unwrap(), &ct, &be.upload(&skip).unwrap()).unwrap();
        let mut want = reference::pad_replicate_end(&reference::conv_transpose(&x, &w, &b.data), sd);
        want.data.iter_mut().zip(&skip.data).for_each(|(a, s)| *a += s);
        check(&format!("up_add k={k:?} dims={dims:?} pad={extra:?}"), &be.download(&y).unwrap(), &want, TOL);
    }
}

#[test]
fn elementwise_sum_sigmoid_attend_concat() {
    let be = backend();
    let mut rng = Rng::fresh("elementwise");
    let shape = [2, 3, 5, 7, 3];
    let (a, b, c) = (rng.tensor(&shape), rng.tensor(&shape), rng.tensor(&shape));
    let (ta, tb, tc) = (be.upload(&a).unwrap(), be.upload(&b).unwrap(), be.upload(&c).unwrap());

    let s = be.download(&be.sum(&[&ta, &tb, &tc], true).unwrap()).unwrap();
    let want: Vec<f32> = (0..a.numel()).map(|i| (a.data[i] + b.data[i] + c.data[i]).max(0.0)).collect();
    check("sum relu", &s, &HostTensor::new(shape.to_vec(), want).unwrap(), 1e-7);

    let m1 = rng.tensor(&[2, 1, 5, 7, 3]);
    let m2 = rng.tensor(&[2, 1, 5, 7, 3]);
    let g = be.sigmoid_sum(&be.upload(&m1).unwrap(), &be.upload(&m2).unwrap()).unwrap();
    let want: Vec<f32> = m1.data.iter().zip(&m2.data).map(|(x, y)| reference::sigmoid(x + y)).collect();
    let gh = be.download(&g).unwrap();
    check("sigmoid sum", &gh, &HostTensor::new(vec![2, 1, 5, 7, 3], want).unwrap(), 1e-6);

    let att = be.download(&be.attend(be.upload(&a).unwrap(), &g).unwrap()).unwrap();
    check("attend (broadcast)", &att, &reference::attend(&a, &gh), 1e-7);
    let att = be.download(&be.attend(be.upload(&a).unwrap(), &tb).unwrap()).unwrap();
    check("attend (per channel)", &att, &reference::attend(&a, &b), 1e-7);

    let cat = be.download(&be.concat(&ta, &tc).unwrap()).unwrap();
    let mut want = Vec::new();
    for s in 0..2 {
        let n = 3 * 5 * 7 * 3;
        want.extend_from_slice(&a.data[s * n..][..n]);
        want.extend_from_slice(&c.data[s * n..][..n]);
    }
    check("concat", &cat, &HostTensor::new(vec![2, 6, 5, 7, 3], want).unwrap(), 0.0 + 1e-12);
}

#[test]
fn shape_errors_are_errors_not_panics() {
    let be = backend();
    let mut rng = Rng::fresh("shape_errors");
    let x = be.upload(&rng.tensor(&[1, 3, 4, 4, 4])).unwrap();
    let y = be.upload(&rng.tensor(&[1, 3, 4, 4, 5])).unwrap();
    assert!(be.sum(&[&x, &y], false).is_err());
    assert!(be.max_pool(&x, [8, 1, 1]).is_err());
    let w = rng.tensor(&[2, 5, 1, 1, 1]);
    let conv = be.prepare_conv("test", ConvSpec { cin: 5, cout: 2, k: [1, 1, 1], bias: false }, &w, None).unwrap();
    assert!(be.conv(&x, &conv).is_err());
}

#[test]
fn fused_conv_norm_matches_conv_then_norm() {
    let be = backend();
    let mut rng = Rng::fresh("conv_norm");
    for (k, cin, cout, res, relu) in [
        ([3, 3, 1], 5, 16, true, true),
        ([1, 1, 3], 8, 33, false, true),
        ([3, 1, 1], 16, 1, false, false),
        ([1, 1, 1], 32, 2, true, false),
    ] {
        let dims = [7, 9, 5];
        let x = rng.tensor(&[2, cin, dims[0], dims[1], dims[2]]);
        let w = rng.tensor(&[cout, cin, k[0], k[1], k[2]]);
        let b = rng.tensor(&[cout]);
        let r = rng.tensor(&[2, cout, dims[0], dims[1], dims[2]]);
        let conv = be.prepare_conv("test", ConvSpec { cin, cout, k, bias: true }, &w, Some(&b)).unwrap();
        let rt = be.upload(&r).unwrap();
        let y = be.conv_norm(&be.upload(&x).unwrap(), &conv, res.then_some(&rt), relu).unwrap();
        let want = reference::instance_norm(&reference::conv3d(&x, &w, Some(&b.data)), res.then_some(&r), relu);
        check(&format!("conv_norm k={k:?} {cin}->{cout} res={res} relu={relu}"), &be.download(&y).unwrap(), &want, TOL);
    }
}

#[test]
fn winograd_3x3x1_and_3x3x3_match_reference_on_odd_sizes() {
    let be = backend();
    let direct = CpuBackend::new(2).unwrap().with_winograd(false);
    let mut rng = Rng::fresh("winograd");
    let cases = [
        ([7, 9, 6], 8, 5, 1),
        ([5, 4, 7], 17, 33, 1),
        ([2, 3, 16], 32, 32, 1),
        ([9, 2, 6], 40, 70, 1),
        ([3, 5, 13], 12, 16, 1),
        ([5, 7, 4], 9, 17, 3),
        ([4, 3, 8], 64, 40, 3),
        ([7, 5, 9], 16, 6, 3),
        ([3, 3, 4], 8, 8, 3),
    ];
    for (dims, cin, cout, kd) in cases {
        let x = rng.tensor(&[2, cin, dims[0], dims[1], dims[2]]);
        let w = rng.tensor(&[cout, cin, 3, 3, kd]);
        let b = rng.tensor(&[cout]);
        let spec = ConvSpec { cin, cout, k: [3, 3, kd], bias: true };
        let want = reference::conv3d(&x, &w, Some(&b.data));
        for (name, be) in [("winograd", &be), ("direct", &direct)] {
            let conv = be.prepare_conv("test", spec, &w, Some(&b)).unwrap();
            let xt = be.upload(&x).unwrap();
            let y = be.download(&be.conv(&xt, &conv).unwrap()).unwrap();
            check(&format!("{name} 3x3x{kd} {cin}->{cout} dims={dims:?}"), &y, &want, TOL);
            let y = be.download(&be.conv_norm(&xt, &conv, None, true).unwrap()).unwrap();
            let want_norm = reference::instance_norm(&want, None, true);
            check(&format!("{name} 3x3x{kd}+norm {cin}->{cout} dims={dims:?}"), &y, &want_norm, TOL);
        }
    }
}
