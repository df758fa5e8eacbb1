//! Autograd-lite: a [`Backend`] that runs the CPU engine's forward ops and records, per op,
//! what its backward needs. The model graph (`crate::model`) runs on it unchanged, so training
//! differentiates exactly the function inference computes.
//!
//! Every tensor is a [`Var`]: an id on the tape and a shared handle on its value. An op's
//! record keeps handles on the values its backward reads (a conv its input, an instance norm
//! its normalised values, a pool its input...) and nothing else, so the memory plan is the set
//! of saved activations; each record is dropped as soon as the backward pass has used it.
//!
//! One activation is recomputed instead of kept: a convolution whose input is an instance
//! norm + ReLU (+ dropout) output keeps the norm's xhat, which the norm's backward needs
//! anyway, and rebuilds `relu(xhat) * mask` while padding it. At batch 2 that is one
//! full-resolution tensor fewer per such pair (peak RSS 4.8 -> 3.9 GB).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::backend::cpu::conv::{pad_input, pad_input_with, padded_len};
use crate::backend::cpu::{norm, CpuBackend, CpuConv, CpuConvT, CpuTensor};
use crate::backend::{Backend, ConvSpec, ConvTSpec, DropoutSite};
use crate::error::{Error, Result};
use crate::tensor::{numel, Dims, HostTensor};
use crate::train::grad_ops::{self, NormSaved};
use crate::train::winograd_grad;

/// A tensor on the tape.
#[derive(Clone)]
pub struct Var {
    id: usize,
    t: Arc<CpuTensor>,
    /// Set when the value is, to the bit, `relu(xhat) * scale` of a normalised tensor the tape
    /// keeps anyway (an instance norm + ReLU, possibly dropped out): a convolution reading this
    /// value then saves that recipe instead of a second full-size tensor.
    relu_of: Option<Arc<ReluOf>>,
    /// A constant (a training batch's image): nothing asks for its gradient, so a convolution
    /// reading it computes only its parameters' gradients.
    constant: bool,
}

/// `relu(xhat)`, times a per-(sample, channel) dropout scale when there is one.
struct ReluOf {
    xhat: Arc<CpuTensor>,
    scale: Option<Arc<Vec<f32>>>,
}

impl ReluOf {
    /// Writes this recipe's values for `src`, a run of whole voxels of sample `s`'s xhat.
    fn write(&self, s: usize, dst: &mut [f32], src: &[f32]) {
        let c = self.xhat.c;
        match &self.scale {
            // The same operations as the forward (`normalise_relu`, then `scale_channels`), so the
            // same floats.
            Some(m) => {
                let m = &m[s * c..][..c];
                for (d, x) in dst.chunks_exact_mut(c).zip(src.chunks_exact(c)) {
                    for ch in 0..c {
                        d[ch] = relu(x[ch]) * m[ch];
                    }
                }
            }
            None => dst.iter_mut().zip(src).for_each(|(d, &x)| *d = relu(x)),
        }
    }
}

#[inline(always)]
fn relu(x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        0.0
    }
}

/// What a convolution's backward reads its input from.
enum ConvInput {
    Tensor(Arc<CpuTensor>),
    Relu(Arc<ReluOf>),
}

impl ConvInput {
    fn of(x: &Var) -> Self {
        match &x.relu_of {
            Some(r) => ConvInput::Relu(r.clone()),
            None => ConvInput::Tensor(x.t.clone()),
        }
    }

    fn shape(&self) -> (usize, Dims) {
        let t = match self {
            ConvInput::Tensor(t) => t,
            ConvInput::Relu(r) => &r.xhat,
        };
        (t.n, t.dims)
    }

    /// Sample `s` zero-padded by `pad` into `out` (see `conv::pad_input`).
    fn pad_sample(&self, s: usize, c: usize, pad: Dims, out: &mut [f32]) {
        match self {
            ConvInput::Tensor(t) => pad_input(t.sample(s), t.dims, c, pad, out),
            ConvInput::Relu(r) => {
                pad_input_with(r.xhat.sample(s), r.xhat.dims, c, pad, out, |dst, src| r.write(s, dst, src))
            }
        }
    }

    /// Sample `s` as a slice: the tensor's own, or recomputed into `buf`.
    fn sample<'a>(&'a self, s: usize, buf: &'a mut Vec<f32>) -> &'a [f32] {
        match self {
            ConvInput::Tensor(t) => t.sample(s),
            ConvInput::Relu(r) => {
                let src = r.xhat.sample(s);
                buf.resize(src.len(), 0.0);
                r.write(s, buf, src);
                buf
            }
        }
    }
}

impl Var {
    pub fn id(&self) -> usize {
        self.id
    }
    pub fn value(&self) -> &CpuTensor {
        &self.t
    }
    /// Whether a convolution reading this value saves, instead of it, the normalised tensor it
    /// is recomputed from (see [`Var`]'s `relu_of`).
    pub fn recomputable(&self) -> bool {
        self.relu_of.is_some()
    }
}

/// A prepared convolution that knows its parameters' names.
pub struct TapeConv {
    layer: Arc<ConvRecord>,
    inner: CpuConv,
}

struct ConvRecord {
    name: String,
    spec: ConvSpec,
    /// PyTorch layout `(cout, cin, kH, kW, kD)`.
    weight: Vec<f32>,
}

pub struct TapeConvT {
    layer: Arc<ConvTRecord>,
    inner: CpuConvT,
}

struct ConvTRecord {
    name: String,
    spec: ConvTSpec,
    /// PyTorch layout `(cin, cout, kH, kW, kD)`.
    weight: Vec<f32>,
}

/// Output gradient in, `(input id, input gradient)` pairs out; parameter gradients go to the
/// context.
type BackwardFn = Box<dyn FnOnce(&Ctx<'_>, CpuTensor) -> Result<Vec<(usize, CpuTensor)>> + Send>;

struct Ctx<'a> {
    cpu: &'a CpuBackend,
    params: &'a Mutex<BTreeMap<String, Vec<f32>>>,
}

impl Ctx<'_> {
    fn add_param(&self, name: String, g: Vec<f32>) {
        let mut p = self.params.lock().unwrap_or_else(|e| e.into_inner());
        match p.get_mut(&name) {
            Some(acc) => acc.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
            None => {
                p.insert(name, g);
            }
        }
    }
}

/// The result of [`TapeBackend::backward`].
pub struct Gradients {
    leaves: HashMap<usize, CpuTensor>,
    /// Parameter gradients by checkpoint key, PyTorch layout.
    pub params: BTreeMap<String, Vec<f32>>,
    /// Backward time per op kind.
    pub seconds: Vec<(&'static str, f64)>,
}

impl Gradients {
    /// The gradient of a leaf (an uploaded tensor), if the loss depends on it.
    pub fn of(&self, v: &Var) -> Option<&CpuTensor> {
        self.leaves.get(&v.id)
    }
}

/// One recorded op: its kind (for timings) and its backward, `None` for a leaf.
struct Node {
    op: &'static str,
    backward: Option<BackwardFn>,
}

/// Training-mode `Dropout3d` as the reference applies it, after every conv -> instance norm ->
/// ReLU block (`_ConvINReLU3D`; the model calls [`Backend::dropout`] there): whole channels
/// zeroed with probability `p` per sample and the rest scaled by `1 / (1 - p)`. The reference
/// builds the encoders and decoders with the network's `dropout` (0.2 in its training) but
/// hard-codes 0.2 in the context block and the channel attention; the spatial attention has none.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Encoder and decoder blocks.
    pub p: f32,
    /// Context block and channel attention (the reference's fixed 0.2).
    pub fixed: f32,
    /// Masks are a function of this seed and the op's position on the tape.
    pub seed: u64,
}

impl Dropout {
    pub fn rate(&self, site: DropoutSite) -> f32 {
        match site {
            DropoutSite::Network => self.p,
            DropoutSite::Fixed => self.fixed,
        }
    }
}

/// The recording backend.
pub struct TapeBackend {
    cpu: CpuBackend,
    nodes: Mutex<Vec<Node>>,
    dropout: Mutex<Option<Dropout>>,
}

/// Freed buffers the tape's CPU backend keeps for the next step: above a batch-2 tape (about
/// 3.3 GiB live at its peak), so a step reuses the last step's pages instead of faulting fresh
/// ones in (without the pool a step takes 40 % longer).
pub const TAPE_BUFFER_LIMIT_BYTES: usize = 6 << 30;

impl TapeBackend {
    pub fn new(cpu: CpuBackend) -> Self {
        // The forward F(2x2, 3x3) only: see `CpuBackend::with_winograd_tile`.
        let cpu = cpu.with_winograd_tile(2);
        cpu.set_buffer_limit(TAPE_BUFFER_LIMIT_BYTES);
        TapeBackend { cpu, nodes: Mutex::new(Vec::new()), dropout: Mutex::new(None) }
    }

    /// Puts `x` on the tape as a constant: no gradient flows into it (`upload` puts a leaf
    /// whose gradient the backward returns).
    pub fn constant(&self, x: &HostTensor) -> Result<Var> {
        let mut v = self.record(self.cpu.upload(x)?, "input", None);
        v.constant = true;
        Ok(v)
    }

    /// Training-mode dropout for the next forward passes (`None`: off, as at inference).
    pub fn set_dropout(&self, d: Option<Dropout>) {
        *self.dropout.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }

    /// Per (sample, channel): 0 or `1 / (1 - p)`, drawn from the seed and the op's tape position.
    fn dropout_masks(&self, x_id: usize, site: DropoutSite, n: usize, c: usize) -> Option<Vec<f32>> {
        let d = (*self.dropout.lock().unwrap_or_else(|e| e.into_inner()))?;
        let p = d.rate(site);
        if p <= 0.0 {
            return None;
        }
        let mut rng = crate::model::init::SplitMix(d.seed ^ (x_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let keep = 1.0 / (1.0 - p);
        Some((0..n * c).map(|_| if (rng.unit() as f32) < p { 0.0 } else { keep }).collect())
    }

    pub fn cpu(&self) -> &CpuBackend {
        &self.cpu
    }

    /// Forgets everything recorded (a forward pass that will not be differentiated).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Node>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, t: CpuTensor, op: &'static str, backward: Option<BackwardFn>) -> Var {
        let mut nodes = self.lock();
        nodes.push(Node { op, backward });
        Var { id: nodes.len() - 1, t: Arc::new(t), relu_of: None, constant: false }
    }

    /// Records `y`, a resampling of `x` whose backward needs only the sizes:
    /// `backward(in_dims, c, out_dims, dy, dx)` per sample.
    fn record_resampling(
        &self,
        y: CpuTensor,
        op: &'static str,
        x: &Var,
        backward: fn(Dims, usize, Dims, &[f32], &mut [f32]),
    ) -> Var {
        let (xid, n, c, dims, out) = (x.id, x.t.n, x.t.c, x.t.dims, y.dims);
        self.record(
            y,
            op,
            Some(Box::new(move |ctx, dy| {
                let mut dx = ctx.cpu.tensor(n, c, dims);
                for s in 0..n {
                    backward(dims, c, out, dy.sample(s), sample_mut(&mut dx, s));
                }
                Ok(vec![(xid, dx)])
            })),
        )
    }

    /// For ops whose backward reads their own output: record first, then attach.
    fn attach(&self, v: &Var, backward: BackwardFn) {
        self.lock()[v.id].backward = Some(backward);
    }

    /// Records `y`, the output of `conv` on `x`.
    fn record_conv(&self, x: &Var, conv: &TapeConv, y: CpuTensor) -> Var {
        let (input, layer) = (ConvInput::of(x), conv.layer.clone());
        let xid = (!x.constant).then_some(x.id);
        self.record(y, "conv", Some(Box::new(move |ctx, dy| conv_backward(ctx, &layer, xid, &input, dy))))
    }

    /// Instance norm of `x` (by `stats` when the convolution gathered them), then the residual
    /// and ReLU: xhat in place in `x`'s buffer (kept for the backward when there is a ReLU) and
    /// the output beside it, in one pass.
    fn norm_with(
        &self,
        x: Var,
        residual: Option<&Var>,
        relu: bool,
        stats: Option<Vec<Vec<norm::Stats>>>,
    ) -> Result<Var> {
        let mut t = Arc::try_unwrap(x.t).unwrap_or_else(|shared| copy(&self.cpu, &shared));
        if let Some(r) = residual {
            check_like(&r.t, &t, "instance norm residual")?;
        }
        let c = t.c;
        let stats = match stats {
            Some(s) => s,
            None => self.cpu.install(|| (0..t.n).map(|s| norm::channel_stats(sample_mut(&mut t, s), c)).collect()),
        };
        let rs = |s: usize| residual.map(|r| r.t.sample(s));
        let (y, saved_xhat) = if relu {
            let mut y = self.cpu.tensor(t.n, c, t.dims);
            self.cpu.install(|| {
                for s in 0..t.n {
                    grad_ops::normalise_relu(sample_mut(&mut t, s), sample_mut(&mut y, s), c, &stats[s], rs(s));
                }
            });
            (y, Some(Arc::new(t)))
        } else {
            self.cpu.install(|| {
                for s in 0..t.n {
                    norm::apply(sample_mut(&mut t, s), c, &stats[s], rs(s), false);
                }
            });
            (t, None)
        };
        // The residual's values are read back only where xhat is not kept (`y - r`).
        let res = residual.map(|r| (r.id, saved_xhat.is_none().then(|| r.t.clone())));
        let xid = x.id;
        let mut out = self.record(y, "instance_norm", None);
        if let (Some(xhat), None) = (&saved_xhat, residual) {
            out.relu_of = Some(Arc::new(ReluOf { xhat: xhat.clone(), scale: None }));
        }
        // The backward reads the output (its ReLU mask, or xhat from it and the residual),
        // except after a ReLU without a residual: there xhat > 0 is the mask, and leaving the
        // output alone lets a dropout after it scale it in place.
        let mask_of = match &saved_xhat {
            Some(xh) if res.is_none() => xh.clone(),
            _ => out.t.clone(),
        };
        self.attach(
            &out,
            Box::new(move |ctx, mut dy| {
                let mut dx = ctx.cpu.tensor(dy.n, c, dy.dims);
                for s in 0..dy.n {
                    let saved = match &saved_xhat {
                        Some(xh) => NormSaved::Xhat(xh.sample(s)),
                        None => NormSaved::FromOutput {
                            y: mask_of.sample(s),
                            residual: res.as_ref().and_then(|(_, r)| r.as_ref()).map(|r| r.sample(s)),
                        },
                    };
                    let dys = sample_mut(&mut dy, s);
                    grad_ops::norm_backward(dys, mask_of.sample(s), saved, &stats[s], c, relu, sample_mut(&mut dx, s));
                }
                let mut grads = vec![(xid, dx)];
                if let Some((rid, _)) = res {
                    grads.push((rid, dy));
                }
                Ok(grads)
            }),
        );
        Ok(out)
    }

    /// Runs the recorded ops backwards from `seeds` (d loss / d output for some outputs) and
    /// consumes the tape.
    pub fn backward(&self, seeds: Vec<(&Var, CpuTensor)>) -> Result<Gradients> {
        let nodes = std::mem::take(&mut *self.lock());
        let mut grads: Vec<Option<CpuTensor>> = (0..nodes.len()).map(|_| None).collect();
        for (v, g) in seeds {
            check_like(&g, &v.t, "seed gradient")?;
            accumulate(&self.cpu, &mut grads[v.id], g);
        }
        let params = Mutex::new(BTreeMap::new());
        let ctx = Ctx { cpu: &self.cpu, params: &params };
        let mut leaves = HashMap::new();
        let mut seconds: BTreeMap<&'static str, f64> = BTreeMap::new();
        self.cpu.install(|| -> Result<()> {
            for (id, node) in nodes.into_iter().enumerate().rev() {
                let Some(g) = grads[id].take() else { continue };
                match node.backward {
                    Some(f) => {
                        let t = std::time::Instant::now();
                        for (i, gi) in f(&ctx, g)? {
                            accumulate(&self.cpu, &mut grads[i], gi);
                        }
                        *seconds.entry(node.op).or_default() += t.elapsed().as_secs_f64();
                    }
                    None => {
                        leaves.insert(id, g);
                    }
                }
            }
            Ok(())
        })?;
        Ok(Gradients {
            leaves,
            params: params.into_inner().unwrap_or_else(|e| e.into_inner()),
            seconds: seconds.into_iter().collect(),
        })
    }
}

fn check_like(a: &CpuTensor, b: &CpuTensor, what: &str) -> Result<()> {
    if a.n != b.n || a.c != b.c || a.dims != b.dims {
        return Err(Error::Shape(format!(
            "{what}: {}x{}x{:?} for a {}x{}x{:?} tensor",
            a.n, a.c, a.dims, b.n, b.c, b.dims
        )));
    }
    Ok(())
}

fn accumulate(cpu: &CpuBackend, slot: &mut Option<CpuTensor>, g: CpuTensor) {
    match slot {
        Some(acc) => cpu.install(|| grad_ops::add_into(&mut acc.data, &g.data)),
        None => *slot = Some(g),
    }
}

fn sample_len(t: &CpuTensor) -> usize {
    numel(t.dims) * t.c
}

fn sample_mut(t: &mut CpuTensor, s: usize) -> &mut [f32] {
    let len = sample_len(t);
    &mut t.data[s * len..][..len]
}

impl Backend for TapeBackend {
    type Tensor = Var;
    type Conv = TapeConv;
    type ConvT = TapeConvT;

    fn name(&self) -> String {
        format!("{} with gradient tape", self.cpu.name())
    }

    fn upload(&self, x: &HostTensor) -> Result<Var> {
        Ok(self.record(self.cpu.upload(x)?, "input", None))
    }

    fn download(&self, x: &Var) -> Result<HostTensor> {
        self.cpu.download(&x.t)
    }

    fn shape(&self, x: &Var) -> (usize, usize, Dims) {
        (x.t.n, x.t.c, x.t.dims)
    }

    fn prepare_conv(
        &self,
        prefix: &str,
        spec: ConvSpec,
        weight: &HostTensor,
        bias: Option<&HostTensor>,
    ) -> Result<TapeConv> {
        let inner = self.cpu.prepare_conv(prefix, spec, weight, bias)?;
        Ok(TapeConv { layer: Arc::new(ConvRecord { name: prefix.into(), spec, weight: weight.data.clone() }), inner })
    }

    fn prepare_conv_t(
        &self,
        prefix: &str,
        spec: ConvTSpec,
        weight: &HostTensor,
        bias: &HostTensor,
    ) -> Result<TapeConvT> {
        let inner = self.cpu.prepare_conv_t(prefix, spec, weight, bias)?;
        Ok(TapeConvT { layer: Arc::new(ConvTRecord { name: prefix.into(), spec, weight: weight.data.clone() }), inner })
    }

    fn conv(&self, x: &Var, conv: &TapeConv) -> Result<Var> {
        let y = self.cpu.conv(&x.t, &conv.inner)?;
        Ok(self.record_conv(x, conv, y))
    }

    /// The convolution's epilogue gathers the norm's statistics (as at inference), so the
    /// output is read once more only to be normalised.
    fn conv_norm(&self, x: &Var, conv: &TapeConv, residual: Option<&Var>, relu: bool) -> Result<Var> {
        let (y, stats) = self.cpu.conv_with_stats(&x.t, &conv.inner)?;
        let y = self.record_conv(x, conv, y);
        self.norm_with(y, residual, relu, Some(stats))
    }

    fn instance_norm(&self, x: Var, residual: Option<&Var>, relu: bool) -> Result<Var> {
        self.norm_with(x, residual, relu, None)
    }

    fn max_pool(&self, x: &Var, k: Dims) -> Result<Var> {
        let y = self.cpu.max_pool(&x.t, k)?;
        let (xid, xt) = (x.id, x.t.clone());
        Ok(self.record(
            y,
            "max_pool",
            Some(Box::new(move |ctx, dy| {
                let mut dx = ctx.cpu.tensor(xt.n, xt.c, xt.dims);
                for s in 0..xt.n {
                    grad_ops::max_pool_backward(xt.sample(s), xt.dims, xt.c, k, dy.sample(s), sample_mut(&mut dx, s));
                }
                Ok(vec![(xid, dx)])
            })),
        ))
    }

    fn adaptive_avg_pool(&self, x: &Var, out: Dims) -> Result<Var> {
        let y = self.cpu.adaptive_avg_pool(&x.t, out)?;
        Ok(self.record_resampling(y, "adaptive_avg_pool", x, grad_ops::adaptive_avg_pool_backward))
    }

    fn resize_trilinear(&self, x: &Var, out: Dims) -> Result<Var> {
        let y = self.cpu.resize_trilinear(&x.t, out)?;
        Ok(self.record_resampling(y, "resize_trilinear", x, grad_ops::resize_trilinear_backward))
    }

    fn up_add(&self, x: &Var, conv_t: &TapeConvT, skip: &Var) -> Result<Var> {
        let y = self.cpu.up_add(&x.t, &conv_t.inner, &skip.t)?;
        let (xid, xt, sid, layer) = (x.id, x.t.clone(), skip.id, conv_t.layer.clone());
        Ok(self.record(
            y,
            "up_add",
            Some(Box::new(move |ctx, dy| {
                let ConvTSpec { cin, cout, k } = layer.spec;
                let mut dw = vec![0f32; layer.weight.len()];
                let mut db = vec![0f64; cout];
                let mut dx = ctx.cpu.tensor(xt.n, cin, xt.dims);
                let mut dwide = ctx.cpu.scratch(grad_ops::up_add_scratch_len(xt.dims, cout, k));
                for s in 0..xt.n {
                    grad_ops::up_add_backward(
                        xt.sample(s),
                        xt.dims,
                        cin,
                        cout,
                        k,
                        &layer.weight,
                        dy.dims,
                        dy.sample(s),
                        ctx.cpu.threads() * 2,
                        &mut dwide,
                        &mut dw,
                        &mut db,
                        sample_mut(&mut dx, s),
                    );
                }
                ctx.add_param(format!("{}.weight", layer.name), dw);
                ctx.add_param(format!("{}.bias", layer.name), db.iter().map(|&v| v as f32).collect());
                Ok(vec![(xid, dx), (sid, dy)])
            })),
        ))
    }

    fn sum(&self, xs: &[&Var], relu: bool) -> Result<Var> {
        let refs: Vec<&CpuTensor> = xs.iter().map(|v| &*v.t).collect();
        let y = self.cpu.sum(&refs, relu)?;
        let ids: Vec<usize> = xs.iter().map(|v| v.id).collect();
        // The ReLU's backward reads the output: record first, then patch in a handle on it.
        let out = self.record(y, "sum", None);
        let yt = relu.then(|| out.t.clone());
        self.attach(
            &out,
            Box::new(move |ctx, mut dy| {
                if let Some(y) = &yt {
                    ctx.cpu.install(|| grad_ops::relu_mask(&mut dy.data, &y.data));
                }
                let mut grads = Vec::with_capacity(ids.len());
                for &i in &ids[1..] {
                    grads.push((i, copy(ctx.cpu, &dy)));
                }
                grads.push((ids[0], dy));
                Ok(grads)
            }),
        );
        Ok(out)
    }

    fn sigmoid_sum(&self, a: &Var, b: &Var) -> Result<Var> {
        let y = self.cpu.sigmoid_sum(&a.t, &b.t)?;
        let (aid, bid) = (a.id, b.id);
        let out = self.record(y, "sigmoid_sum", None);
        let w = out.t.clone();
        self.attach(
            &out,
            Box::new(move |ctx, mut dy| {
                ctx.cpu.install(|| grad_ops::sigmoid_backward(&mut dy.data, &w.data));
                Ok(vec![(aid, copy(ctx.cpu, &dy)), (bid, dy)])
            }),
        );
        Ok(out)
    }

    fn attend(&self, x: Var, w: &Var) -> Result<Var> {
        let y = self.cpu.attend(copy(&self.cpu, &x.t), &w.t)?;
        let (xid, xt, wid, wt) = (x.id, x.t.clone(), w.id, w.t.clone());
        Ok(self.record(
            y,
            "attend",
            Some(Box::new(move |ctx, dy| {
                let mut dx = ctx.cpu.tensor(xt.n, xt.c, xt.dims);
                let mut dw = ctx.cpu.tensor(wt.n, wt.c, wt.dims);
                for s in 0..xt.n {
                    let (dxs, dws) = (sample_mut(&mut dx, s), sample_mut(&mut dw, s));
                    grad_ops::attend_backward(xt.sample(s), wt.sample(s), xt.c, wt.c, dy.sample(s), dxs, dws);
                }
                Ok(vec![(xid, dx), (wid, dw)])
            })),
        ))
    }

    fn concat(&self, a: &Var, b: &Var) -> Result<Var> {
        let y = self.cpu.concat(&a.t, &b.t)?;
        let (aid, bid, ca, cb) = (a.id, b.id, a.t.c, b.t.c);
        Ok(self.record(
            y,
            "concat",
            Some(Box::new(move |ctx, dy| {
                let mut da = ctx.cpu.tensor(dy.n, ca, dy.dims);
                let mut db = ctx.cpu.tensor(dy.n, cb, dy.dims);
                for (v, g) in dy.data.chunks_exact(ca + cb).enumerate() {
                    da.data[v * ca..][..ca].copy_from_slice(&g[..ca]);
                    db.data[v * cb..][..cb].copy_from_slice(&g[ca..]);
                }
                Ok(vec![(aid, da), (bid, db)])
            })),
        ))
    }

    fn dropout(&self, x: Var, site: DropoutSite) -> Result<Var> {
        let (xid, n, c) = (x.id, x.t.n, x.t.c);
        let Some(masks) = self.dropout_masks(xid, site, n, c) else {
            return Ok(x);
        };
        let masks = Arc::new(masks);
        let relu_of = match &x.relu_of {
            Some(r) if r.scale.is_none() => Some(Arc::new(ReluOf { xhat: r.xhat.clone(), scale: Some(masks.clone()) })),
            _ => None,
        };
        let mut t = Arc::try_unwrap(x.t).unwrap_or_else(|shared| copy(&self.cpu, &shared));
        self.cpu.install(|| grad_ops::scale_channels(&mut t.data, c, &masks));
        let mut out = self.record(
            t,
            "dropout",
            Some(Box::new(move |ctx, mut dy| {
                ctx.cpu.install(|| grad_ops::scale_channels(&mut dy.data, c, &masks));
                Ok(vec![(xid, dy)])
            })),
        );
        out.relu_of = relu_of;
        Ok(out)
    }
}

fn copy(cpu: &CpuBackend, t: &CpuTensor) -> CpuTensor {
    let mut o = cpu.tensor(t.n, t.c, t.dims);
    o.data.copy_from_slice(&t.data);
    o
}

/// Conv backward: the weight gradient by Winograd (`winograd_grad`) for the in-plane 3x3 layers
/// and by per-tap matrix products over the padded volumes for the rest, the bias gradient by
/// channel sums, and (unless the input is a constant, `xid` None) the input gradient by the
/// flipped, transposed convolution.
fn conv_backward(
    ctx: &Ctx<'_>,
    layer: &ConvRecord,
    xid: Option<usize>,
    x: &ConvInput,
    dy: CpuTensor,
) -> Result<Vec<(usize, CpuTensor)>> {
    let ConvSpec { cin, cout, k, bias } = layer.spec;
    let taps = layer.spec.taps();
    let pad = layer.spec.pad();
    let padded = pad != [0, 0, 0];
    let (n, dims) = x.shape();
    let mut acc = vec![0f32; taps * cin * cout];
    let mut db = vec![0f64; cout];
    // In-plane 3x3 layers: the weight gradient by Winograd F(2x2, 3x3) on the unpadded input.
    let mut wg =
        winograd_grad::handles(k, cin, cout, dims).then(|| winograd_grad::WeightGrad::new(dims, cin, cout, k[2]));
    let (mut xpad, mut dypad) = if wg.is_some() {
        // The unpadded input (recomputed from the norm's xhat when it was not kept).
        (ctx.cpu.scratch(numel(dims) * cin), ctx.cpu.scratch(0))
    } else if padded {
        (ctx.cpu.scratch_zeroed(padded_len(dims, cin, k)), ctx.cpu.scratch_zeroed(padded_len(dims, cout, k)))
    } else {
        (ctx.cpu.scratch_zeroed(0), ctx.cpu.scratch_zeroed(0))
    };
    for s in 0..n {
        let dys = dy.sample(s);
        if bias {
            for (a, v) in db.iter_mut().zip(grad_ops::channel_sums(dys, cout)) {
                *a += v;
            }
        }
        let parts = ctx.cpu.threads() * 2;
        if let Some(wg) = wg.as_mut() {
            wg.add_sample(x.sample(s, &mut xpad), dys);
        } else if padded {
            x.pad_sample(s, cin, pad, &mut xpad);
            pad_input(dys, dims, cout, pad, &mut dypad);
            grad_ops::conv_weight_grad(&xpad, &dypad, dims, cin, cout, k, parts, &mut acc);
        } else {
            let xs = x.sample(s, &mut xpad);
            grad_ops::conv_weight_grad(xs, dys, dims, cin, cout, k, parts, &mut acc);
        }
    }
    if let Some(wg) = wg {
        wg.finish(&mut acc);
    }
    ctx.add_param(format!("{}.weight", layer.name), grad_ops::tap_major_to_torch(&acc, cin, cout, taps));
    if bias {
        ctx.add_param(format!("{}.bias", layer.name), db.iter().map(|&v| v as f32).collect());
    }
    // The padded copies go back to the pool before the input gradient is allocated (the
    // direct convolution below takes its own padded buffer of the gradient's size from there).
    drop((xpad, dypad));
    let Some(xid) = xid else { return Ok(Vec::new()) };
    let back_spec = ConvSpec { cin: cout, cout: cin, k, bias: false };
    // F(4x4, 3x3) where it pays, unlike the forward: tests/ops/train_grad's per-tensor errors
    // stay the same as with F(2x2) to three digits (what that check's ill-conditioning
    // amplifies is the forward's error, through the instance norms' statistics); 0.15 s of a
    // 5 s step.
    let back = CpuConv::new(back_spec, &grad_ops::flip_transpose(&layer.weight, cout, cin, k), None, 4);
    let dx = ctx.cpu.conv(&dy, &back)?;
    Ok(vec![(xid, dx)])
}
