//! The reference's optimiser and schedule, value for value: `torch.optim.AdamW` (decoupled
//! weight decay), `torch.optim.lr_scheduler.StepLR` stepped once per iteration, and
//! `torch.nn.utils.clip_grad_norm_` as an option.
//!
//! Parameters and gradients are [`ParamSet`]s: the network's *distinct* tensors, each once. The
//! reference's `state_dict()` lists shared modules twice (`attention_k.*` and
//! `up_{k+1}.attention.*` are one tensor); here such a tensor exists once, under its original
//! name (`attention_k.*`), with its gradient (the sum over both uses) once under the same name.
//! [`ParamSet::to_state_dict`] writes the alias keys back for PyTorch.

use std::collections::HashMap;
use std::path::Path;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::catalog;
use crate::tensor::HostTensor;
use crate::weights::{self, StateDict};

/// Named f32 tensors in a fixed order: the parameters of a model, their gradients, or one of
/// the optimiser's moment buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSet {
    names: Vec<String>,
    tensors: Vec<HostTensor>,
    index: HashMap<String, usize>,
}

impl ParamSet {
    /// A set from `(name, tensor)` pairs, kept in the given order. Duplicate names are an error.
    pub fn new(entries: Vec<(String, HostTensor)>) -> Result<Self> {
        let mut s = ParamSet { names: Vec::new(), tensors: Vec::new(), index: HashMap::new() };
        for (name, t) in entries {
            if s.index.insert(name.clone(), s.names.len()).is_some() {
                return Err(Error::Other(format!("parameter set: name '{name}' given twice")));
            }
            s.names.push(name);
            s.tensors.push(t);
        }
        Ok(s)
    }

    /// `(name, shape)` of each distinct learnable tensor of the network, in the reference's
    /// `state_dict()` order with the alias keys left out.
    pub fn network_layout() -> Vec<(String, Vec<usize>)> {
        catalog::layers().iter().filter(|l| l.alias_of.is_none()).flat_map(|l| l.tensors()).collect()
    }

    /// All-zero tensors of the given layout.
    pub fn zeros(layout: &[(String, Vec<usize>)]) -> Result<Self> {
        Self::new(layout.iter().map(|(k, s)| (k.clone(), HostTensor::zeros(s.clone()))).collect())
    }

    /// All-zero tensors with this set's names and shapes (a gradient buffer, a moment buffer).
    pub fn zeros_like(&self) -> Self {
        ParamSet {
            names: self.names.clone(),
            tensors: self.tensors.iter().map(|t| HostTensor::zeros(t.shape.clone())).collect(),
            index: self.index.clone(),
        }
    }

    /// The network's parameters from a loaded checkpoint (any format [`weights::load`] reads):
    /// checked against the catalog by [`weights::canonicalize`] (which names `path` in its
    /// errors), aliases dropped.
    pub fn from_network_state_dict(sd: &StateDict, path: &Path) -> Result<Self> {
        let canon = weights::canonicalize(sd, path)?;
        let layout = Self::network_layout();
        Self::from_state_dict(&canon, &layout, path)
    }

    /// Exactly the tensors of `layout` from `sd`, which must hold each of them with that shape,
    /// may hold the catalog's alias keys of any of them (bit-identical copies, as
    /// [`ParamSet::to_state_dict`] writes), and nothing else. Errors name `path` and the keys.
    pub fn from_state_dict(sd: &StateDict, layout: &[(String, Vec<usize>)], path: &Path) -> Result<Self> {
        let originals = alias_originals();
        let wanted: HashMap<&str, &Vec<usize>> = layout.iter().map(|(k, s)| (k.as_str(), s)).collect();
        let mut problems = Vec::new();
        for (k, t) in sd.iter() {
            if wanted.contains_key(k) {
                continue;
            }
            match originals.get(k).and_then(|o| sd.get(o).map(|ot| (o, ot))) {
                Some((o, ot)) if wanted.contains_key(o.as_str()) => {
                    let same = ot.shape == t.shape
                        && ot.data.len() == t.data.len()
                        && ot.data.iter().zip(&t.data).all(|(a, b)| a.to_bits() == b.to_bits());
                    if !same {
                        problems.push(format!("'{k}' is a shared module of '{o}' but differs from it"));
                    }
                }
                _ => problems.push(format!("unexpected key '{k}'")),
            }
        }
        let mut entries = Vec::with_capacity(layout.len());
        for (k, shape) in layout {
            match sd.get(k) {
                None => problems.push(format!("missing key '{k}'")),
                Some(t) if &t.shape != shape => {
                    problems.push(format!("'{k}' has shape {:?}, expected {:?}", t.shape, shape))
                }
                Some(t) => entries.push((k.clone(), t.clone())),
            }
        }
        if !problems.is_empty() {
            let n = problems.len();
            problems.truncate(8);
            let more = if n > 8 { format!(" (and {} more)", n - 8) } else { String::new() };
            return Err(Error::weights(path, format!("{}{more}", problems.join("; "))));
        }
        Self::new(entries)
    }

    /// The reference's state dict: every tensor under its name plus, for each catalog alias
    /// whose original is in the set, a copy under the alias key (so PyTorch's
    /// `load_state_dict(strict=True)` accepts it). The network's set comes out in the
    /// reference's key order.
    pub fn to_state_dict(&self) -> StateDict {
        let mut sd = StateDict::new();
        let keys = catalog::tensor_keys();
        let originals = alias_originals();
        let network = self.names.len() == keys.len() - originals.len()
            && keys.iter().all(|(k, _)| originals.contains_key(k) || self.index.contains_key(k));
        if network {
            for (k, _) in &keys {
                let src = originals.get(k).unwrap_or(k);
                if let Some(&i) = self.index.get(src) {
                    sd.insert(k.clone(), self.tensors[i].clone());
                }
            }
        } else {
            for (k, t) in self.iter() {
                sd.insert(k, t.clone());
            }
            for (k, _) in &keys {
                if let Some(&i) = originals.get(k).and_then(|o| self.index.get(o)) {
                    sd.insert(k.clone(), self.tensors[i].clone());
                }
            }
        }
        sd
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the set holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Total number of values.
    pub fn numel(&self) -> usize {
        self.tensors.iter().map(|t| t.numel()).sum()
    }

    /// Names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|s| s.as_str())
    }

    /// `(name, shape)` of each tensor, in order.
    pub fn layout(&self) -> Vec<(String, Vec<usize>)> {
        self.iter().map(|(k, t)| (k.to_string(), t.shape.clone())).collect()
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor called `name`, mutably (its shape must not change).
    pub fn get_mut(&mut self, name: &str) -> Option<&mut HostTensor> {
        self.index.get(name).map(|&i| &mut self.tensors[i])
    }

    /// Tensors in order.
    pub fn tensors(&self) -> &[HostTensor] {
        &self.tensors
    }

    /// Tensors in order, mutably (their shapes must not change).
    pub fn tensors_mut(&mut self) -> &mut [HostTensor] {
        &mut self.tensors
    }

    /// `(name, tensor)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &HostTensor)> {
        self.names.iter().map(|s| s.as_str()).zip(&self.tensors)
    }

    /// Ok when `other` has the same names, in the same order, with the same shapes and value
    /// counts; otherwise an error naming `what` and the first difference.
    pub fn check_same_layout(&self, other: &ParamSet, what: &str) -> Result<()> {
        if self.len() != other.len() {
            return Err(Error::Shape(format!("{what}: {} tensors, the parameters have {}", other.len(), self.len())));
        }
        for ((k, t), (ok, ot)) in self.iter().zip(other.iter()) {
            if k != ok {
                return Err(Error::Shape(format!("{what}: tensor '{ok}' where the parameters have '{k}'")));
            }
            if t.shape != ot.shape || t.data.len() != ot.data.len() {
                return Err(Error::Shape(format!(
                    "{what}: '{k}' has shape {:?} ({} values), the parameter has {:?} ({} values)",
                    ot.shape,
                    ot.data.len(),
                    t.shape,
                    t.data.len()
                )));
            }
        }
        Ok(())
    }
}

/// Alias key -> its original's key, for every alias tensor of the catalog.
fn alias_originals() -> HashMap<String, String> {
    let mut m = HashMap::new();
    for l in catalog::layers() {
        if let Some(orig) = &l.alias_of {
            for (k, _) in l.tensors() {
                let o = format!("{orig}{}", &k[l.prefix.len()..]);
                m.insert(k, o);
            }
        }
    }
    m
}

/// AdamW's hyper-parameters. `Default` is the reference's recipe: lr 5e-4 and PyTorch's
/// defaults otherwise (betas 0.9/0.999, eps 1e-8, weight decay 0.01).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Initial learning rate (the one [`StepLR`] starts from; each step takes its own `lr`).
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { lr: 5e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

impl AdamWConfig {
    /// Ok when every value is in the range PyTorch accepts (`lr, eps, weight_decay >= 0`,
    /// `0 <= beta < 1`, all finite); otherwise an error naming the value.
    pub fn validate(&self) -> Result<()> {
        let check = |name: &str, v: f64, ok: bool| {
            if v.is_finite() && ok {
                Ok(())
            } else {
                Err(Error::Value(format!("AdamW: invalid {name} {v}")))
            }
        };
        check("learning rate", self.lr, self.lr >= 0.0)?;
        check("beta1", self.beta1, (0.0..1.0).contains(&self.beta1))?;
        check("beta2", self.beta2, (0.0..1.0).contains(&self.beta2))?;
        check("epsilon", self.eps, self.eps >= 0.0)?;
        check("weight decay", self.weight_decay, self.weight_decay >= 0.0)
    }
}

/// `torch.optim.AdamW` (amsgrad off, maximize off) over a [`ParamSet`], with the arithmetic of
/// PyTorch's single-tensor CPU path in float32: hyper-parameter expressions in f64 (Python
/// floats) rounded to f32 where they meet a tensor, moments and parameters in f32.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    config: AdamWConfig,
    step: u64,
    exp_avg: ParamSet,
    exp_avg_sq: ParamSet,
}

impl AdamW {
    /// A fresh optimiser (zero moments, step 0) for parameters laid out like `params`.
    pub fn new(config: AdamWConfig, params: &ParamSet) -> Result<Self> {
        config.validate()?;
        Ok(AdamW { config, step: 0, exp_avg: params.zeros_like(), exp_avg_sq: params.zeros_like() })
    }

    /// An optimiser resumed from saved state: `step` updates taken, the first and second
    /// moment buffers (`exp_avg`, `exp_avg_sq` in PyTorch's state), which must share a layout.
    pub fn from_state(config: AdamWConfig, step: u64, exp_avg: ParamSet, exp_avg_sq: ParamSet) -> Result<Self> {
        config.validate()?;
        exp_avg.check_same_layout(&exp_avg_sq, "AdamW state exp_avg_sq")?;
        Ok(AdamW { config, step, exp_avg, exp_avg_sq })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Updates taken so far (PyTorch's `state['step']`; the next update is `steps() + 1`).
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// First moment (`exp_avg`).
    pub fn exp_avg(&self) -> &ParamSet {
        &self.exp_avg
    }

    /// Second moment (`exp_avg_sq`).
    pub fn exp_avg_sq(&self) -> &ParamSet {
        &self.exp_avg_sq
    }

    /// One `optimizer.step()` at learning rate `lr` (the schedule's value for this iteration):
    /// for each parameter `p` with gradient `g`, step `t` counted from 1,
    /// `p *= 1 - lr*wd; m = lerp(m, g, 1-b1); v = v*b2 + (1-b2)*g*g;
    /// p += -(lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)`.
    /// `grads` must have the parameters' layout. Non-finite gradients propagate as in PyTorch.
    pub fn step(&mut self, params: &mut ParamSet, grads: &ParamSet, lr: f64) -> Result<()> {
        params.check_same_layout(grads, "gradients")?;
        params.check_same_layout(&self.exp_avg, "AdamW state")?;
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::Value(format!("AdamW: invalid learning rate {lr}")));
        }
        self.step += 1;
        let c = self.config;
        // Python-float expressions, as torch/optim/adam.py `_single_tensor_adam` computes them.
        let t = self.step as f64;
        let decay = (1.0 - lr * c.weight_decay) as f32;
        let w1 = (1.0 - c.beta1) as f32;
        let b2 = c.beta2 as f32;
        let w2 = (1.0 - c.beta2) as f32;
        let bias_correction1 = 1.0 - c.beta1.powf(t);
        let bias_correction2 = 1.0 - c.beta2.powf(t);
        let step_size = (-(lr / bias_correction1)) as f32;
        let bc2_sqrt = bias_correction2.sqrt() as f32;
        let eps = c.eps as f32;
        let small = w1.abs() < 0.5;
        params
            .tensors
            .par_iter_mut()
            .zip(grads.tensors.par_iter())
            .zip(self.exp_avg.tensors.par_iter_mut().zip(self.exp_avg_sq.tensors.par_iter_mut()))
            .for_each(|((p, g), (m, v))| {
                for (((p, &g), m), v) in p.data.iter_mut().zip(&g.data).zip(m.data.iter_mut()).zip(v.data.iter_mut()) {
                    if c.weight_decay != 0.0 {
                        *p *= decay;
                    }
                    // ATen's vectorised lerp: fmadd(weight, end - start, start) for a small weight.
                    *m = if small { w1.mul_add(g - *m, *m) } else { (w1 - 1.0).mul_add(g - *m, g) };
                    *v = (w2 * g).mul_add(g, *v * b2);
                    let denom = v.sqrt() / bc2_sqrt + eps;
                    *p += step_size * *m / denom;
                }
            });
        Ok(())
    }
}

/// `torch.nn.utils.clip_grad_norm_(grads, max_norm)` (L2): returns the total norm (each
/// tensor's norm, then the norm of those norms, as PyTorch computes it), and when
/// `max_norm / (total + 1e-6) < 1` (computed as PyTorch does, `max_norm * (1 / (total + 1e-6))`) multiplies every gradient by that factor (f32). The norms
/// follow the summation order of PyTorch's AVX2 CPU kernel ([`torch_l2_norm`]), which makes
/// them bit-identical to torch 2.9 on an AVX2 CPU (measured; an AVX-512 build of PyTorch sums
/// in 16 lanes and may differ in the last bit). A non-finite total turns the gradients into
/// NaN/zero as PyTorch does without `error_if_nonfinite`: check the returned norm.
pub fn clip_grad_norm(grads: &mut ParamSet, max_norm: f64) -> f32 {
    let norms: Vec<f32> = grads.tensors.par_iter().map(|t| torch_l2_norm(&t.data)).collect();
    let total = torch_l2_norm(&norms);
    // `max_norm / (total + 1e-6)` with a tensor on the right is `reciprocal(t) * max_norm`.
    let coef = (1.0f32 / (total + 1e-6f32)) * max_norm as f32;
    // torch.clamp(coef, max=1.0) keeps NaN, and multiplying by 1.0 changes nothing.
    if coef.is_nan() || coef < 1.0 {
        grads.tensors.par_iter_mut().for_each(|t| t.data.iter_mut().for_each(|x| *x *= coef));
    }
    total
}

/// `torch.linalg.vector_norm(x, 2)` of a contiguous f32 tensor the way ATen's vectorised CPU
/// reduction computes it on AVX2: eight f32 lanes accumulating `x*x` over blocks of eight,
/// the lanes added in order, the remaining `len % 8` values added with a fused multiply-add,
/// then the square root.
pub fn torch_l2_norm(x: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let body = x.len() - x.len() % LANES;
    for block in x[..body].chunks_exact(LANES) {
        for l in 0..LANES {
            acc[l] += block[l] * block[l];
        }
    }
    let mut sum = acc[0];
    for &a in &acc[1..] {
        sum += a;
    }
    for &v in &x[body..] {
        sum = v.mul_add(v, sum);
    }
    sum.sqrt()
}

/// `torch.optim.lr_scheduler.StepLR` stepped once per iteration (optimizer step): the rate is
/// multiplied by `gamma` after every `step_size` iterations. The recipe: `StepLR::new(5e-4,
/// 3800, 0.5)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLR {
    base_lr: f64,
    step_size: u64,
    gamma: f64,
    /// Linear warm-up over this many first steps (0 in the reference).
    warmup: u64,
}

impl StepLR {
    /// A schedule starting at `base_lr`; `step_size` must be at least 1 and the rates finite
    /// and non-negative.
    pub fn new(base_lr: f64, step_size: u64, gamma: f64) -> Result<Self> {
        if step_size == 0 {
            return Err(Error::Value("StepLR: step_size must be at least 1".into()));
        }
        if !(base_lr.is_finite() && base_lr >= 0.0 && gamma.is_finite() && gamma >= 0.0) {
            return Err(Error::Value(format!("StepLR: invalid learning rate {base_lr} or gamma {gamma}")));
        }
        Ok(StepLR { base_lr, step_size, gamma, warmup: 0 })
    }

    /// The reference's schedule: 5e-4 halved every 3800 iterations.
    pub fn recipe() -> Self {
        StepLR { base_lr: 5e-4, step_size: 3800, gamma: 0.5, warmup: 0 }
    }

    /// The learning rate of the optimizer step taken after `iteration` earlier steps (the
    /// group's `lr` after `iteration` calls of `scheduler.step()`), multiplied by `gamma` one
    /// decay at a time as PyTorch's chainable form does, so it is the same f64.
    pub fn lr(&self, iteration: u64) -> f64 {
        let mut lr = self.base_lr;
        for _ in 0..iteration / self.step_size {
            lr *= self.gamma;
        }
        if iteration < self.warmup {
            // step i of a warm-up of n runs at (i + 1) / n of the rate (never at 0)
            lr *= (iteration + 1) as f64 / self.warmup as f64;
        }
        lr
    }

    /// The same schedule with a linear warm-up over the first `steps` steps (not in the
    /// reference; a larger rate on a short budget needs it).
    pub fn with_warmup(self, steps: u64) -> Self {
        StepLR { warmup: steps, ..self }
    }

    pub fn base_lr(&self) -> f64 {
        self.base_lr
    }

    pub fn step_size(&self) -> u64 {
        self.step_size
    }

    pub fn gamma(&self) -> f64 {
        self.gamma
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inputs of /work/scratch/trainopt/adamw_ref.py (reproduced in the module docs of the
    /// test below): values exactly representable in f32, so both sides start identical.
    fn init(n: usize, a: usize, b: usize, c: usize) -> Vec<f32> {
        (0..n).map(|i| (((i * a + b) % c) as f32 - (c / 2) as f32) / 8.0).collect()
    }

    fn grad(n: usize, step: usize, k: usize) -> Vec<f32> {
        (0..n).map(|i| (((i * 7 + step * 13 + k * 5) % 17) as f32 - 8.0) / 4.0).collect()
    }

    fn rel_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let err = (g as f64 - w).abs();
            assert!(err <= tol * w.abs(), "{what}[{i}]: got {g}, torch {w}, rel err {}", err / w.abs());
        }
    }

    /// Six AdamW steps (lr 0.05, weight decay 0.1, betas 0.9/0.999, eps 1e-8) on three tensors
    /// of shapes (2,3), (5,), (1,) (the last with zero gradients: eps-dominated denominator,
    /// weight decay only), StepLR(step_size 2, gamma 0.5) per iteration, clip_grad_norm_(3.0)
    /// before each step. Expected values: torch 2.9.1, CPU float32, script
    /// /work/scratch/trainopt/adamw_ref.py (the inputs are `init`/`grad` above), printed with
    /// repr() of the f32 values.
    #[test]
    fn adamw_steplr_clip_match_torch() {
        let shapes: [Vec<usize>; 3] = [vec![2, 3], vec![5], vec![1]];
        let entries = shapes
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let n = s.iter().product();
                (format!("p{k}"), HostTensor::new(s.clone(), init(n, 3, k, 11)).unwrap())
            })
            .collect();
        let mut params = ParamSet::new(entries).unwrap();
        let cfg = AdamWConfig { lr: 0.05, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
        let mut opt = AdamW::new(cfg, &params).unwrap();
        let sched = StepLR::new(0.05, 2, 0.5).unwrap();
        let want_lr = [0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125];
        let want_norm =
            [4.337337970733643, 4.168333053588867, 3.816084384918213, 3.960744857788086, 4.190763473510742, 4.25];
        for step in 0..6 {
            let mut grads = params.zeros_like();
            for (k, t) in grads.tensors_mut().iter_mut().enumerate() {
                if k != 2 {
                    t.data = grad(t.numel(), step, k);
                }
            }
            let lr = sched.lr(step as u64);
            assert_eq!(lr, want_lr[step]);
            let n = clip_grad_norm(&mut grads, 3.0);
            // the norm and the moments are bit-identical to torch; parameters differ by torch's
            // CPU sqrt, which is not correctly rounded (off by one ulp for ~17 % of inputs).
            rel_close(&[n], &[want_norm[step]], 0.0, "total norm");
            opt.step(&mut params, &grads, lr).unwrap();
        }
        assert_eq!(opt.steps(), 6);
        let want_p: [&[f64]; 3] = [
            &[
                -0.542858898639679,
                -0.17409929633140564,
                0.01651439070701599,
                0.6103110909461975,
                -0.5657808184623718,
                -0.07355326414108276,
            ],
            &[-0.3868965804576874, -0.18503105640411377, 0.27279186248779297, 0.6126576066017151, -0.48808524012565613],
            &[-0.36848247051239014],
        ];
        let want_m: [&[f64]; 3] = [
            &[
                -0.06121140718460083,
                0.036147989332675934,
                0.12987959384918213,
                -0.22015729546546936,
                0.13432066142559052,
                0.024223674088716507,
            ],
            &[
                -0.13472218811511993,
                -0.04099060222506523,
                0.10965875536203384,
                -0.03654951602220535,
                0.026933355256915092,
            ],
            &[0.0],
        ];
        let want_v: [&[f64]; 3] = [
            &[
                0.005759698338806629,
                0.004371392074972391,
                0.004490420687943697,
                0.005352159030735493,
                0.004064951092004776,
                0.0055936225689947605,
            ],
            &[
                0.004626377020031214,
                0.004213477019220591,
                0.005826407112181187,
                0.0037477940786629915,
                0.005818864330649376,
            ],
            &[0.0],
        ];
        for k in 0..3 {
            rel_close(&params.tensors()[k].data, want_p[k], 1e-6, &format!("param {k}"));
            rel_close(&opt.exp_avg().tensors()[k].data, want_m[k], 0.0, &format!("exp_avg {k}"));
            rel_close(&opt.exp_avg_sq().tensors()[k].data, want_v[k], 0.0, &format!("exp_avg_sq {k}"));
        }
    }

    #[test]
    fn steplr_recipe_halves_every_3800() {
        let s = StepLR::recipe();
        assert_eq!(s.lr(0), 5e-4);
        assert_eq!(s.lr(3799), 5e-4);
        assert_eq!(s.lr(3800), 2.5e-4);
        assert_eq!(s.lr(7599), 2.5e-4);
        assert_eq!(s.lr(7600), 1.25e-4);
        // chained multiplications, as PyTorch: 0.1 * 0.3 * 0.3 is not 0.1 * 0.3^2 in f64
        let s = StepLR::new(0.1, 1, 0.3).unwrap();
        assert_eq!(s.lr(2), 0.1 * 0.3 * 0.3);
        assert!(StepLR::new(0.1, 0, 0.5).is_err());
        assert!(StepLR::new(f64::NAN, 1, 0.5).is_err());
    }

    #[test]
    fn clip_leaves_small_gradients_alone() {
        let mut g = ParamSet::new(vec![("a".into(), HostTensor::new(vec![2], vec![3.0, 4.0]).unwrap())]).unwrap();
        assert_eq!(clip_grad_norm(&mut g, 10.0), 5.0);
        assert_eq!(g.tensors()[0].data, [3.0, 4.0]);
        // above: scaled by max_norm * (1 / (total + 1e-6)) in f32
        let coef = (1.0f32 / (5.0f32 + 1e-6)) * 2.0;
        assert_eq!(clip_grad_norm(&mut g, 2.0), 5.0);
        assert_eq!(g.tensors()[0].data, [3.0 * coef, 4.0 * coef]);
    }

    #[test]
    fn layouts_are_checked() {
        let a = ParamSet::new(vec![("a".into(), HostTensor::zeros(vec![2]))]).unwrap();
        let b = ParamSet::new(vec![("a".into(), HostTensor::zeros(vec![3]))]).unwrap();
        let c = ParamSet::new(vec![("b".into(), HostTensor::zeros(vec![2]))]).unwrap();
        let mut p = a.clone();
        let mut opt = AdamW::new(AdamWConfig::default(), &a).unwrap();
        let e = opt.step(&mut p, &b, 1e-3).unwrap_err().to_string();
        assert!(e.contains("gradients") && e.contains("'a'") && e.contains("[3]"), "{e}");
        let e = opt.step(&mut p, &c, 1e-3).unwrap_err().to_string();
        assert!(e.contains("'b'"), "{e}");
        assert_eq!(opt.steps(), 0, "a refused step is not counted");
        assert!(ParamSet::new(vec![
            ("a".into(), HostTensor::zeros(vec![1])),
            ("a".into(), HostTensor::zeros(vec![1]))
        ])
        .is_err());
        let bad = AdamWConfig { beta1: 1.0, ..Default::default() };
        assert!(AdamW::new(bad, &a).unwrap_err().to_string().contains("beta1"));
    }

    #[test]
    fn network_set_holds_each_shared_tensor_once() {
        let layout = ParamSet::network_layout();
        assert_eq!(layout.iter().map(|(_, s)| s.iter().product::<usize>()).sum::<usize>(), catalog::parameter_count());
        assert!(layout.iter().any(|(k, _)| k == "attention_3.conv.0.block.0.weight"));
        assert!(!layout.iter().any(|(k, _)| k.starts_with("up_4.attention.")));
        let sd = crate::model::init::random_state_dict(3);
        let p = ParamSet::from_network_state_dict(&sd, Path::new("w.pth")).unwrap();
        assert_eq!(p.layout(), layout);
        // back to the reference's keys, in its order, aliases as copies
        let back = p.to_state_dict();
        let keys: Vec<&str> = back.names().collect();
        let want = catalog::tensor_keys();
        assert_eq!(keys, want.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>());
        assert_eq!(back.get("up_4.attention.conv.0.block.0.weight"), sd.get("attention_3.conv.0.block.0.weight"));
        // an alias that differs from its original is refused, naming both
        let mut bad = back.clone();
        let mut t = bad.get("up_1.attention.conv1.0.bias").unwrap().clone();
        t.data[0] += 1.0;
        bad.insert("up_1.attention.conv1.0.bias", t);
        let e = ParamSet::from_state_dict(&bad, &layout, Path::new("x.safetensors")).unwrap_err().to_string();
        assert!(e.contains("x.safetensors") && e.contains("'up_1.attention.conv1.0.bias'"), "{e}");
    }
}
