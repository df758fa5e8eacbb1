//! A backend decorator that times every op, for `fmseg bench --layers`: each call is labelled
//! with its op, kernel and sizes, and the table lists time and achieved rate per label.
//! Each op is bracketed by [`Backend::synchronize`], so asynchronous backends are timed on the device.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::backend::{Backend, ConvSpec, ConvTSpec, DropoutSite};
use crate::error::Result;
use crate::tensor::{numel, Dims, HostTensor};

/// Prepared weights remember their spec so that timings can be labelled.
pub struct Labelled<T> {
    inner: T,
    spec: ConvSpec,
}

pub struct LabelledT<T> {
    inner: T,
    spec: ConvTSpec,
}

#[derive(Clone, Debug, Default)]
pub struct OpStat {
    pub calls: usize,
    pub seconds: f64,
    pub flops: f64,
    /// The least memory traffic of the op: every input read once, the output written once,
    /// at the backend's element size (its floor by bandwidth).
    pub bytes: f64,
}

pub struct Profiled<B: Backend> {
    pub inner: B,
    stats: Mutex<HashMap<String, OpStat>>,
    clock: Clock,
    elem_bytes: usize,
}

/// What a timing measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// Elapsed time.
    Wall,
    /// CPU time of the whole process (all threads): on a loaded machine, with one worker
    /// thread, this is the op's own cost.
    ProcessCpu,
}

impl Clock {
    pub fn now(self) -> f64 {
        match self {
            Clock::Wall => {
                static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
                START.get_or_init(Instant::now).elapsed().as_secs_f64()
            }
            Clock::ProcessCpu => process_cpu_seconds(),
        }
    }
}

/// CPU time consumed by this process so far, in seconds.
pub fn process_cpu_seconds() -> f64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec through a valid pointer.
        if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
        }
    }
    0.0
}

impl<B: Backend> Profiled<B> {
    /// Times each op of `inner`, synchronizing it ([`Backend::synchronize`]) around each.
    pub fn new(inner: B) -> Self {
        Profiled { inner, stats: Mutex::new(HashMap::new()), clock: Clock::Wall, elem_bytes: 4 }
    }

    /// Bytes per activation element as the backend stores them (4 for f32, 2 for fp16).
    pub fn with_element_bytes(mut self, bytes: usize) -> Self {
        self.elem_bytes = bytes;
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn timed<R>(
        &self,
        label: impl FnOnce() -> String,
        flops: f64,
        bytes: impl FnOnce(&R) -> f64,
        f: impl FnOnce() -> Result<R>,
    ) -> Result<R> {
        self.inner.synchronize()?;
        let t0 = self.clock.now();
        let r = f()?;
        self.inner.synchronize()?;
        let dt = self.clock.now() - t0;
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let e = s.entry(label()).or_default();
        e.calls += 1;
        e.seconds += dt;
        e.flops += flops;
        e.bytes += bytes(&r);
        Ok(r)
    }

    /// Timings by label, slowest first.
    pub fn table(&self) -> Vec<(String, OpStat)> {
        let s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = s.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
        v
    }

    /// As `timed`, for an op producing a tensor: it reads `read` elements (inputs and
    /// weights) and writes its output, once each at best.
    fn op(
        &self,
        label: impl FnOnce() -> String,
        flops: f64,
        read: usize,
        f: impl FnOnce() -> Result<B::Tensor>,
    ) -> Result<B::Tensor> {
        self.timed(label, flops, |y| ((read + self.elems(y)) * self.elem_bytes) as f64, f)
    }

    fn elems(&self, x: &B::Tensor) -> usize {
        let (n, c, d) = self.inner.shape(x);
        n * c * numel(d)
    }

    pub fn reset(&self) {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

fn dims_label(d: Dims) -> String {
    format!("{}x{}x{}", d[0], d[1], d[2])
}

impl<B: Backend> Backend for Profiled<B> {
    type Tensor = B::Tensor;
    type Conv = Labelled<B::Conv>;
    type ConvT = LabelledT<B::ConvT>;

    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }

    fn name(&self) -> String {
        self.inner.name()
    }
    fn upload(&self, x: &HostTensor) -> Result<B::Tensor> {
        self.timed(|| "upload".into(), 0.0, |_| 0.0, || self.inner.upload(x))
    }

    fn download(&self, x: &B::Tensor) -> Result<HostTensor> {
        self.timed(|| "download".into(), 0.0, |_| 0.0, || self.inner.download(x))
    }

    fn shape(&self, x: &B::Tensor) -> (usize, usize, Dims) {
        self.inner.shape(x)
    }

    fn prepare_conv(&self, name: &str, spec: ConvSpec, w: &HostTensor, b: Option<&HostTensor>) -> Result<Self::Conv> {
        Ok(Labelled { inner: self.inner.prepare_conv(name, spec, w, b)?, spec })
    }

    fn prepare_conv_t(&self, name: &str, spec: ConvTSpec, w: &HostTensor, b: &HostTensor) -> Result<Self::ConvT> {
        Ok(LabelledT { inner: self.inner.prepare_conv_t(name, spec, w, b)?, spec })
    }

    fn conv(&self, x: &B::Tensor, c: &Self::Conv) -> Result<B::Tensor> {
        let (n, _, d) = self.inner.shape(x);
        let s = c.spec;
        let flops = 2.0 * (n * numel(d) * s.cin * s.cout * s.taps()) as f64;
        let read = self.elems(x) + s.cin * s.cout * s.taps();
        self.op(
            || format!("conv {} {}->{} @{}", dims_label(s.k), s.cin, s.cout, dims_label(d)),
            flops,
            read,
            || self.inner.conv(x, &c.inner),
        )
    }

    fn instance_norm(&self, x: B::Tensor, r: Option<&B::Tensor>, relu: bool) -> Result<B::Tensor> {
        let (_, c, d) = self.inner.shape(&x);
        let read = self.elems(&x) + r.map_or(0, |r| self.elems(r));
        self.op(
            || format!("instance_norm {c}ch @{}", dims_label(d)),
            0.0,
            read,
            || self.inner.instance_norm(x, r, relu),
        )
    }

    fn conv_norm(&self, x: &B::Tensor, c: &Self::Conv, r: Option<&B::Tensor>, relu: bool) -> Result<B::Tensor> {
        let (n, _, d) = self.inner.shape(x);
        let s = c.spec;
        let flops = 2.0 * (n * numel(d) * s.cin * s.cout * s.taps()) as f64;
        let read = self.elems(x) + s.cin * s.cout * s.taps() + r.map_or(0, |r| self.elems(r));
        self.op(
            || format!("conv+norm {} {}->{} @{}", dims_label(s.k), s.cin, s.cout, dims_label(d)),
            flops,
            read,
            || self.inner.conv_norm(x, &c.inner, r, relu),
        )
    }

    fn max_pool(&self, x: &B::Tensor, k: Dims) -> Result<B::Tensor> {
        let (_, c, d) = self.inner.shape(x);
        let label = || format!("max_pool {} {c}ch @{}", dims_label(k), dims_label(d));
        self.op(label, 0.0, self.elems(x), || self.inner.max_pool(x, k))
    }

    fn adaptive_avg_pool(&self, x: &B::Tensor, o: Dims) -> Result<B::Tensor> {
        let (_, c, d) = self.inner.shape(x);
        let label = || format!("adaptive_avg_pool {c}ch @{}", dims_label(d));
        self.op(label, 0.0, self.elems(x), || self.inner.adaptive_avg_pool(x, o))
    }

    fn resize_trilinear(&self, x: &B::Tensor, o: Dims) -> Result<B::Tensor> {
        let (_, c, _) = self.inner.shape(x);
        let label = || format!("resize_trilinear {c}ch @{}", dims_label(o));
        self.op(label, 0.0, self.elems(x), || self.inner.resize_trilinear(x, o))
    }

    fn up_add(&self, x: &B::Tensor, ct: &Self::ConvT, skip: &B::Tensor) -> Result<B::Tensor> {
        let (n, _, d) = self.inner.shape(x);
        let s = ct.spec;
        let flops = 2.0 * (n * numel(d) * s.cin * s.cout * numel(s.k)) as f64;
        let read = self.elems(x) + self.elems(skip) + s.cin * s.cout * numel(s.k);
        self.op(
            || format!("up_add {} {}->{} @{}", dims_label(s.k), s.cin, s.cout, dims_label(d)),
            flops,
            read,
            || self.inner.up_add(x, &ct.inner, skip),
        )
    }

    fn sum(&self, xs: &[&B::Tensor], relu: bool) -> Result<B::Tensor> {
        let read = xs.iter().map(|x| self.elems(x)).sum();
        self.op(|| "sum".into(), 0.0, read, || self.inner.sum(xs, relu))
    }

    fn sigmoid_sum(&self, a: &B::Tensor, b: &B::Tensor) -> Result<B::Tensor> {
        let (_, _, d) = self.inner.shape(a);
        let read = self.elems(a) + self.elems(b);
        self.op(|| format!("sigmoid_sum @{}", dims_label(d)), 0.0, read, || self.inner.sigmoid_sum(a, b))
    }

    fn attend(&self, x: B::Tensor, w: &B::Tensor) -> Result<B::Tensor> {
        let (_, c, d) = self.inner.shape(&x);
        let read = self.elems(&x) + self.elems(w);
        self.op(|| format!("attend {c}ch @{}", dims_label(d)), 0.0, read, || self.inner.attend(x, w))
    }

    fn concat(&self, a: &B::Tensor, b: &B::Tensor) -> Result<B::Tensor> {
        let read = self.elems(a) + self.elems(b);
        self.op(|| "concat".into(), 0.0, read, || self.inner.concat(a, b))
    }

    /// Not timed: the identity at inference (the tape's, when training, is in its op times).
    fn dropout(&self, x: B::Tensor, site: DropoutSite) -> Result<B::Tensor> {
        self.inner.dropout(x, site)
    }
}

/// The two ceilings an op's time is measured against: arithmetic rate and memory bandwidth
/// (bytes read + written per second), with where each figure comes from.
#[derive(Clone, Debug)]
pub struct Ceilings {
    pub flops_per_s: f64,
    pub bytes_per_s: f64,
    pub source: String,
}

impl Ceilings {
    /// The op's floor in seconds: the larger of its arithmetic and its traffic at the ceilings.
    pub fn floor(&self, s: &OpStat) -> f64 {
        (s.flops / self.flops_per_s).max(s.bytes / self.bytes_per_s)
    }

    /// Which ceiling binds the op.
    pub fn bound(&self, s: &OpStat) -> &'static str {
        if s.flops / self.flops_per_s >= s.bytes / self.bytes_per_s {
            "flops"
        } else {
            "bytes"
        }
    }

    /// Measured on this CPU with `threads` workers: a 1024^3 f32 matrix product per worker
    /// (the `matrixmultiply` GEMM), and a parallel copy of 2 x 256 MiB, best of three each.
    pub fn measure_cpu(threads: usize) -> Self {
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().ok();
        let in_pool = |f: &mut (dyn FnMut() + Send)| match &pool {
            Some(p) => p.install(f),
            None => f(),
        };
        let n = 1024;
        let a = vec![1.0f32; n * n];
        let mut best_flops = 0f64;
        for _ in 0..3 {
            let t = Instant::now();
            in_pool(&mut || {
                rayon::broadcast(|_| {
                    let mut c = vec![0f32; n * n];
                    // SAFETY: a, b and c are n x n row-major buffers of the stated strides.
                    unsafe {
                        matrixmultiply::sgemm(
                            n,
                            n,
                            n,
                            1.0,
                            a.as_ptr(),
                            n as isize,
                            1,
                            a.as_ptr(),
                            n as isize,
                            1,
                            0.0,
                            c.as_mut_ptr(),
                            n as isize,
                            1,
                        );
                    }
                    std::hint::black_box(&c);
                });
            });
            best_flops = best_flops.max(2.0 * (n * n * n * threads) as f64 / t.elapsed().as_secs_f64());
        }
        let len = 64 << 20; // f32 elements: 256 MiB
        let src = vec![1.0f32; len];
        let mut dst = vec![0f32; len];
        let mut best_bw = 0f64;
        for _ in 0..3 {
            let t = Instant::now();
            in_pool(&mut || {
                use rayon::prelude::*;
                dst.par_chunks_mut(1 << 20).zip(src.par_chunks(1 << 20)).for_each(|(d, s)| d.copy_from_slice(s))
            });
            best_bw = best_bw.max(2.0 * (len * 4) as f64 / t.elapsed().as_secs_f64());
        }
        std::hint::black_box(&dst);
        Ceilings {
            flops_per_s: best_flops,
            bytes_per_s: best_bw,
            source: format!("measured here: f32 GEMM on {threads} thread(s), parallel copy"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;

    /// Bytes per op: inputs + weights read once, the output written once, at the element size;
    /// the floor is the larger of the two ceilings' times.
    #[test]
    fn ops_count_their_least_traffic_and_floors_take_the_binding_ceiling() {
        let be = Profiled::new(CpuBackend::new(1).unwrap()).with_element_bytes(2);
        let spec = ConvSpec { cin: 3, cout: 4, k: [3, 3, 1], bias: true };
        let w = HostTensor::zeros(spec.weight_shape());
        let b = HostTensor::zeros(vec![4]);
        let conv = be.prepare_conv("test", spec, &w, Some(&b)).unwrap();
        let x = be.upload(&HostTensor::zeros(vec![2, 3, 5, 6, 7])).unwrap();
        let y = be.conv(&x, &conv).unwrap();
        let _ = be.sum(&[&y, &y], true).unwrap();
        let t = be.table();
        let get = |p: &str| t.iter().find(|(l, _)| l.starts_with(p)).map(|(_, s)| s.clone()).unwrap();
        let vox = 5 * 6 * 7;
        let c = get("conv ");
        assert_eq!(c.bytes, ((2 * 3 * vox + 3 * 4 * 9 + 2 * 4 * vox) * 2) as f64);
        assert_eq!(c.flops, (2 * 2 * vox * 3 * 4 * 9) as f64);
        assert_eq!(get("sum").bytes, (3 * 2 * 4 * vox * 2) as f64);
        let ceil = Ceilings { flops_per_s: 1e9, bytes_per_s: 1e6, source: String::new() };
        assert_eq!(ceil.bound(&c), "bytes");
        assert_eq!(ceil.floor(&c), c.bytes / 1e6);
        let fast_mem = Ceilings { bytes_per_s: 1e12, ..ceil };
        assert_eq!(fast_mem.bound(&c), "flops");
        assert_eq!(fast_mem.floor(&c), c.flops / 1e9);
    }
}
