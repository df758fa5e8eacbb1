//! The op-test matrix (`common::op_cases`) on the CPU engine: every op's case table against the
//! float64 oracle, on the engine as it runs (Winograd where it applies) and, for the convs,
//! with the direct kernel alone. The same tests by the same names run on the CUDA engine in
//! `tests/gpu.rs`; the backward ops are `grad_<op>` in `train_ops.rs`.

use crate::common;

use common::op_cases::{self, Family, OpCase, Runner};
use common::Rng;
use fmseg::backend::cpu::CpuBackend;

/// The cases on the CPU engine; with `direct`, on the direct conv kernel alone and with
/// Winograd F(2x2, 3x3) only (the training tape's) as well.
fn run<C: OpCase>(cases: Vec<C>, direct: bool) {
    let engine = CpuBackend::new(2).unwrap();
    let direct_only = CpuBackend::new(2).unwrap().with_winograd(false);
    let f2_only = CpuBackend::new(2).unwrap().with_winograd_tile(2);
    let mut backends = vec![("cpu", &engine)];
    if direct {
        backends.push(("cpu, direct conv", &direct_only));
        backends.push(("cpu, Winograd F(2x2) only", &f2_only));
    }
    Runner::new(Family::Cpu, backends, |_| {}, &format!("op_{}", C::OP)).check(&cases);
}

#[test]
fn op_conv() {
    run(op_cases::conv(), true);
}

#[test]
fn op_conv_norm() {
    run(op_cases::conv_norm(), true);
}

#[test]
fn op_instance_norm() {
    run(op_cases::instance_norm(), false);
}

#[test]
fn op_max_pool() {
    run(op_cases::max_pool(), false);
}

#[test]
fn op_adaptive_avg_pool() {
    run(op_cases::adaptive_avg_pool(), false);
}

#[test]
fn op_resize_trilinear() {
    run(op_cases::resize_trilinear(), false);
}

#[test]
fn op_up_add() {
    run(op_cases::up_add(), false);
}

#[test]
fn op_sum() {
    run(op_cases::sum(), false);
}

#[test]
fn op_sigmoid_sum() {
    run(op_cases::sigmoid_sum(), false);
}

#[test]
fn op_attend() {
    run(op_cases::attend(), false);
}

#[test]
fn op_concat() {
    run(op_cases::concat(), false);
}

/// The classifier's whole graph, on the engine as it runs and on the direct conv alone.
#[test]
fn op_classifier() {
    run(op_cases::classifier(), true);
}

#[test]
fn shape_errors_are_errors_not_panics() {
    op_cases::shape_errors(&CpuBackend::new(2).unwrap(), &mut Rng::fresh("shape_errors"));
}
