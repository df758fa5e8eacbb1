//! The CUDA engine against the float64 oracle (`backend::cpu::reference`), the float32 CPU
//! engine and the reference fixtures.
//!
//! Without a usable GPU every test prints "SKIPPED: no CUDA device (...)" and passes; with
//! `FMSEG_REQUIRE_GPU=1` (scripts/gpu-check.sh --run) a missing GPU is a failure. The kernel
//! table and module tests need no GPU (`FMSEG_REQUIRE_KERNELS=1`: a build without kernels fails
//! them instead of skipping).
//!
//! Every op runs the op-test matrix (`common::op_cases`, the same case tables and test names
//! `op_<op>` as the CPU engine's `tests/ops/op_matrix.rs`) on fresh random inputs of odd sizes
//! (seed printed; replay with FMSEG_TEST_SEED) with outputs poisoned (NaN) before each launch,
//! so an element a kernel does not write fails the test. Inputs and weights are rounded to fp16
//! before the oracle sees them (the GPU stores them so), so the tolerances (`op_cases::
//! ONE_ROUNDING`, `CONV`, `CHAIN`) measure the kernels. The whole network (135 GFLOP in fp16 vs
//! float32): logits rel L2 2e-2 and the same argmax wherever the float32 logits differ by more
//! than 0.05.
#![cfg(feature = "cuda")]

mod common;

use common::op_cases::{self, Family, OpCase, Runner, Want, CHAIN};
use common::Rng;
use fmseg::backend::cpu::reference::{self as oracle, Tensor64};
use fmseg::backend::cpu::CpuBackend;
use fmseg::backend::cuda::CudaBackend;
use fmseg::backend::{Backend, ConvSpec};
use fmseg::engine::Engine;
use fmseg::model::init::{random_input, random_state_dict};
use fmseg::tensor::{max_abs_diff, numel, rel_l2, Dims, HostTensor};
use fmseg::weights::StateDict;
use half::f16;

// ---------------------------------------------------------------------------------------
// helpers

/// The GPU backend with output poisoning on, or None (after a notice) when there is none.
fn gpu() -> Option<CudaBackend> {
    match CudaBackend::new() {
        Ok(b) => {
            b.set_poison_outputs(true);
            Some(b)
        }
        Err(e) => {
            if std::env::var("FMSEG_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("FMSEG_REQUIRE_GPU=1 but the CUDA backend is unavailable: {e}");
            }
            eprintln!("SKIPPED: no CUDA device ({e})");
            None
        }
    }
}

/// Rounded to fp16 values, as the GPU stores them.
fn f16r(t: &mut HostTensor) {
    for v in &mut t.data {
        *v = f16::from_f32(*v).to_f32();
    }
}

/// A random fp16-exact tensor, uniform in [-scale, scale) + offset.
fn rand_t(rng: &mut Rng, shape: &[usize], scale: f32, offset: f32) -> HostTensor {
    let mut t = rng.tensor(shape);
    for v in &mut t.data {
        *v = *v * scale + offset;
    }
    f16r(&mut t);
    t
}

/// Relative L2 error at most `rel_l2`, largest absolute error at most `max_abs` times the
/// largest |want| (`op_cases::compare`).
fn check(what: &str, got: &HostTensor, want: &HostTensor, rel_l2: f64, max_abs: f64) {
    op_cases::compare(what, got, &Tensor64::from(want), rel_l2, Some(max_abs));
}

// ---------------------------------------------------------------------------------------
// device and kernel table

/// Whether this build has kernels; without them a notice, or with FMSEG_REQUIRE_KERNELS=1
/// (scripts/gpu-check.sh packing, .ci/run after installing the toolchain) a failure.
fn kernels_built() -> bool {
    let required = std::env::var("FMSEG_REQUIRE_KERNELS").is_ok_and(|v| v == "1");
    if !fmseg::backend::cuda::KERNELS_BUILT {
        assert!(!required, "this build has no CUDA kernels (nvcc was not found by build.rs)");
        eprintln!("SKIPPED: this build has no CUDA kernels");
    }
    fmseg::backend::cuda::KERNELS_BUILT
}

/// Needs no GPU: with FMSEG_REQUIRE_KERNELS=1, a build whose kernels were not compiled fails
/// here instead of skipping every GPU test on the GPU machine.
#[test]
fn kernels_are_embedded() {
    if !kernels_built() {
        return;
    }
    for m in fmseg::backend::cuda::Module::ALL {
        assert!(!m.ptx().is_empty() && m.cubin_sm90a().len() > 1000, "module {} is empty", m.name());
        assert!(m.ptx().contains(".target sm_80"), "module {}: PTX target", m.name());
    }
    eprintln!("{}", fmseg::backend::cuda::KERNEL_RESOURCES);
}

/// The `.entry` names of a PTX module.
fn ptx_entries(ptx: &str) -> Vec<&str> {
    ptx.lines()
        .filter_map(|l| {
            let rest = &l[l.find(".entry ")? + ".entry ".len()..];
            Some(rest.split(|c: char| c == '(' || c.is_whitespace()).next().unwrap_or(rest))
        })
        .collect()
}

/// Needs no GPU: every kernel the backend launches by name (`backend::cuda::KERNELS`, the one
/// table every launch goes through) is an `.entry` of its module's PTX, once in the table, and
/// every entry of every module is in the table (no kernel compiled that nothing launches).
#[test]
fn kernel_table_matches_the_ptx() {
    use fmseg::backend::cuda::{Module, KERNELS};
    if !kernels_built() {
        return;
    }
    for (i, k) in KERNELS.iter().enumerate() {
        assert!(
            !KERNELS[..i].iter().any(|o| o.name == k.name),
            "kernel {} is in the table twice (the device caches functions by name)",
            k.name
        );
        let entries = ptx_entries(k.module.ptx());
        assert!(
            entries.contains(&k.name),
            "kernel {} is not an entry of module {} (kernels/{}.cu); its entries: {entries:?}",
            k.name,
            k.module.name(),
            k.module.name()
        );
    }
    for m in Module::ALL {
        let entries = ptx_entries(m.ptx());
        assert!(!entries.is_empty(), "module {} has no entries", m.name());
        for e in entries {
            assert!(
                KERNELS.iter().any(|k| k.module == *m && k.name == e),
                "kernels/{}.cu defines {e}, which is not in backend::cuda::KERNELS",
                m.name()
            );
        }
    }
    eprintln!("{} kernels in {} modules, every one an entry of its PTX", KERNELS.len(), Module::ALL.len());
}

#[test]
fn name_reports_gpu_and_compute_capability() {
    let Some(be) = gpu() else { return };
    let name = be.name();
    eprintln!("{name}");
    assert!(name.contains(&be.device().name) && name.contains("compute capability"), "{name}");
}

// ---------------------------------------------------------------------------------------
// the op-test matrix (common::op_cases), on the CUDA engine

fn matrix<C: OpCase>(cases: Vec<C>) {
    let Some(be) = gpu() else { return };
    Runner::new(Family::Cuda, vec![("cuda", &be)], f16r, &format!("gpu op_{}", C::OP)).check(&cases);
}

#[test]
fn op_conv() {
    matrix(op_cases::conv());
}

#[test]
fn op_conv_norm() {
    matrix(op_cases::conv_norm());
}

#[test]
fn op_instance_norm() {
    matrix(op_cases::instance_norm());
}

/// The norm of a pending norm whose residual is that same pending tensor (one buffer moved in
/// and borrowed at once; the CPU's tensors cannot be shared so, hence not in the matrix).
#[test]
fn op_instance_norm_with_its_input_as_residual() {
    let Some(be) = gpu() else { return };
    let mut rng = Rng::fresh("gpu op_instance_norm aliased");
    let Want::Close { rel_l2, max_abs } = CHAIN else { unreachable!() };
    for (c, dims) in [(8usize, [17usize, 13, 9]), (3, [5, 7, 4]), (64, [12, 12, 8])] {
        let x = rand_t(&mut rng, &[2, c, dims[0], dims[1], dims[2]], 1.0, 60.0);
        let lazy = be.instance_norm(be.upload(&x).unwrap(), None, true).unwrap();
        let y = be.instance_norm(lazy.clone(), Some(&lazy), false).unwrap();
        let first = oracle::instance_norm(&Tensor64::from(&x), None, true);
        let want = oracle::instance_norm(&first, Some(&first), false);
        let what = format!("instance_norm c={c} of a pending norm, itself as the residual");
        op_cases::compare(&what, &be.download(&y).unwrap(), &want, rel_l2, max_abs);
    }
}

#[test]
fn op_max_pool() {
    matrix(op_cases::max_pool());
}

#[test]
fn op_adaptive_avg_pool() {
    matrix(op_cases::adaptive_avg_pool());
}

#[test]
fn op_resize_trilinear() {
    matrix(op_cases::resize_trilinear());
}

#[test]
fn op_up_add() {
    matrix(op_cases::up_add());
}

#[test]
fn op_sum() {
    matrix(op_cases::sum());
}

#[test]
fn op_sigmoid_sum() {
    matrix(op_cases::sigmoid_sum());
}

#[test]
fn op_attend() {
    matrix(op_cases::attend());
}

#[test]
fn op_concat() {
    matrix(op_cases::concat());
}

#[test]
fn op_classifier() {
    matrix(op_cases::classifier());
}

/// The matrix's shape errors, and what only the CUDA engine refuses: a conv whose bias does not
/// match its spec, a non-finite input (fp16 cannot carry one through a norm).
#[test]
fn shape_errors_are_errors_not_panics() {
    let Some(be) = gpu() else { return };
    let mut rng = Rng::fresh("gpu errors");
    op_cases::shape_errors(&be, &mut rng);
    let w = rand_t(&mut rng, &[4, 16, 3, 3, 3], 1.0, 0.0);
    assert!(
        be.prepare_conv("test", ConvSpec { cin: 16, cout: 4, k: [3, 3, 3], bias: true }, &w, None).is_err(),
        "missing bias"
    );
    let mut bad = HostTensor::zeros(vec![1, 1, 2, 2, 2]);
    bad.data[3] = f32::NAN;
    assert!(be.upload(&bad).is_err(), "NaN input");
}

// ---------------------------------------------------------------------------------------
// pipeline kernels

#[test]
fn windows_extract_blend_softmax_argmax() {
    let Some(be) = gpu() else { return };
    let mut rng = Rng::fresh("gpu windows");
    let vol = [37, 29, 11];
    let roi = [16, 12, 8];
    let img = rand_t(&mut rng, &[1, vol[0], vol[1], vol[2]], 1.0, 0.0);
    let dv = be.upload_volume(&img).unwrap();
    let origins: Vec<(Dims, [bool; 3])> = vec![
        ([0, 0, 0], [false; 3]),
        ([21, 17, 3], [true, false, false]),
        ([10, 5, 2], [false, true, true]),
        ([21, 0, 3], [true, true, true]),
    ];
    let batch = be.extract_windows(&dv, roi, &origins).unwrap();
    let got = be.download(&batch).unwrap();
    let idx = |c: usize, h: usize, w: usize, d: usize| ((c * vol[0] + h) * vol[1] + w) * vol[2] + d;
    let vidx = |s: usize, h: usize, w: usize, d: usize| ((s * roi[0] + h) * roi[1] + w) * roi[2] + d;
    let src = |o: Dims, f: [bool; 3], i: usize, j: usize, k: usize| {
        let (i, j, k) = (
            if f[0] { roi[0] - 1 - i } else { i },
            if f[1] { roi[1] - 1 - j } else { j },
            if f[2] { roi[2] - 1 - k } else { k },
        );
        (o[0] + i, o[1] + j, o[2] + k)
    };
    for (s, &(o, f)) in origins.iter().enumerate() {
        for i in 0..roi[0] {
            for j in 0..roi[1] {
                for k in 0..roi[2] {
                    let (a, b, c) = src(o, f, i, j, k);
                    assert_eq!(got.data[vidx(s, i, j, k)], img.data[idx(0, a, b, c)], "window {s} voxel {i},{j},{k}");
                }
            }
        }
    }

    // Blend 2-channel logits with a positive importance map; compare with a float64 blend.
    let logits = rand_t(&mut rng, &[origins.len(), 2, roi[0], roi[1], roi[2]], 3.0, 0.0);
    let mut imp = rng.tensor(&[1, roi[0], roi[1], roi[2]]);
    for v in &mut imp.data {
        *v = 0.001 + v.abs();
    }
    let impv = be.upload_volume(&imp).unwrap();
    let mut blend = be.new_blend(2, vol).unwrap();
    be.accumulate_windows(&mut blend, &be.upload(&logits).unwrap(), &impv, &origins).unwrap();
    let mut out = be.finish_blend(blend).unwrap();
    let got = be.download_volume(&out).unwrap();
    let mut acc = vec![0f64; 2 * numel(vol)];
    let mut ws = vec![0f64; numel(vol)];
    for (s, &(o, f)) in origins.iter().enumerate() {
        for i in 0..roi[0] {
            for j in 0..roi[1] {
                for k in 0..roi[2] {
                    let (a, b, c) = src(o, f, i, j, k);
                    let g = imp.data[(i * roi[1] + j) * roi[2] + k] as f64;
                    for ch in 0..2 {
                        acc[idx(ch, a, b, c)] +=
                            g * logits.data[((s * 2 + ch) * roi[0] * roi[1] + i * roi[1] + j) * roi[2] + k] as f64;
                    }
                    ws[idx(0, a, b, c)] += g;
                }
            }
        }
    }
    let want: Vec<f32> = acc.iter().enumerate().map(|(e, v)| (v / ws[e % numel(vol)]) as f32).collect();
    let covered: Vec<usize> = (0..acc.len()).filter(|&e| ws[e % numel(vol)] > 0.0).collect();
    let g: Vec<f32> = covered.iter().map(|&e| got.data[e]).collect();
    let w: Vec<f32> = covered.iter().map(|&e| want[e]).collect();
    let e = rel_l2(&g, &w);
    eprintln!("window blend: rel L2 {e:.2e} over {} covered values", g.len());
    assert!(e < 1e-6, "window blend: rel L2 {e:.3e}");

    // Argmax, then softmax in place, on the covered region.
    let mask = be.argmax_volume(&out).unwrap();
    be.softmax_volume(&mut out).unwrap();
    let prob = be.download_volume(&out).unwrap();
    for v in 0..numel(vol) {
        if ws[v] == 0.0 {
            continue;
        }
        let (l0, l1) = (got.data[v], got.data[numel(vol) + v]);
        if (l0 - l1).abs() > 1e-5 {
            assert_eq!(mask[v], (l1 > l0) as u8, "argmax at voxel {v}");
        }
        let p1 = 1.0 / (1.0 + ((l0 - l1) as f64).exp());
        assert!((prob.data[numel(vol) + v] as f64 - p1).abs() < 1e-5, "softmax at voxel {v}");
        assert!((prob.data[v] + prob.data[numel(vol) + v] - 1.0).abs() < 1e-5);
    }

    // Flip of a tensor is an index mapping.
    let t = rand_t(&mut rng, &[2, 8, 5, 6, 7], 1.0, 0.0);
    let f = be.download(&be.flip(&be.upload(&t).unwrap(), [true, false, true]).unwrap()).unwrap();
    for s in 0..2 {
        for c in 0..8 {
            for i in 0..5 {
                for j in 0..6 {
                    for k in 0..7 {
                        let o = (((s * 8 + c) * 5 + i) * 6 + j) * 7 + k;
                        let from = (((s * 8 + c) * 5 + (4 - i)) * 6 + j) * 7 + (6 - k);
                        assert_eq!(f.data[o], t.data[from]);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// the whole network

fn compare_logits(what: &str, got: &HostTensor, want: &HostTensor) {
    check(what, got, want, 2e-2, 1.0);
    let (n, _, d) = want.ncdims().unwrap();
    let vox = numel(d);
    let (mut compared, mut differ) = (0usize, 0usize);
    for s in 0..n {
        for v in 0..vox {
            let (r0, r1) = (want.data[(s * 2) * vox + v], want.data[(s * 2 + 1) * vox + v]);
            if (r1 - r0).abs() > 0.05 {
                compared += 1;
                let (g0, g1) = (got.data[(s * 2) * vox + v], got.data[(s * 2 + 1) * vox + v]);
                if (g1 > g0) != (r1 > r0) {
                    differ += 1;
                }
            }
        }
    }
    eprintln!("{what}: argmax differs at {differ} of {compared} voxels with a logit margin > 0.05");
    assert_eq!(differ, 0, "{what}: argmax differs at {differ} of {compared} confident voxels");
}

#[test]
fn network_random_weights_matches_cpu_engine() {
    let Some(be) = gpu() else { return };
    let mut rng = Rng::fresh("gpu network");
    let seed = rng.next_u64();
    let sd = random_state_dict(seed);
    let gpu = Engine::new(be, &sd).unwrap();
    let cpu = Engine::new(CpuBackend::new(0).unwrap(), &sd).unwrap();
    for (n, dims) in [(2usize, [192usize, 192, 16]), (1, [200, 232, 18])] {
        let x = random_input(seed ^ 0x5eed, n, dims);
        let t0 = std::time::Instant::now();
        let want = cpu.forward(&x).unwrap();
        let t1 = std::time::Instant::now();
        let got = gpu.forward(&x).unwrap();
        eprintln!(
            "network n={n} {dims:?}: CPU engine {:.2} s, GPU (first call, with module loads) {:.3} s",
            (t1 - t0).as_secs_f64(),
            t1.elapsed().as_secs_f64()
        );
        compare_logits(&format!("network logits n={n} {dims:?} vs CPU engine"), &got.logits, &want.logits);
        for (name, g, w) in [("w0", &got.w0, &want.w0), ("w1", &got.w1, &want.w1), ("w2", &got.w2, &want.w2)] {
            check(&format!("network map {name} n={n} {dims:?}"), g, w, 2e-2, 0.2);
        }
    }
}

/// Directory of the packed GPU fixtures (scripts/gpu-check.sh): `weights_seed0.safetensors`
/// and the case files.
fn gpu_fixtures() -> Option<std::path::PathBuf> {
    match std::env::var_os("FMSEG_GPU_FIXTURES") {
        Some(p) => {
            let p = std::path::PathBuf::from(p);
            assert!(p.is_dir(), "FMSEG_GPU_FIXTURES={} is not a directory", p.display());
            Some(p)
        }
        None => {
            eprintln!("SKIPPED: FMSEG_GPU_FIXTURES not set (scripts/gpu-check.sh packs the checkpoint as safetensors)");
            None
        }
    }
}

fn read_safetensors(path: &std::path::Path) -> Vec<(String, HostTensor)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for (name, v) in st.tensors() {
        let data: Vec<f32> = match v.dtype() {
            safetensors::Dtype::F32 => {
                v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
            }
            safetensors::Dtype::F16 => {
                v.data().chunks_exact(2).map(|c| f16::from_le_bytes(c.try_into().unwrap()).to_f32()).collect()
            }
            safetensors::Dtype::F64 => {
                v.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
            }
            _ => continue,
        };
        out.push((name, HostTensor::new(v.shape().to_vec(), data).unwrap()));
    }
    out
}

const CASES: [&str; 2] = ["case_seed0_192x192x16.safetensors", "case_seed0_200x232x18.safetensors"];

/// The packed checkpoint, checked against the parameter catalog (every key, every shape).
fn load_packed_weights(dir: &std::path::Path) -> StateDict {
    let mut sd = StateDict::new();
    for (k, t) in read_safetensors(&dir.join("weights_seed0.safetensors")) {
        sd.insert(k, t);
    }
    for (key, shape) in fmseg::model::catalog::tensor_keys() {
        let t = sd.get(&key).unwrap_or_else(|| panic!("packed weights lack {key}"));
        assert_eq!(t.shape, shape, "packed weights: {key}");
        assert!(t.first_non_finite().is_none(), "packed weights: {key} has non-finite values");
    }
    sd
}

fn load_case(dir: &std::path::Path, case: &str) -> Vec<(String, HostTensor)> {
    let t = read_safetensors(&dir.join(case));
    let input = t.iter().find(|(n, _)| n == "input").unwrap_or_else(|| panic!("{case}: no input"));
    let logits = t.iter().find(|(n, _)| n == "logits").unwrap_or_else(|| panic!("{case}: no logits"));
    let (n, c, d) = input.1.ncdims().unwrap();
    assert_eq!((n, c), (1, 1), "{case}: input shape");
    assert_eq!(logits.1.shape, vec![1, 2, d[0], d[1], d[2]], "{case}: logits shape");
    t
}

/// Needs no GPU: checks the files scripts/gpu-check.sh packed (run there before they travel).
#[test]
fn packed_fixtures_are_valid() {
    let Some(dir) = gpu_fixtures() else { return };
    let sd = load_packed_weights(&dir);
    eprintln!("packed weights: {} tensors", sd.len());
    for case in CASES {
        let t = load_case(&dir, case);
        eprintln!("{case}: {:?}", t.iter().map(|(n, v)| (n.as_str(), v.shape.clone())).collect::<Vec<_>>());
    }
}

/// Needs no GPU: the float32 CPU engine on the packed (fp16-rounded) weights and input. Shows
/// how much of the GPU's error budget the fp16 rounding of weights and input alone takes.
#[test]
fn cpu_engine_on_packed_fixtures() {
    let Some(dir) = gpu_fixtures() else { return };
    let engine = Engine::new(CpuBackend::new(0).unwrap(), &load_packed_weights(&dir)).unwrap();
    let t = load_case(&dir, CASES[0]);
    let get = |k: &str| t.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
    let logits = engine.logits(&get("input")).unwrap();
    compare_logits("CPU engine, fp16-rounded weights and input", &logits, &get("logits"));
}

#[test]
fn network_reference_checkpoint_matches_fixture() {
    let Some(dir) = gpu_fixtures() else { return };
    let sd = load_packed_weights(&dir);
    let Some(be) = gpu() else { return };
    let engine = Engine::new(be, &sd).unwrap();
    for case in CASES {
        let t = load_case(&dir, case);
        let get = |k: &str| {
            t.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("{case}: no {k}"))
        };
        let out = engine.forward(&get("input")).unwrap();
        compare_logits(&format!("fixture {case} logits"), &out.logits, &get("logits"));
        for (name, g) in [("w0", &out.w0), ("w1", &out.w1), ("w2", &out.w2)] {
            if t.iter().any(|(n, _)| n == name) {
                check(&format!("fixture {case} map {name}"), g, &get(name), 2e-2, 0.2);
            }
        }
    }
}

/// One forward pass of the whole network at the smallest size it accepts, checked only for
/// finite outputs: the run compute-sanitizer (memcheck, racecheck) watches.
#[test]
#[ignore = "run by scripts/gpu-check.sh under compute-sanitizer"]
fn network_sanitizer_pass() {
    let Some(be) = gpu() else { return };
    let sd = random_state_dict(7);
    let engine = Engine::new(be, &sd).unwrap();
    let out = engine.forward(&random_input(11, 1, [192, 192, 16])).unwrap();
    for (name, t) in [("logits", &out.logits), ("w0", &out.w0), ("w1", &out.w1), ("w2", &out.w2)] {
        assert!(t.first_non_finite().is_none(), "{name} has non-finite values");
    }
}

/// Milliseconds per 192x192x16 patch at batch 1, 4, 8: the forward pass on the device (input
/// already uploaded, logits left on the device, one synchronisation per pass), median of
/// repeated passes after warm-up; and end to end through `Engine::logits` (upload, forward,
/// download). Prints a table; the numbers are for the report, not asserted.
#[test]
#[ignore = "benchmark: run by scripts/gpu-check.sh"]
fn gpu_bench() {
    let Some(be) = gpu() else { return };
    be.set_poison_outputs(false);
    let sd = random_state_dict(1);
    let engine = Engine::new(be, &sd).unwrap();
    let dims = [192, 192, 16];
    let flops = fmseg::model::cost::forward_flops(dims).unwrap();
    let be = engine.backend();
    let mut rows = Vec::new();
    for n in [1usize, 4, 8] {
        let x = random_input(n as u64, n, dims);
        let xt = be.upload(&x).unwrap();
        for _ in 0..3 {
            let out = engine.model().forward(be, &xt).unwrap();
            drop(out);
        }
        be.synchronize().unwrap();
        let iters = if n == 1 { 30 } else { 12 };
        let mut times = Vec::new();
        for _ in 0..iters {
            let t0 = std::time::Instant::now();
            let out = engine.model().forward(be, &xt).unwrap();
            be.synchronize().unwrap();
            times.push(t0.elapsed().as_secs_f64());
            drop(out);
        }
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        let t0 = std::time::Instant::now();
        let e2e_iters = 3;
        for _ in 0..e2e_iters {
            std::hint::black_box(engine.logits(&x).unwrap());
        }
        let e2e = t0.elapsed().as_secs_f64() / e2e_iters as f64;
        rows.push((n, med, times[0], e2e));
    }
    let (used, cached, peak) = be.memory_usage();
    println!("GPU BENCH {} | patch 192x192x16, {:.1} GFLOP/patch", be.name(), flops / 1e9);
    println!(
        "GPU BENCH {:>5} {:>12} {:>12} {:>10} {:>9} {:>14}",
        "batch", "ms/patch", "best", "patches/s", "TFLOP/s", "e2e ms/patch"
    );
    for (n, med, best, e2e) in rows {
        println!(
            "GPU BENCH {:>5} {:>12.3} {:>12.3} {:>10.1} {:>9.1} {:>14.3}",
            n,
            med * 1e3 / n as f64,
            best * 1e3 / n as f64,
            n as f64 / med,
            flops * n as f64 / med / 1e12,
            e2e * 1e3 / n as f64
        );
    }
    println!(
        "GPU BENCH pool: {:.0} MiB in use, {:.0} MiB cached, peak {:.0} MiB",
        used as f64 / 1048576.0,
        cached as f64 / 1048576.0,
        peak as f64 / 1048576.0
    );
}

// ---------------------------------------------------------------------------------------
// planned arena and CUDA graphs (backend::arena, engine::graphed)

/// Bitwise equality of two tensors, reporting how many values differ.
fn assert_bit_identical(what: &str, got: &HostTensor, want: &HostTensor) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let differ = got.data.iter().zip(&want.data).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    eprintln!("{what}: {differ} of {} values differ bitwise", got.data.len());
    assert_eq!(differ, 0, "{what}: {differ} of {} values differ bitwise", got.data.len());
    assert!(got.first_non_finite().is_none(), "{what}: non-finite values");
}

/// For batch 1 and 8: the pool's eager logits, then through `GraphedForward` with graphs off
/// (the recorded pass, then a pass over the planned arena) and on (the recorded pass, then
/// graph replays): every result bit-identical to the eager one, a new input after the first
/// replays gives that input's logits, and replays make no `Pool::alloc` call.
#[test]
fn arena_and_graph_passes_are_bit_identical_to_the_pool_pass() {
    use fmseg::engine::GraphedForward;
    let Some(be) = gpu() else { return };
    be.set_poison_outputs(false);
    let sd = random_state_dict(21);
    let dims = [192, 192, 16];
    let eager = Engine::new(be, &sd).unwrap();
    for n in [1usize, 8] {
        let xs = [random_input(100 + n as u64, n, dims), random_input(200 + n as u64, n, dims)];
        let want: Vec<HostTensor> = xs.iter().map(|x| eager.logits(x).unwrap()).collect();
        for graphs in [false, true] {
            let mode = if graphs { "graph" } else { "arena" };
            let mut gf =
                GraphedForward::new(Engine::new(CudaBackend::new().unwrap(), &sd).unwrap()).with_graphs(graphs);
            assert_bit_identical(&format!("batch {n} {mode}: recorded pass"), &gf.run(&xs[0]).unwrap(), &want[0]);
            assert_eq!(gf.has_graph(n, dims), graphs);
            let plan = gf.plan(n, dims).unwrap();
            let predicted = fmseg::model::cost::planned_arena_bytes(dims, n).unwrap();
            eprintln!(
                "batch {n} {mode}: arena {} bytes (shape-only prediction {predicted}), {} buffers",
                plan.size,
                plan.blocks.len()
            );
            let allocs = gf.engine().backend().alloc_count();
            for (round, i) in [0usize, 1, 0, 1].into_iter().enumerate() {
                let got = gf.run(&xs[i]).unwrap();
                assert_bit_identical(&format!("batch {n} {mode}: pass {round} on input {i}"), &got, &want[i]);
            }
            let during = gf.engine().backend().alloc_count() - allocs;
            if graphs {
                assert_eq!(during, 0, "batch {n}: {during} Pool::alloc calls during graph replays");
            } else {
                eprintln!("batch {n} arena: {during} planned allocations in 4 passes");
                assert_eq!(during, 4 * gf.plan(n, dims).unwrap().blocks.len() as u64);
            }
            eprintln!("batch {n} {mode}: {} bytes held for the shape", gf.device_bytes());
        }
    }
}

/// The shape-only backend's trace (what `planned_arena_bytes` plans from, without a GPU) is
/// the trace the CUDA pool records, event for event, so the predicted arena is the real one.
#[test]
fn arena_trace_of_the_shape_backend_matches_the_device() {
    use fmseg::engine::GraphedForward;
    let Some(be) = gpu() else { return };
    be.set_poison_outputs(false);
    let mut gf = GraphedForward::new(Engine::new(be, &random_state_dict(3)).unwrap()).with_graphs(false);
    for (n, dims) in [(2usize, [192usize, 192, 16]), (1, [200, 232, 18])] {
        gf.run(&random_input(9, n, dims)).unwrap();
        let device = gf.plan(n, dims).unwrap();
        let predicted = fmseg::model::cost::forward_plan(dims, n).unwrap();
        let first = device.events.iter().zip(&predicted.events).position(|(a, b)| a != b);
        assert!(
            first.is_none() && device.events.len() == predicted.events.len(),
            "n={n} {dims:?}: traces differ at event {first:?} (device {} events, shape-only {}): device {:?} vs {:?}",
            device.events.len(),
            predicted.events.len(),
            first.map(|i| device.events[i]),
            first.and_then(|i| predicted.events.get(i))
        );
        assert_eq!(device.size, predicted.size);
        eprintln!(
            "n={n} {dims:?}: device trace of {} events = shape-only trace; arena {} bytes",
            device.events.len(),
            device.size
        );
    }
}

/// A pass that asks for other buffers than the recorded one (here: outputs poisoned, so
/// `attend` no longer works in place) is refused with an error naming the divergence, and
/// the engine works again once the pass matches.
#[test]
fn arena_divergence_is_an_error_and_recoverable() {
    use fmseg::engine::GraphedForward;
    let Some(be) = gpu() else { return };
    be.set_poison_outputs(false);
    let sd = random_state_dict(4);
    let x = random_input(5, 1, [192, 192, 16]);
    let mut gf = GraphedForward::new(Engine::new(be, &sd).unwrap()).with_graphs(false);
    let first = gf.run(&x).unwrap();
    gf.engine().backend().set_poison_outputs(true);
    let e = gf.run(&x).unwrap_err().to_string();
    eprintln!("diverged pass: {e}");
    assert!(e.contains("diverged"), "{e}");
    gf.engine().backend().set_poison_outputs(false);
    assert_bit_identical("after a diverged pass", &gf.run(&x).unwrap(), &first);
}

/// The clinical pipeline on a synthetic study (MONAI preprocessing, sliding window with
/// Gaussian blending, mask back on the study's own grid) with the CUDA engine against the
/// CPU engine: the same argmax wherever the CPU's blended logits differ by more than 0.05,
/// and the number of differing voxels on the original grid reported.
#[test]
fn pipeline_on_a_phantom_study_matches_cpu_engine() {
    use fmseg::pipeline::postprocess::postprocess;
    use fmseg::pipeline::preprocess::{preprocess, PreprocessConfig};
    use fmseg::pipeline::window::{sliding_window, WindowConfig};

    let Some(be) = gpu() else { return };
    be.set_poison_outputs(false);
    let sd = gpu_fixtures().map(|d| load_packed_weights(&d)).unwrap_or_else(|| random_state_dict(5));
    let case = fmseg::phantom::generate_case(3, &fmseg::phantom::PhantomConfig::default());
    let pre = preprocess(&case.image, &PreprocessConfig::default()).unwrap();
    let cfg = WindowConfig { sw_batch: 4, ..WindowConfig::default() };
    let cpu = Engine::new(CpuBackend::new(0).unwrap(), &sd).unwrap();
    let gpu = Engine::new(be, &sd).unwrap();
    let run = |e: &dyn Fn(&HostTensor) -> fmseg::Result<HostTensor>| {
        let mut m = |x: &HostTensor| e(x);
        sliding_window(&pre.volume.data, pre.volume.dims, &mut m, &cfg, &mut |_| {}).unwrap()
    };
    let t0 = std::time::Instant::now();
    let want = run(&|x| cpu.logits(x));
    let t1 = std::time::Instant::now();
    let got = run(&|x| gpu.logits(x));
    eprintln!(
        "phantom study {:?} -> preprocessed {:?}: CPU engine {:.2} s, CUDA engine {:.3} s",
        case.image.dims,
        pre.volume.dims,
        (t1 - t0).as_secs_f64(),
        t1.elapsed().as_secs_f64()
    );
    compare_logits("phantom study blended logits, CUDA vs CPU engine", &got, &want);
    let (mc, mg) = (postprocess(&want, &pre.chain).unwrap().mask, postprocess(&got, &pre.chain).unwrap().mask);
    assert_eq!(mc.dims, case.image.dims);
    assert_eq!(mc.affine, mg.affine);
    let differ = mc.data.iter().zip(&mg.data).filter(|(a, b)| a != b).count();
    let fg = mc.data.iter().filter(|&&v| v > 0.5).count();
    eprintln!(
        "phantom study mask on the original grid: {differ} of {} voxels differ (CPU foreground {fg})",
        mc.data.len()
    );
}

/// The study resident on the device (windows cut and blended by kernels, flips as mirrored
/// origins, one blend per frame kind) against the host study pipeline driving the same GPU
/// engine batch by batch: 2 checkpoints x (1 + 3 x 1) TTA passes on a phantom study, whose
/// window grid is not mirror-symmetric in general. Same kernels for the network, so the only
/// differences are f32 blending order and normalisation: rel L2 < 1e-5.
#[test]
fn study_on_the_device_matches_the_host_study() {
    use fmseg::pipeline::preprocess::{preprocess, PreprocessConfig};
    use fmseg::pipeline::study;
    use fmseg::pipeline::tta::TtaConfig;
    use fmseg::pipeline::window::{Predictor, WindowConfig};

    let Some(be) = gpu() else { return };
    be.set_poison_outputs(false);
    let (sa, sb) = (random_state_dict(7), random_state_dict(8));
    let case = fmseg::phantom::generate_case(4, &fmseg::phantom::PhantomConfig::default());
    let pre = preprocess(&case.image, &PreprocessConfig::default()).unwrap();
    let (img, dims) = (&pre.volume.data, pre.volume.dims);
    let window = WindowConfig { sw_batch: 3, ..WindowConfig::default() };
    let tta = TtaConfig { rounds: 1, noise_std: 0.1, sample_std: true, seed: 11 };
    let a = Engine::new(be, &sa).unwrap();
    let mb = fmseg::model::Unet25d::new(a.backend(), &sb).unwrap();
    let be = a.backend();

    let t0 = std::time::Instant::now();
    let mut fa = |x: &HostTensor| a.logits(x);
    let mut fb = |x: &HostTensor| {
        let out = mb.forward(be, &be.upload(x)?)?;
        be.download(&out.logits)
    };
    let mut models: [&mut dyn Predictor; 2] = [&mut fa, &mut fb];
    let want = study::infer(img, dims, &mut models, &window, Some(&tta), &mut |_| {}).unwrap();
    let t1 = std::time::Instant::now();
    let mut seen = Vec::new();
    let plan = study::StudyPlan::new(dims, 2, &window, Some(&tta)).unwrap();
    let got = be.infer_study(&plan, &[a.model(), &mb], img, &mut |p| seen.push(p.done)).unwrap();
    eprintln!(
        "study {:?}: {} windows x {} passes; host pipeline {:.3} s, device-resident {:.3} s",
        dims,
        plan.windows.len(),
        plan.passes.len(),
        (t1 - t0).as_secs_f64(),
        t1.elapsed().as_secs_f64()
    );
    assert_eq!(got.shape, want.shape);
    assert_eq!(seen.last(), Some(&plan.total_windows()));
    let e = rel_l2(&got.data, &want.data);
    eprintln!("device study vs host study: rel L2 {e:.2e}, max abs {:.2e}", max_abs_diff(&got.data, &want.data));
    assert!(e < 1e-5, "rel L2 {e}");
    // a too-small image is refused, not padded silently
    let small = study::StudyPlan::new([10, 5, 2], 1, &window, None).unwrap();
    assert!(be.infer_study(&small, &[a.model()], &img[..100], &mut |_| {}).is_err());
    assert!(be.infer_study(&plan, &[a.model()], img, &mut |_| {}).is_err(), "model count differs from the plan");
}
