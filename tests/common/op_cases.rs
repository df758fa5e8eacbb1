//! The op-test matrix: every forward op of the `Backend` trait as one case table, each case
//! checked against the float64 oracle (`fmseg::backend::cpu::reference`) on every backend
//! present: the CPU engine (`tests/ops/op_matrix.rs`, tests `op_<op>`), the CUDA engine
//! (`tests/gpu.rs`, the same `op_<op>` names) and, for the cases marked `grad`, the gradient
//! tape's backward against central finite differences of the same oracle
//! (`tests/ops/train_ops.rs`, tests `grad_<op>`).
//!
//! An op is one [`OpCase`] type: how a case draws its arguments, how it runs on any backend,
//! what the oracle says, and per backend family what is expected ([`Tol`]: a tolerance, or a
//! refusal where the backend does not implement the configuration). Inputs are uniform random
//! on odd sizes, fresh each run (the seed is printed; replay with `FMSEG_TEST_SEED`). On CUDA
//! every argument is rounded to fp16 before the oracle sees it (the GPU stores them so) and
//! outputs are poisoned with NaN before each launch, so an unwritten element fails.
//!
//! Adding an op: its oracle in `reference.rs`, a case type and table here, an `op_<op>` test in
//! each backend's file (one line each) and, for a backward, a `grad_<op>` test.

use super::Rng;

use fmseg::backend::cpu::reference::{self as oracle, Tensor64};
use fmseg::backend::{Backend, ConvSpec, ConvTSpec};
use fmseg::tensor::{Dims, HostTensor};

// ---------------------------------------------------------------------------------------
// expectations

/// Which column of a case's [`Tol`] a backend is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// float32 kernels, float32 storage: the CPU engine and the gradient tape over it.
    Cpu,
    /// fp16 storage, fp32 accumulation: the CUDA engine.
    Cuda,
}

/// What a backend must do with a case.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Want {
    /// Every value finite, relative L2 error against the oracle at most `rel_l2` and, where
    /// given, the largest absolute error at most `max_abs` times the largest |oracle value|.
    Close { rel_l2: f64, max_abs: Option<f64> },
    /// An error, never a result: a configuration the backend does not implement.
    Refused,
}

/// A case's expectation on each backend family.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tol {
    pub cpu: Want,
    pub cuda: Want,
}

impl Tol {
    pub fn of(&self, f: Family) -> Want {
        match f {
            Family::Cpu => self.cpu,
            Family::Cuda => self.cuda,
        }
    }
}

/// The CPU engine: relative L2 only (its errors are float32 roundings spread evenly).
pub const fn cpu(rel_l2: f64) -> Want {
    Want::Close { rel_l2, max_abs: None }
}

/// The CPU engine on ops that only select or copy values (max pool, concat): exact.
pub const EXACT: Want = cpu(0.0);

// The CUDA engine. Its inputs are fp16-exact (the oracle sees the rounded values), so these
// measure the kernels: fp32 accumulation and the fp16 rounding of each stored result (2^-11
// relative).
/// One rounding (pools, resize, elementwise).
pub const ONE_ROUNDING: Want = Want::Close { rel_l2: 1e-3, max_abs: Some(2e-3) };
/// Convolutions: fp16 operands on the tensor cores, long fp32 sums.
pub const CONV: Want = Want::Close { rel_l2: 2e-3, max_abs: Some(4e-3) };
/// Chains through a pending (lazily applied) norm: two roundings and the statistics.
pub const CHAIN: Want = Want::Close { rel_l2: 4e-3, max_abs: Some(1e-2) };

// ---------------------------------------------------------------------------------------
// the case interface and the runners

/// A case's arguments: the tensors uploaded to the backend, in the op's order, then the layer
/// parameters (conv weights and biases) by the key the tape reports their gradients under.
pub struct Args {
    pub inputs: Vec<HostTensor>,
    pub params: Vec<(String, HostTensor)>,
}

/// One op's case.
pub trait OpCase {
    /// The op's name: `op_<OP>` and `grad_<OP>` tests, and every message.
    const OP: &'static str;
    /// Shapes and flags, for messages.
    fn label(&self) -> String;
    fn tol(&self) -> Tol;
    /// Whether the tape's backward is checked on this case by finite differences (small
    /// enough for some 600 oracle calls per argument).
    fn grad(&self) -> bool;
    /// Relative L2 allowed between the tape's float32 gradients and float64 finite differences.
    fn grad_tol(&self) -> f64 {
        1e-4
    }
    /// Arguments drawn from `rng`.
    fn args(&self, rng: &mut Rng) -> Args;
    /// The op on `be`, given the uploaded inputs and the host parameters.
    fn run<B: Backend>(&self, be: &B, x: Vec<B::Tensor>, p: &[HostTensor]) -> fmseg::Result<B::Tensor>;
    /// The float64 oracle of the same arguments.
    fn oracle(&self, x: &[Tensor64], p: &[Tensor64]) -> Tensor64;
}

/// `tol()` and `grad()` from the case's `tol` and `grad` fields.
macro_rules! tol_and_grad_fields {
    () => {
        fn tol(&self) -> Tol {
            self.tol
        }
        fn grad(&self) -> bool {
            self.grad
        }
    };
}

/// Compares a backend's output with the oracle; panics naming the case, the worst index and
/// both values.
pub fn compare(what: &str, got: &HostTensor, want: &Tensor64, rel_l2: f64, max_abs: Option<f64>) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    if let Some(i) = got.first_non_finite() {
        let bad = got.data.iter().filter(|v| !v.is_finite()).count();
        panic!(
            "{what}: {bad} non-finite output value(s) (unwritten or overflow), the first at flat index {i} of shape {:?}",
            got.shape
        );
    }
    let (mut num, mut den, mut worst, mut worst_i) = (0f64, 0f64, 0f64, 0usize);
    for (i, (&g, &w)) in got.data.iter().zip(&want.data).enumerate() {
        let d = (g as f64 - w).abs();
        num += d * d;
        den += w * w;
        if d > worst {
            (worst, worst_i) = (d, i);
        }
    }
    let e = (num / den.max(f64::MIN_POSITIVE)).sqrt();
    let scale = want.data.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-6);
    let m = worst / scale;
    let max_txt = max_abs.map_or(String::new(), |t| format!(", max abs/scale {m:.2e} (tol {t:.0e})"));
    eprintln!("{what}: rel L2 {e:.2e} (tol {rel_l2:.0e}){max_txt}");
    if e > rel_l2 || max_abs.is_some_and(|t| m > t) {
        panic!(
            "{what}: rel L2 {e:.3e} (tol {rel_l2:.0e}){max_txt}; worst flat index {worst_i} of shape {:?}: got {} want {}",
            got.shape, got.data[worst_i], want.data[worst_i]
        );
    }
}

/// Runs case tables on backends of one family.
pub struct Runner<'a, B: Backend> {
    family: Family,
    /// Variants of one backend (the CPU engine with and without Winograd), by label.
    backends: Vec<(&'static str, &'a B)>,
    /// What the backend stores arguments as (fp16 on the GPU), applied before upload and oracle.
    round: fn(&mut HostTensor),
    rng: Rng,
}

impl<'a, B: Backend> Runner<'a, B> {
    pub fn new(family: Family, backends: Vec<(&'static str, &'a B)>, round: fn(&mut HostTensor), label: &str) -> Self {
        Runner { family, backends, round, rng: Rng::fresh(label) }
    }

    /// Every case on every backend variant; the oracle once per case.
    pub fn check<C: OpCase>(&mut self, cases: &[C]) {
        assert!(!cases.is_empty(), "{}: no cases", C::OP);
        for (i, case) in cases.iter().enumerate() {
            let mut args = case.args(&mut self.rng);
            args.inputs.iter_mut().chain(args.params.iter_mut().map(|(_, t)| t)).for_each(self.round);
            let params: Vec<HostTensor> = args.params.iter().map(|(_, t)| t.clone()).collect();
            let want = case.tol().of(self.family);
            let oracle = matches!(want, Want::Close { .. }).then(|| {
                let x: Vec<Tensor64> = args.inputs.iter().map(Tensor64::from).collect();
                let p: Vec<Tensor64> = params.iter().map(Tensor64::from).collect();
                case.oracle(&x, &p)
            });
            for &(name, be) in &self.backends {
                let what = format!("{} case {i} ({}) on {name}", C::OP, case.label());
                let xs: Vec<B::Tensor> = args
                    .inputs
                    .iter()
                    .map(|x| be.upload(x).unwrap_or_else(|e| panic!("{what}: upload: {e}")))
                    .collect();
                let got = case.run(be, xs, &params).and_then(|y| be.download(&y));
                match (want, got) {
                    (Want::Refused, Err(e)) => eprintln!("{what}: refused as expected: {e}"),
                    (Want::Refused, Ok(_)) => panic!("{what}: expected an error, got a result"),
                    (Want::Close { .. }, Err(e)) => panic!("{what}: {e}"),
                    (Want::Close { rel_l2, max_abs }, Ok(y)) => {
                        compare(&what, &y, oracle.as_ref().expect("oracle computed"), rel_l2, max_abs)
                    }
                }
            }
        }
    }
}

/// The backward of every `grad` case on the gradient tape: its forward output against the
/// oracle (the CPU tolerance), then the gradient of `L = sum(y * r)` (fixed random `r`) with
/// respect to every input and parameter against central differences `(L(a+h) - L(a-h)) / 2h`
/// of the float64 oracle. Tolerance: relative L2 1e-4 per tensor (the analytic side is float32).
pub fn check_grads<C: OpCase>(cases: &[C]) {
    use fmseg::backend::cpu::CpuBackend;
    use fmseg::train::tape::{TapeBackend, Var};

    let mut rng = Rng::fresh(&format!("grad_{}", C::OP));
    let mut checked = 0;
    for (i, case) in cases.iter().enumerate().filter(|(_, c)| c.grad()) {
        let what = format!("{} case {i} ({})", C::OP, case.label());
        let t = TapeBackend::new(CpuBackend::new(2).unwrap());
        let args = case.args(&mut rng);
        let params: Vec<HostTensor> = args.params.iter().map(|(_, p)| p.clone()).collect();
        let leaves: Vec<Var> = args.inputs.iter().map(|x| t.upload(x).unwrap()).collect();
        let y = case.run(&t, leaves.clone(), &params).unwrap_or_else(|e| panic!("{what}: {e}"));
        let x64: Vec<Tensor64> = args.inputs.iter().map(Tensor64::from).collect();
        let p64: Vec<Tensor64> = params.iter().map(Tensor64::from).collect();
        let yh = t.download(&y).unwrap();
        let Want::Close { rel_l2, max_abs } = case.tol().cpu else { panic!("{what}: a grad case the CPU refuses") };
        compare(&format!("{what} forward on the tape"), &yh, &case.oracle(&x64, &p64), rel_l2, max_abs);

        let r = rng.tensor(&yh.shape);
        let g = t.backward(vec![(&y, t.cpu().upload(&r).unwrap())]).unwrap();
        let loss = |x: &[Tensor64], p: &[Tensor64]| -> f64 {
            case.oracle(x, p).data.iter().zip(&r.data).map(|(a, b)| a * *b as f64).sum()
        };
        for (j, leaf) in leaves.iter().enumerate() {
            let analytic = t.cpu().download(g.of(leaf).unwrap_or_else(|| panic!("{what}: input {j} has no gradient")));
            fd_check(&format!("{what} d/d input {j}"), &x64[j].data, &analytic.unwrap().data, case.grad_tol(), &|v| {
                let mut x = x64.clone();
                x[j].data.copy_from_slice(v);
                loss(&x, &p64)
            });
        }
        let keys: Vec<&String> = args.params.iter().map(|(k, _)| k).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(g.params.keys().collect::<Vec<_>>(), sorted, "{what}: parameters with a gradient");
        for (j, key) in keys.iter().enumerate() {
            fd_check(&format!("{what} d/d {key}"), &p64[j].data, &g.params[*key], case.grad_tol(), &|v| {
                let mut p = p64.clone();
                p[j].data.copy_from_slice(v);
                loss(&x64, &p)
            });
        }
        checked += 1;
    }
    assert!(checked > 0, "{}: no case is marked for the gradient check", C::OP);
}

/// Central differences of `f` at `x`, compared with `analytic`: relative L2 below `tol` over an
/// evenly spread subset of about 300 entries.
pub fn fd_check(what: &str, x: &[f64], analytic: &[f32], tol: f64, f: &dyn Fn(&[f64]) -> f64) {
    assert_eq!(x.len(), analytic.len(), "{what}: gradient length");
    let h = 1e-6;
    let (mut num, mut den) = (0f64, 0f64);
    let mut xp = x.to_vec();
    let step = x.len().div_ceil(300);
    for i in (0..x.len()).step_by(step) {
        xp[i] = x[i] + h;
        let a = f(&xp);
        xp[i] = x[i] - h;
        let b = f(&xp);
        xp[i] = x[i];
        let fd = (a - b) / (2.0 * h);
        num += (fd - analytic[i] as f64).powi(2);
        den += fd * fd;
    }
    let e = (num / den.max(1e-300)).sqrt();
    eprintln!("{what}: rel L2 {e:.2e} over {} of {} entries", x.len().div_ceil(step), x.len());
    assert!(den > 0.0, "{what}: the gradient is identically zero, the check proves nothing");
    assert!(e < tol, "{what}: analytic gradient vs finite differences, rel L2 {e:.3e} (tol {tol:.0e})");
}

/// Errors, not panics, for arguments no backend accepts.
pub fn shape_errors<B: Backend>(be: &B, rng: &mut Rng) {
    let x = be.upload(&rng.tensor(&[1, 8, 4, 4, 4])).unwrap();
    let y = be.upload(&rng.tensor(&[1, 8, 4, 4, 3])).unwrap();
    let w = rng.tensor(&[4, 16, 3, 3, 3]);
    let conv = be.prepare_conv("test", ConvSpec { cin: 16, cout: 4, k: [3, 3, 3], bias: false }, &w, None).unwrap();
    assert!(be.conv(&x, &conv).is_err(), "conv with the wrong channel count");
    assert!(be.sum(&[&x, &y], false).is_err(), "sum of different shapes");
    assert!(be.attend(be.upload(&rng.tensor(&[1, 8, 4, 4, 4])).unwrap(), &y).is_err(), "attend: map of another size");
    assert!(be.max_pool(&x, [8, 1, 1]).is_err(), "pool larger than the input");
}

// ---------------------------------------------------------------------------------------
// helpers for the cases

fn shape(n: usize, c: usize, d: Dims) -> [usize; 5] {
    [n, c, d[0], d[1], d[2]]
}

/// Uniform in [-scale, scale).
fn rand(rng: &mut Rng, shape: &[usize], scale: f32) -> HostTensor {
    let mut t = rng.tensor(shape);
    t.data.iter_mut().for_each(|v| *v *= scale);
    t
}

/// Conv weights uniform in +-1/sqrt(fan-in) (outputs of the inputs' size, whatever the width).
fn weight(rng: &mut Rng, shape: &[usize], fan_in: usize) -> HostTensor {
    rand(rng, shape, 1.0 / (fan_in as f32).sqrt())
}

/// The input as an op sees it after `instance_norm(x, None, relu)` when `pending` is
/// `Some(relu)`: the CUDA engine keeps that norm pending and applies it as the next kernel
/// loads (the network's conv -> norm -> op chains).
fn pending<B: Backend>(be: &B, x: B::Tensor, pending: Option<bool>) -> fmseg::Result<B::Tensor> {
    match pending {
        Some(relu) => be.instance_norm(x, None, relu),
        None => Ok(x),
    }
}

fn pending64(x: &Tensor64, pending: Option<bool>) -> Tensor64 {
    match pending {
        Some(relu) => oracle::instance_norm(x, None, relu),
        None => x.clone(),
    }
}

fn pending_label(p: Option<bool>) -> &'static str {
    match p {
        Some(true) => " of a pending norm+relu",
        Some(false) => " of a pending norm",
        None => "",
    }
}

/// The conv kernel shapes of the network.
pub const KERNELS: [Dims; 8] = [[3, 3, 1], [1, 1, 3], [3, 3, 3], [3, 1, 1], [1, 3, 1], [1, 3, 3], [3, 1, 3], [1, 1, 1]];

// ---------------------------------------------------------------------------------------
// conv

pub struct ConvCase {
    pub n: usize,
    pub cin: usize,
    pub cout: usize,
    pub k: Dims,
    pub dims: Dims,
    pub bias: bool,
    pub grad: bool,
    pub tol: Tol,
}

impl OpCase for ConvCase {
    const OP: &'static str = "conv";
    fn label(&self) -> String {
        let ConvCase { n, cin, cout, k, dims, bias, .. } = self;
        format!("k={k:?} {cin}->{cout} dims={dims:?} n={n} bias={bias}")
    }
    tol_and_grad_fields!();
    fn args(&self, rng: &mut Rng) -> Args {
        let spec = self.spec();
        let x = rand(rng, &shape(self.n, self.cin, self.dims), 1.0);
        let mut params = vec![("c.weight".into(), weight(rng, &spec.weight_shape(), self.cin * spec.taps()))];
        if self.bias {
            params.push(("c.bias".into(), rand(rng, &[self.cout], 0.5)));
        }
        Args { inputs: vec![x], params }
    }
    fn run<B: Backend>(&self, be: &B, x: Vec<B::Tensor>, p: &[HostTensor]) -> fmseg::Result<B::Tensor> {
        let conv = be.prepare_conv("c", self.spec(), &p[0], p.get(1))?;
        be.conv(&x[0], &conv)
    }
    fn oracle(&self, x: &[Tensor64], p: &[Tensor64]) -> Tensor64 {
        oracle::conv3d(&x[0], &p[0], p.get(1).map(|b| &b.data[..]))
    }
}

impl ConvCase {
    fn spec(&self) -> ConvSpec {
        ConvSpec { cin: self.cin, cout: self.cout, k: self.k, bias: self.bias }
    }
}

/// CPU: float32 accumulation over at most Cin x taps = 6912 products (Winograd's transforms
/// included), 1e-5. CUDA: fp16 operands, fp32 sums.
const CONV_TOL: Tol = Tol { cpu: cpu(1e-5), cuda: CONV };

pub fn conv() -> Vec<ConvCase> {
    let mut v = Vec::new();
    // Every kernel shape x channel pairs that reach every kernel variant: on the CPU the
    // 1-channel input, 16-channel panels and a partial one, the 1- and 2-channel outputs; on
    // CUDA the tensor-core tiles BN = 16, 32, 64 (and several N blocks), the direct kernel for
    // Cin = 1, Cout = 1, 2, the 8-channel group and the 32-channel group with a partial group.
    // Odd sizes (one thinner than the kernel), batch 1 and 2, a quarter without bias.
    let channels = [(1, 32), (3, 5), (17, 16), (32, 33), (16, 1), (32, 2), (32, 32), (64, 64), (32, 16), (64, 128)];
    let channels = channels.into_iter().chain([(24, 40), (256, 64)]);
    let dims = [[7, 9, 5], [5, 3, 6], [4, 11, 3], [2, 1, 8], [3, 3, 2], [13, 11, 3], [9, 7, 16]];
    for (ci, (cin, cout)) in channels.enumerate() {
        for (ki, k) in KERNELS.into_iter().enumerate() {
            let (n, d, bias) = (1 + (ki + ci) % 2, dims[(ki + ci) % dims.len()], (ki + ci) % 4 != 3);
            v.push(ConvCase { n, cin, cout, k, dims: d, bias, grad: false, tol: CONV_TOL });
        }
    }
    // Wide channels, no bias.
    v.push(ConvCase {
        n: 1,
        cin: 70,
        cout: 130,
        k: [3, 3, 3],
        dims: [5, 4, 3],
        bias: false,
        grad: false,
        tol: CONV_TOL,
    });
    // 3 x 3000 voxels: 23 full 128-row GPU tiles and a partial one, several samples.
    for (cin, cout, k) in [(32, 32, [3, 3, 1]), (64, 64, [3, 3, 3]), (128, 64, [1, 1, 3]), (1, 32, [3, 3, 1])] {
        v.push(ConvCase { n: 3, cin, cout, k, dims: [15, 20, 10], bias: true, grad: false, tol: CONV_TOL });
    }
    // The CPU's Winograd 3x3x1 and 3x3x3 on odd sizes: partial tiles on every side.
    for (dims, cin, cout, kd) in WINOGRAD {
        v.push(ConvCase { n: 2, cin, cout, k: [3, 3, kd], dims, bias: true, grad: false, tol: CONV_TOL });
    }
    // Backward: every kernel shape, the 1-channel input layer, a bias-free conv, and widths past
    // one 16-channel panel.
    for k in KERNELS {
        v.push(ConvCase { n: 2, cin: 3, cout: 4, k, dims: [5, 4, 3], bias: true, grad: true, tol: CONV_TOL });
    }
    for (cin, cout, k, bias) in [(1, 5, [3, 3, 1], true), (4, 3, [1, 1, 1], false), (17, 18, [3, 3, 1], true)] {
        v.push(ConvCase { n: 2, cin, cout, k, dims: [5, 4, 3], bias, grad: true, tol: CONV_TOL });
    }
    // The classifier's linear head: a 1x1x1 conv on the pooled (N, C, 1, 1, 1) vector, image
    // only (64) and with the clinical features (73), and its backward.
    for (n, cin, grad) in [(1, 64, false), (4, 73, false), (3, 13, true)] {
        v.push(ConvCase { n, cin, cout: 1, k: [1, 1, 1], dims: [1, 1, 1], bias: true, grad, tol: CONV_TOL });
    }
    v
}

/// (dims, Cin, Cout, kD) that put Winograd's tiles across odd edges.
/// The engine runs F(4x4, 3x3) on planes of at least 24x24 with up to 256 channels in and out
/// together (the last two cases: 4x4 tiles cut by every edge), F(2x2, 3x3) otherwise (the
/// others; the third-last for its channels).
const WINOGRAD: [(Dims, usize, usize, usize); 12] = [
    ([7, 9, 6], 8, 5, 1),
    ([5, 4, 7], 17, 33, 1),
    ([2, 3, 16], 32, 32, 1),
    ([9, 2, 6], 40, 70, 1),
    ([3, 5, 13], 12, 16, 1),
    ([5, 7, 4], 9, 17, 3),
    ([4, 3, 8], 64, 40, 3),
    ([7, 5, 9], 16, 6, 3),
    ([3, 3, 4], 8, 8, 3),
    ([6, 11, 6], 200, 72, 3),
    ([26, 25, 5], 32, 32, 1),
    ([25, 27, 6], 24, 40, 3),
];

// ---------------------------------------------------------------------------------------
// conv_norm

/// `relu?(instance_norm(conv(x)) + residual)`, and with `then` a second conv (`then` output
/// channels, same kernel) that reads the result: on CUDA it applies the pending norm as it loads.
pub struct ConvNormCase {
    pub n: usize,
    pub cin: usize,
    pub cout: usize,
    pub k: Dims,
    pub dims: Dims,
    pub bias: bool,
    pub residual: bool,
    pub relu: bool,
    pub then: Option<usize>,
    pub grad: bool,
    pub tol: Tol,
}

impl OpCase for ConvNormCase {
    const OP: &'static str = "conv_norm";
    fn label(&self) -> String {
        let ConvNormCase { n, cin, cout, k, dims, bias, residual, relu, then, .. } = self;
        let then = then.map_or(String::new(), |c| format!(" -> conv ->{c}"));
        format!("k={k:?} {cin}->{cout} dims={dims:?} n={n} bias={bias} residual={residual} relu={relu}{then}")
    }
    tol_and_grad_fields!();
    fn args(&self, rng: &mut Rng) -> Args {
        let taps = self.k.iter().product::<usize>();
        let mut inputs = vec![rand(rng, &shape(self.n, self.cin, self.dims), 1.0)];
        if self.residual {
            inputs.push(rand(rng, &shape(self.n, self.cout, self.dims), 1.0));
        }
        let mut params = vec![(
            "c.weight".into(),
            weight(rng, &[self.cout, self.cin, self.k[0], self.k[1], self.k[2]], self.cin * taps),
        )];
        if self.bias {
            // Larger than the conv's spread: the norm's mean must cancel it.
            params.push(("c.bias".into(), rand(rng, &[self.cout], 2.0)));
        }
        if let Some(c2) = self.then {
            params.push((
                "d.weight".into(),
                weight(rng, &[c2, self.cout, self.k[0], self.k[1], self.k[2]], self.cout * taps),
            ));
            params.push(("d.bias".into(), rand(rng, &[c2], 0.5)));
        }
        Args { inputs, params }
    }
    fn run<B: Backend>(&self, be: &B, x: Vec<B::Tensor>, p: &[HostTensor]) -> fmseg::Result<B::Tensor> {
        let spec = ConvSpec { cin: self.cin, cout: self.cout, k: self.k, bias: self.bias };
        let conv = be.prepare_conv("c", spec, &p[0], self.bias.then(|| &p[1]))?;
        let y = be.conv_norm(&x[0], &conv, x.get(1), self.relu)?;
        match self.then {
            None => Ok(y),
            Some(c2) => {
                let spec = ConvSpec { cin: self.cout, cout: c2, k: self.k, bias: true };
                let q = &p[p.len() - 2..];
                be.conv(&y, &be.prepare_conv("d", spec, &q[0], Some(&q[1]))?)
            }
        }
    }
    fn oracle(&self, x: &[Tensor64], p: &[Tensor64]) -> Tensor64 {
        let b = self.bias.then(|| &p[1].data[..]);
        let y = oracle::conv_norm(&x[0], &p[0], b, x.get(1), self.relu);
        match self.then {
            None => y,
            Some(_) => oracle::conv3d(&y, &p[p.len() - 2], Some(&p[p.len() - 1].data)),
        }
    }
}

pub fn conv_norm() -> Vec<ConvNormCase> {
    // CPU: the conv's 1e-5 (the norm adds float32 statistics). CUDA: the norm is applied by
    // whatever reads the result (the download's materialising pass, or the next conv): CHAIN.
    let tol = Tol { cpu: cpu(1e-5), cuda: CHAIN };
    let case = |n, cin, cout, k, dims, residual, relu, then| ConvNormCase {
        n,
        cin,
        cout,
        k,
        dims,
        bias: true,
        residual,
        relu,
        then,
        grad: false,
        tol,
    };
    let mut v = Vec::new();
    // The CPU's fused conv + norm (statistics from the conv's epilogue).
    for (k, cin, cout, res, relu) in [
        ([3, 3, 1], 5, 16, true, true),
        ([1, 1, 3], 8, 33, false, true),
        ([3, 1, 1], 16, 1, false, false),
        ([1, 1, 1], 32, 2, true, false),
    ] {
        v.push(case(2, cin, cout, k, [7, 9, 5], res, relu, None));
    }
    // Winograd's epilogue statistics.
    for (dims, cin, cout, kd) in WINOGRAD {
        v.push(case(2, cin, cout, [3, 3, kd], dims, false, true, None));
    }
    // conv -> norm (-> ReLU) (+ residual) -> conv: on CUDA the pending norm is applied by the
    // second conv while it loads (tensor-core and direct kernels), or by the residual pass.
    for (c0, c1, c2, k) in [
        (1, 32, 32, [3, 3, 1]),
        (32, 64, 64, [3, 3, 3]),
        (32, 16, 1, [3, 1, 1]),
        (64, 32, 2, [1, 1, 1]),
        (32, 32, 16, [1, 3, 1]),
    ] {
        for relu in [true, false] {
            for res in [false, true] {
                v.push(case(2, c0, c1, k, [11, 9, 7], res, relu, None));
                v.push(case(2, c0, c1, k, [11, 9, 7], res, relu, Some(c2)));
            }
        }
    }
    // Backward (the tape composes conv and norm); no bias: its gradient is zero before a norm.
    for (cin, cout, k, residual, relu) in [(3, 4, [3, 3, 1], true, true), (2, 3, [1, 1, 3], false, true)] {
        v.push(ConvNormCase { bias: false, grad: true, ..case(2, cin, cout, k, [5, 4, 3], residual, relu, None) });
    }
    v
}

// ---------------------------------------------------------------------------------------
// instance_norm

/// `relu?(instance_norm(x) + residual)` on `x = U * scale + offset + ch_offset * channel`.
pub struct NormCase {
    pub n: usize,
    pub c: usize,
    pub dims: Dims,
    pub scale: f32,
    pub offset: f32,
    pub ch_offset: f32,
    pub residual: bool,
    pub relu: bool,
    pub pending: Option<bool>,
    pub grad: bool,
    pub tol: Tol,
}

impl OpCase for NormCase {
    const OP: &'static str = "instance_norm";
    fn label(&self) -> String {
        let NormCase { n, c, dims, scale, offset, ch_offset, residual, relu, pending, .. } = self;
        format!(
            "c={c} dims={dims:?} n={n} x=U*{scale}+{offset}+{ch_offset}*ch residual={residual} relu={relu}{}",
            pending_label(*pending)
        )
    }
    tol_and_grad_fields!();
    fn args(&self, rng: &mut Rng) -> Args {
        let mut x = rand(rng, &shape(self.n, self.c, self.dims), self.scale);
        let vox = self.dims.iter().product::<usize>();
        for (i, v) in x.data.iter_mut().enumerate() {
            *v += self.offset + self.ch_offset * ((i / vox) % self.c) as f32;
        }
        let mut inputs = vec![x];
        if self.residual {
            inputs.push(rand(rng, &shape(self.n, self.c, self.dims), 1.0));
        }
        Args { inputs, params: Vec::new() }
    }
    fn run<B: Backend>(&self, be: &B, x: Vec<B::Tensor>, _: &[HostTensor]) -> fmseg::Result<B::Tensor> {
        let mut x = x.into_iter();
        let a = pending(be, x.next().expect("input"), self.pending)?;
        be.instance_norm(a, x.next().as_ref(), self.relu)
    }
    fn oracle(&self, x: &[Tensor64], _: &[Tensor64]) -> Tensor64 {
        oracle::instance_norm(&pending64(&x[0], self.pending), x.get(1), self.relu)
    }
}

pub fn instance_norm() -> Vec<NormCase> {
    let flags = [(false, false), (false, true), (true, true), (true, false)];
    let mut v = Vec::new();
    // A large per-channel offset (up to 200) against a small spread (0.01): the variance must
    // stay exact (one-pass sum / sum-of-squares statistics cancel catastrophically). On CUDA the
    // fp16 inputs round channels 1-4 to constants: there it checks the zero-variance path.
    for (residual, relu) in flags {
        let tol = Tol { cpu: cpu(1e-5), cuda: ONE_ROUNDING };
        let (scale, offset, ch_offset) = (0.01, 0.0, 50.0);
        let (pending, grad) = (None, false);
        v.push(NormCase { n: 2, c: 5, dims: [9, 7, 3], scale, offset, ch_offset, residual, relu, pending, grad, tol });
    }
    // A mean 60x the spread, on the GPU's channel groups (8, a partial 3, 64).
    for (c, dims) in [(8, [17, 13, 9]), (3, [5, 7, 4]), (64, [12, 12, 8])] {
        for (residual, relu) in flags {
            let tol = Tol { cpu: cpu(1e-5), cuda: ONE_ROUNDING };
            let (scale, offset, ch_offset) = (1.0, 60.0, 0.0);
            let (pending, grad) = (None, false);
            v.push(NormCase { n: 2, c, dims, scale, offset, ch_offset, residual, relu, pending, grad, tol });
        }
        // The norm of a tensor that has a pending norm + ReLU itself, plus a residual.
        let tol = Tol { cpu: cpu(1e-5), cuda: CHAIN };
        let (scale, offset, ch_offset, residual, relu, grad) = (1.0, 60.0, 0.0, true, false, false);
        v.push(NormCase { n: 2, c, dims, scale, offset, ch_offset, residual, relu, pending: Some(true), grad, tol });
    }
    // Backward.
    for (residual, relu) in flags {
        let tol = Tol { cpu: cpu(1e-5), cuda: ONE_ROUNDING };
        let (scale, offset, ch_offset) = (1.0, 0.0, 0.0);
        v.push(NormCase {
            n: 2,
            c: 3,
            dims: [5, 4, 3],
            scale,
            offset,
            ch_offset,
            residual,
            relu,
            pending: None,
            grad: true,
            tol,
        });
    }
    v
}

// ---------------------------------------------------------------------------------------
// max_pool

pub struct MaxPoolCase {
    pub n: usize,
    pub c: usize,
    pub dims: Dims,
    pub k: Dims,
    pub pending: Option<bool>,
    pub grad: bool,
    pub tol: Tol,
}

impl OpCase for MaxPoolCase {
    const OP: &'static str = "max_pool";
    fn label(&self) -> String {
        let MaxPoolCase { n, c, dims, k, pending, .. } = self;
        format!("k={k:?} c={c} dims={dims:?} n={n}{}", pending_label(*pending))
    }
    tol_and_grad_fields!();
    fn args(&self, rng: &mut Rng) -> Args {
        Args { inputs: vec![rand(rng, &shape(self.n, self.c, self.dims), 1.0)], params: Vec::new() }
    }
    fn run<B: Backend>(&self, be: &B, mut x: Vec<B::Tensor>, _: &[HostTensor]) -> fmseg::Result<B::Tensor> {
        be.max_pool(&pending(be, x.remove(0), self.pending)?, self.k)
    }
    fn oracle(&self, x: &[Tensor64], _: &[Tensor64]) -> Tensor64 {
        oracle::max_pool(&pending64(&x[0], self.pending), self.k)
    }
}

pub fn max_pool() -> Vec<MaxPoolCase> {
    // A max selects one of its inputs: exact on the CPU; one rounding on CUDA. Through a
    // pending norm, the norm's tolerance.
    let (plain, after_norm) = (Tol { cpu: EXACT, cuda: ONE_ROUNDING }, Tol { cpu: cpu(1e-5), cuda: CHAIN });
    let mut v = Vec::new();
    // The network's pools on sizes that leave a remainder.
    for (k, dims) in [
        ([2, 2, 1], [9, 7, 5]),
        ([2, 2, 2], [7, 9, 5]),
        ([4, 4, 4], [13, 12, 9]),
        ([12, 1, 1], [13, 14, 9]),
        ([1, 12, 1], [12, 14, 9]),
        ([1, 1, 8], [12, 14, 9]),
    ] {
        v.push(MaxPoolCase { n: 2, c: 3, dims, k, pending: None, grad: false, tol: plain });
    }
    // The same on CUDA's 8-channel vectors and its scalar path, also of a pending norm + ReLU.
    for (k, dims) in [
        ([2, 2, 1], [13, 9, 5]),
        ([2, 2, 2], [7, 10, 9]),
        ([4, 4, 4], [9, 13, 10]),
        ([12, 1, 1], [12, 5, 3]),
        ([1, 12, 1], [5, 25, 3]),
        ([1, 1, 8], [4, 3, 17]),
    ] {
        for c in [16, 3] {
            v.push(MaxPoolCase { n: 2, c, dims, k, pending: None, grad: false, tol: plain });
            v.push(MaxPoolCase { n: 2, c, dims, k, pending: Some(true), grad: false, tol: after_norm });
        }
    }
    // Backward.
    for (dims, k) in [([5, 4, 3], [2, 2, 1]), ([5, 4, 3], [2, 2, 2]), ([7, 4, 3], [3, 1, 1]), ([4, 5, 7], [1, 1, 3])] {
        v.push(MaxPoolCase { n: 2, c: 3, dims, k, pending: None, grad: true, tol: plain });
    }
    v
}

// ---------------------------------------------------------------------------------------
// adaptive_avg_pool

pub struct AdaptivePoolCase {
    pub n: usize,
    pub c: usize,
    pub dims: Dims,
    pub out: Dims,
    pub grad: bool,
    pub tol: Tol,
}

impl OpCase for AdaptivePoolCase {
    const OP: &'static str = "adaptive_avg_pool";
    fn label(&self) -> String {
        let AdaptivePoolCase { n, c, dims, out, .. } = self;
        format!("c={c} {dims:?}->{out:?} n={n}")
    }
    tol_and_grad_fields!();
    fn args(&self, rng: &mut Rng) -> Args {
        Args { inputs: vec![rand(rng, &shape(self.n, self.c, self.dims), 1.0)], params: Vec::new() }
    }
    fn run<B: Backend>(&self, be: &B, x: Vec<B::Tensor>, _: &[HostTensor]) -> fmseg::Result<B::Tensor> {
        be.adaptive_avg_pool(&x[0], self.out)
    }
    fn oracle(&self, x: &[Tensor64], _: &[Tensor64]) -> Tensor64 {
        oracle::adaptive_avg_pool(&x[0], self.out)
    }
}

pub fn adaptive_avg_pool() -> Vec<AdaptivePoolCase> {
    // Float32 means of at most a few dozen values.
    let tol = Tol { cpu: cpu(1e-5), cuda: ONE_ROUNDING };
    let mut v = Vec::new();
    // Exact halves, and windows that overlap (PyTorch's floor/ceil bounds).
    for (dims, out) in
        [([12, 12, 8], [6, 6, 4]), ([12, 14, 9], [6, 7, 4]), ([25, 29, 18], [12, 14, 9]), ([5, 3, 7], [2, 1, 3])]
    {
        v.push(AdaptivePoolCase { n: 2, c: 4, dims, out, grad: false, tol });
    }
    // CUDA's channel groups (16 and 8 vectorised, 1 and 2 scalar), halves of odd sizes.
    for (c, dims) in [(16, [25, 23, 17]), (8, [12, 12, 8]), (1, [9, 7, 5]), (2, [6, 6, 4])] {
        v.push(AdaptivePoolCase { n: 2, c, dims, out: [dims[0] / 2, dims[1] / 2, dims[2] / 2], grad: false, tol });
    }
    // Backward.
    for (dims, out) in [([5, 4, 3], [2, 2, 1]), ([6, 4, 2], [3, 2, 1])] {
        v.push(AdaptivePoolCase { n: 2, c: 3, dims, out, grad: true, tol });
    }
    // Global average pooling (the classifier's): its last stage (64 x 12x12x4), its stem's exact
    // 2x2x1 halving, odd grids, and the backward.
    let global = Tol { cpu: cpu(1e-5), cuda: ONE_ROUNDING };
    for (c, dims, n) in [(64, [12, 12, 4], 2), (16, [9, 7, 5], 1), (1, [24, 24, 4], 3)] {
        v.push(AdaptivePoolCase { n, c, dims, out: [1, 1, 1], grad: false, tol: global });
    }
    v.push(AdaptivePoolCase { n: 2, c: 2, dims: [16, 12, 4], out: [8, 6, 4], grad: false, tol });
    v.push(AdaptivePoolCase { n: 2, c: 3, dims: [4, 3, 2], out: [1, 1, 1], grad: true, tol });
    v
}

// ---------------------------------------------------------------------------------------
// resize_trilinear

pub struct ResizeCase {
    pub n: usize,
    pub c: usize,
    pub dims: Dims,
    pub out: Dims,
    pub pending: Option<bool>,
    pub grad: bool,
    pub tol: Tol,
}

impl OpCase for ResizeCase {
    const OP: &'static str = "resize_trilinear";
    fn label(&self) -> String {
        let ResizeCase { n, c, dims, out, pending, .. } = self;
        format!("c={c} {dims:?}->{out:?} n={n}{}", pending_label(*pending))
    }
    tol_and_grad_fields!();
    fn args(&self, rng: &mut Rng) -> Args {
        Args { inputs: vec![rand(rng, &shape(self.n, self.c, self.dims), 1.0)], params: Vec::new() }
    }
    fn run<B: Backend>(&self, be: &B, mut x: Vec<B::Tensor>, _: &[HostTensor]) -> fmseg::Result<B::Tensor> {
        be.resize_trilinear(&pending(be, x.remove(0), self.pending)?, self.out)
    }
    fn oracle(&self, x: &[Tensor64], _: &[Tensor64]) -> Tensor64 {
        oracle::resize_trilinear(&pending64(&x[0], self.pending), self.out)
    }
}

pub fn resize_trilinear() -> Vec<ResizeCase> {
    // CPU: eight float32 products per value, 1e-6; through a pending norm, the norm's 1e-5.
    let (plain, after_norm) = (Tol { cpu: cpu(1e-6), cuda: ONE_ROUNDING }, Tol { cpu: cpu(1e-5), cuda: CHAIN });
    let mut v = Vec::new();
    // The network's upsamplings (x2, to odd sizes) and a size-1 axis.
    for (dims, out) in [
        ([6, 6, 4], [12, 12, 8]),
        ([1, 12, 8], [12, 12, 8]),
        ([3, 3, 2], [12, 14, 9]),
        ([6, 7, 4], [12, 14, 9]),
        ([12, 1, 9], [12, 14, 9]),
    ] {
        v.push(ResizeCase { n: 2, c: 3, dims, out, pending: None, grad: false, tol: plain });
    }
    // CUDA's channel groups: up to odd sizes, the identity, down to a size-1 axis, and up from
    // a pending norm. From 25 voxels the CPU's source coordinates (float32 like PyTorch's, off
    // by up to half an ulp of 24 = 1e-6) take the error past 1e-6.
    for (c, d) in [(16, [25, 23, 17]), (8, [12, 12, 8]), (1, [9, 7, 5]), (2, [6, 6, 4])] {
        let tol = if d[0] > 16 { Tol { cpu: cpu(1e-5), ..plain } } else { plain };
        for out in [[d[0] * 2 + 1, d[1] + 3, d[2] * 2], d, [1, d[1] + 1, 3]] {
            v.push(ResizeCase { n: 2, c, dims: d, out, pending: None, grad: false, tol });
        }
        let out = [d[0] + 5, d[1] + 2, d[2] + 1];
        v.push(ResizeCase { n: 2, c, dims: d, out, pending: Some(false), grad: false, tol: after_norm });
    }
    // Backward.
    for (dims, out) in [([3, 2, 2], [5, 4, 3]), ([2, 3, 1], [4, 5, 2])] {
        v.push(ResizeCase { n: 2, c: 3, dims, out, pending: None, grad: true, tol: plain });
    }
    v
}

// ---------------------------------------------------------------------------------------
// up_add

/// `skip + replicate_pad_end(conv_transpose(x), skip size)`, the skip `extra` larger than the
/// upsampled `x` per axis.
pub struct UpAddCase {
    pub n: usize,
    pub cin: usize,
    pub cout: usize,
    pub k: Dims,
    pub dims: Dims,
    pub extra: Dims,
    pub grad: bool,
    pub tol: Tol,
}

impl OpCase for UpAddCase {
    const OP: &'static str = "up_add";
    fn label(&self) -> String {
        let UpAddCase { n, cin, cout, k, dims, .. } = self;
        format!("k={k:?} {cin}->{cout} {dims:?}->{:?} n={n}", self.skip_dims())
    }
    tol_and_grad_fields!();
    fn args(&self, rng: &mut Rng) -> Args {
        let spec = ConvTSpec { cin: self.cin, cout: self.cout, k: self.k };
        let x = rand(rng, &shape(self.n, self.cin, self.dims), 1.0);
        let skip = rand(rng, &shape(self.n, self.cout, self.skip_dims()), 1.0);
        let w = weight(rng, &spec.weight_shape(), self.cin);
        let b = rand(rng, &[self.cout], 0.5);
        Args { inputs: vec![x, skip], params: vec![("u.weight".into(), w), ("u.bias".into(), b)] }
    }
    fn run<B: Backend>(&self, be: &B, x: Vec<B::Tensor>, p: &[HostTensor]) -> fmseg::Result<B::Tensor> {
        let ct = be.prepare_conv_t("u", ConvTSpec { cin: self.cin, cout: self.cout, k: self.k }, &p[0], &p[1])?;
        be.up_add(&x[0], &ct, &x[1])
    }
    fn oracle(&self, x: &[Tensor64], p: &[Tensor64]) -> Tensor64 {
        oracle::up_add(&x[0], &p[0], &p[1].data, &x[1])
    }
}

impl UpAddCase {
    fn skip_dims(&self) -> Dims {
        let (d, k, e) = (self.dims, self.k, self.extra);
        [d[0] * k[0] + e[0], d[1] * k[1] + e[1], d[2] * k[2] + e[2]]
    }
}

pub fn up_add() -> Vec<UpAddCase> {
    // CPU: a float32 sum over Cin products plus the skip, 1e-5. CUDA runs transposed convs on
    // the tensor cores only (Cin % 32 == 0, Cout % 16 == 0) and must refuse the rest.
    let (narrow, wide) = (Tol { cpu: cpu(1e-5), cuda: Want::Refused }, Tol { cpu: cpu(1e-5), cuda: CONV });
    let mut v = Vec::new();
    for (k, dims, extra) in
        [([2, 2, 2], [3, 4, 3], [0, 1, 1]), ([2, 2, 1], [5, 3, 4], [1, 0, 0]), ([2, 2, 1], [4, 4, 3], [0, 0, 0])]
    {
        v.push(UpAddCase { n: 2, cin: 6, cout: 5, k, dims, extra, grad: false, tol: narrow });
    }
    // The decoder's widths (every BN tile), with the high edge replicated on every axis subset.
    for (cin, cout, k) in
        [(256, 128, [2, 2, 2]), (128, 64, [2, 2, 1]), (64, 32, [2, 2, 1]), (32, 32, [2, 2, 1]), (64, 16, [2, 2, 2])]
    {
        for extra in [[0, 0, 0], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]] {
            v.push(UpAddCase { n: 2, cin, cout, k, dims: [6, 5, 4], extra, grad: false, tol: wide });
        }
    }
    // Backward.
    for (cin, cout, dims, k, extra) in [
        (4, 3, [2, 2, 2], [2, 2, 1], [1, 0, 0]),
        (3, 2, [2, 2, 2], [2, 2, 2], [0, 1, 1]),
        (2, 2, [3, 2, 2], [2, 2, 1], [0, 0, 0]),
    ] {
        v.push(UpAddCase { n: 2, cin, cout, k, dims, extra, grad: true, tol: narrow });
    }
    v
}

// ---------------------------------------------------------------------------------------
// sum

/// `relu?(sum)` of `terms` (indices into `max + 1` distinct inputs: a repeat is the same tensor
/// twice).
pub struct SumCase {
    pub n: usize,
    pub c: usize,
    pub dims: Dims,
    pub terms: &'static [usize],
    pub relu: bool,
    pub grad: bool,
    pub tol: Tol,
}

impl OpCase for SumCase {
    const OP: &'static str = "sum";
    fn label(&self) -> String {
        let SumCase { n, c, dims, terms, relu, .. } = self;
        format!("terms {terms:?} c={c} dims={dims:?} n={n} relu={relu}")
    }
    tol_and_grad_fields!();
    fn args(&self, rng: &mut Rng) -> Args {
        let distinct = self.terms.iter().max().expect("terms") + 1;
        Args {
            inputs: (0..distinct).map(|_| rand(rng, &shape(self.n, self.c, self.dims), 1.0)).collect(),
            params: vec![],
        }
    }
    fn run<B: Backend>(&self, be: &B, x: Vec<B::Tensor>, _: &[HostTensor]) -> fmseg::Result<B::Tensor> {
        be.sum(&self.terms.iter().map(|&i| &x[i]).collect::<Vec<_>>(), self.relu)
    }
    fn oracle(&self, x: &[Tensor64], _: &[Tensor64]) -> Tensor64 {
        oracle::sum(&self.terms.iter().map(|&i| &x[i]).collect::<Vec<_>>(), self.relu)
    }
}

pub fn sum() -> Vec<SumCase> {
    // CPU: float32 roundings of partial sums of size 1 (about 4e-8 for six terms), 1e-7.
    let tol = Tol { cpu: cpu(1e-7), cuda: ONE_ROUNDING };
    let mut v = vec![SumCase { n: 2, c: 3, dims: [5, 7, 3], terms: &[0, 1, 2], relu: true, grad: false, tol }];
    // CUDA's vectorised (32) and scalar channel counts; six terms take two launches there.
    for (c, dims) in [(32, [9, 11, 7]), (1, [13, 5, 3]), (3, [4, 6, 5])] {
        for relu in [false, true] {
            v.push(SumCase { n: 2, c, dims, terms: &[0, 1, 2], relu, grad: false, tol });
        }
        v.push(SumCase { n: 2, c, dims, terms: &[0, 1, 2, 0, 1, 2], relu: false, grad: false, tol });
    }
    // Backward.
    for relu in [false, true] {
        v.push(SumCase { n: 2, c: 3, dims: [5, 4, 3], terms: &[0, 1, 2], relu, grad: true, tol });
    }
    v
}

// ---------------------------------------------------------------------------------------
// sigmoid_sum

pub struct SigmoidSumCase {
    pub n: usize,
    pub c: usize,
    pub dims: Dims,
    pub grad: bool,
    pub tol: Tol,
}

impl OpCase for SigmoidSumCase {
    const OP: &'static str = "sigmoid_sum";
    fn label(&self) -> String {
        let SigmoidSumCase { n, c, dims, .. } = self;
        format!("c={c} dims={dims:?} n={n}")
    }
    tol_and_grad_fields!();
    fn args(&self, rng: &mut Rng) -> Args {
        let s = shape(self.n, self.c, self.dims);
        Args { inputs: vec![rand(rng, &s, 1.0), rand(rng, &s, 1.0)], params: vec![] }
    }
    fn run<B: Backend>(&self, be: &B, x: Vec<B::Tensor>, _: &[HostTensor]) -> fmseg::Result<B::Tensor> {
        be.sigmoid_sum(&x[0], &x[1])
    }
    fn oracle(&self, x: &[Tensor64], _: &[Tensor64]) -> Tensor64 {
        oracle::sigmoid_sum(&x[0], &x[1])
    }
}

pub fn sigmoid_sum() -> Vec<SigmoidSumCase> {
    // CPU: float32 exp and division, 1e-6.
    let tol = Tol { cpu: cpu(1e-6), cuda: ONE_ROUNDING };
    let mut v = vec![SigmoidSumCase { n: 2, c: 1, dims: [5, 7, 3], grad: false, tol }];
    for (c, dims) in [(32, [9, 11, 7]), (1, [13, 5, 3]), (3, [4, 6, 5])] {
        v.push(SigmoidSumCase { n: 2, c, dims, grad: false, tol });
    }
    v.push(SigmoidSumCase { n: 2, c: 1, dims: [5, 4, 3], grad: true, tol });
    v
}

// ---------------------------------------------------------------------------------------
// attend

/// `x * w + x` with a `wc`-channel map (1: broadcast over x's channels).
pub struct AttendCase {
    pub n: usize,
    pub c: usize,
    pub wc: usize,
    pub dims: Dims,
    pub pending_x: Option<bool>,
    pub pending_w: Option<bool>,
    pub grad: bool,
    pub tol: Tol,
}

impl OpCase for AttendCase {
    const OP: &'static str = "attend";
    fn label(&self) -> String {
        let AttendCase { n, c, wc, dims, pending_x, pending_w, .. } = self;
        format!(
            "c={c} map {wc} channel(s) dims={dims:?} n={n}: x{}, map{}",
            pending_label(*pending_x),
            pending_label(*pending_w)
        )
    }
    tol_and_grad_fields!();
    fn args(&self, rng: &mut Rng) -> Args {
        let x = rand(rng, &shape(self.n, self.c, self.dims), 1.0);
        let w = rand(rng, &shape(self.n, self.wc, self.dims), 1.0);
        Args { inputs: vec![x, w], params: vec![] }
    }
    fn run<B: Backend>(&self, be: &B, x: Vec<B::Tensor>, _: &[HostTensor]) -> fmseg::Result<B::Tensor> {
        let mut x = x.into_iter();
        let a = pending(be, x.next().expect("x"), self.pending_x)?;
        let w = pending(be, x.next().expect("map"), self.pending_w)?;
        be.attend(a, &w)
    }
    fn oracle(&self, x: &[Tensor64], _: &[Tensor64]) -> Tensor64 {
        oracle::attend(&pending64(&x[0], self.pending_x), &pending64(&x[1], self.pending_w))
    }
}

pub fn attend() -> Vec<AttendCase> {
    // CPU: one multiply-add, 1e-7; through pending norms, the norm's 1e-5.
    let plain = Tol { cpu: cpu(1e-7), cuda: ONE_ROUNDING };
    let after_norm = Tol { cpu: cpu(1e-5), cuda: CHAIN };
    let mut v = Vec::new();
    for wc in [1, 3] {
        v.push(AttendCase {
            n: 2,
            c: 3,
            wc,
            dims: [5, 7, 3],
            pending_x: None,
            pending_w: None,
            grad: false,
            tol: plain,
        });
    }
    // The network's use (a 1-channel map, both from norms), and a full map, on CUDA's channel
    // groups.
    for (c, dims) in [(32, [9, 11, 7]), (1, [13, 5, 3]), (3, [4, 6, 5])] {
        let (pending_x, pending_w) = (Some(true), Some(false));
        v.push(AttendCase { n: 2, c, wc: 1, dims, pending_x, pending_w, grad: false, tol: after_norm });
        v.push(AttendCase { n: 2, c, wc: c, dims, pending_x: None, pending_w: None, grad: false, tol: plain });
    }
    // Backward.
    for wc in [1, 3] {
        v.push(AttendCase {
            n: 2,
            c: 3,
            wc,
            dims: [5, 4, 3],
            pending_x: None,
            pending_w: None,
            grad: true,
            tol: plain,
        });
    }
    v
}

// ---------------------------------------------------------------------------------------
// concat

pub struct ConcatCase {
    pub n: usize,
    pub ca: usize,
    pub cb: usize,
    pub dims: Dims,
    pub grad: bool,
    pub tol: Tol,
}

impl OpCase for ConcatCase {
    const OP: &'static str = "concat";
    fn label(&self) -> String {
        let ConcatCase { n, ca, cb, dims, .. } = self;
        format!("{ca}+{cb} channels dims={dims:?} n={n}")
    }
    tol_and_grad_fields!();
    fn args(&self, rng: &mut Rng) -> Args {
        let a = rand(rng, &shape(self.n, self.ca, self.dims), 1.0);
        let b = rand(rng, &shape(self.n, self.cb, self.dims), 1.0);
        Args { inputs: vec![a, b], params: vec![] }
    }
    fn run<B: Backend>(&self, be: &B, x: Vec<B::Tensor>, _: &[HostTensor]) -> fmseg::Result<B::Tensor> {
        be.concat(&x[0], &x[1])
    }
    fn oracle(&self, x: &[Tensor64], _: &[Tensor64]) -> Tensor64 {
        oracle::concat(&x[0], &x[1])
    }
}

pub fn concat() -> Vec<ConcatCase> {
    // A copy: exact on the CPU.
    let tol = Tol { cpu: EXACT, cuda: ONE_ROUNDING };
    let mut v = vec![ConcatCase { n: 2, ca: 3, cb: 3, dims: [5, 7, 3], grad: false, tol }];
    // CUDA's vectorised path needs both counts divisible by 8.
    for (c, dims) in [(32, [9, 11, 7]), (1, [13, 5, 3]), (3, [4, 6, 5])] {
        v.push(ConcatCase { n: 2, ca: c, cb: 8, dims, grad: false, tol });
        v.push(ConcatCase { n: 2, ca: 8, cb: c, dims, grad: false, tol });
    }
    v.push(ConcatCase { n: 2, ca: 3, cb: 2, dims: [5, 4, 3], grad: true, tol });
    // The classifier joins 9 clinical features to 64 pooled ones on a 1x1x1 grid.
    v.push(ConcatCase { n: 4, ca: 64, cb: 9, dims: [1, 1, 1], grad: false, tol });
    v.push(ConcatCase { n: 2, ca: 5, cb: 9, dims: [1, 1, 1], grad: true, tol });
    v
}

// ---------------------------------------------------------------------------------------
// the axSpA classifier, whole

/// The classifier's whole graph (`fmseg::model::classifier`) as one op: its axSpA logit
/// against the same graph composed from the float64 oracle's ops, and on the tape its gradient
/// for every parameter and both inputs against finite differences. The input grid gives the
/// last stage 2x2x2 voxels at the smallest (an instance norm over one voxel is all zeros).
pub struct ClassifierCase {
    pub n: usize,
    pub dims: Dims,
    pub clinical: bool,
    pub grad: bool,
    pub tol: Tol,
}

impl ClassifierCase {
    fn spec(&self) -> fmseg::model::catalog::ClassifierSpec {
        fmseg::model::catalog::ClassifierSpec::new(self.clinical)
    }
}

impl OpCase for ClassifierCase {
    const OP: &'static str = "classifier";
    fn label(&self) -> String {
        let ClassifierCase { n, dims, clinical, .. } = self;
        format!("{} dims={dims:?} n={n}", if *clinical { "image+clinical" } else { "image" })
    }
    tol_and_grad_fields!();
    /// The first layers' weight gradients are sums over every voxel of terms that cancel (the
    /// instance norms after them remove each channel's mean and scale), accumulated in float32
    /// in an order that follows the threads' split of the work: measured 2e-4 to 5.1e-3 (worst
    /// with the smallest last stage, on a loaded machine). A wrong gradient is off by O(1).
    fn grad_tol(&self) -> f64 {
        1e-2
    }
    fn args(&self, rng: &mut Rng) -> Args {
        use fmseg::model::catalog::{CLASSIFIER_INPUT_CHANNELS, CLINICAL_FEATURES};
        let mut inputs = vec![rand(rng, &shape(self.n, CLASSIFIER_INPUT_CHANNELS, self.dims), 1.5)];
        if self.clinical {
            inputs.push(rand(rng, &shape(self.n, CLINICAL_FEATURES, [1, 1, 1]), 1.0));
        }
        let params = self
            .spec()
            .tensor_keys()
            .into_iter()
            .map(|(key, s)| {
                let t = if s.len() == 1 { rand(rng, &s, 0.5) } else { weight(rng, &s, s[1..].iter().product()) };
                (key, t)
            })
            .collect();
        Args { inputs, params }
    }
    fn run<B: Backend>(&self, be: &B, x: Vec<B::Tensor>, p: &[HostTensor]) -> fmseg::Result<B::Tensor> {
        let spec = self.spec();
        let mut sd = fmseg::weights::StateDict::new();
        for ((key, _), t) in spec.tensor_keys().into_iter().zip(p) {
            sd.insert(key, t.clone());
        }
        let model = fmseg::model::classifier::Classifier::new(be, spec, &sd)?;
        Ok(model.forward(be, &x[0], x.get(1))?.logit)
    }
    fn oracle(&self, x: &[Tensor64], p: &[Tensor64]) -> Tensor64 {
        let spec = self.spec();
        let mut h: Option<Tensor64> = None;
        for (i, stage) in spec.stages.iter().enumerate() {
            let pooled = match &h {
                None => {
                    let d = self.dims;
                    oracle::adaptive_avg_pool(&x[0], [d[0] / stage.pool[0], d[1] / stage.pool[1], d[2] / stage.pool[2]])
                }
                Some(prev) => oracle::max_pool(prev, stage.pool),
            };
            let a = oracle::conv_norm(&pooled, &p[2 * i], None, None, true);
            h = Some(oracle::conv_norm(&a, &p[2 * i + 1], None, Some(&a), true));
        }
        let pooled = oracle::adaptive_avg_pool(&h.expect("stages"), [1, 1, 1]);
        let joined = if self.clinical { oracle::concat(&pooled, &x[1]) } else { pooled };
        let k = 2 * spec.stages.len();
        oracle::conv3d(&joined, &p[k], Some(&p[k + 1].data))
    }
}

pub fn classifier() -> Vec<ClassifierCase> {
    // A chain of 8 conv-norms and 5 pools: CPU float32 1e-4; CUDA as the other chains.
    let tol = Tol { cpu: cpu(1e-4), cuda: CHAIN };
    vec![
        ClassifierCase { n: 2, dims: [192, 192, 16], clinical: false, grad: false, tol },
        ClassifierCase { n: 3, dims: [192, 192, 16], clinical: true, grad: false, tol },
        ClassifierCase { n: 1, dims: [50, 37, 9], clinical: true, grad: false, tol },
        ClassifierCase { n: 2, dims: [34, 32, 8], clinical: false, grad: false, tol },
        // One backward case (some 7,000 oracle passes): the clinical variant covers every layer.
        ClassifierCase { n: 2, dims: [48, 40, 8], clinical: true, grad: true, tol },
    ]
}
