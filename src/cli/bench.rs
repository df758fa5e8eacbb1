//! `fmseg bench`: patches per second and milliseconds per patch of the network, peak memory,
//! and optionally the time per layer against its arithmetic.

use anyhow::{bail, Context};
use clap::Args;

use crate::backend::cpu::CpuBackend;
use crate::backend::profile::{Ceilings, Clock, OpStat, Profiled};
use crate::backend::Backend;
use crate::engine::{Device, Engine};
use crate::model::init::{random_input, random_state_dict};
use crate::tensor::Dims;

#[cfg(feature = "cuda")]
mod graph;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// cpu, cuda (the GPU engine: timed with the input resident and the logits left on the
    /// device) or auto (cuda when a GPU is usable).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    /// Worker threads for the CPU engine (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Batch sizes to time, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub batch: Vec<usize>,
    /// Patch size H,W,D.
    #[arg(long, value_delimiter = ',', default_value = "192,192,16")]
    pub dims: Vec<usize>,
    /// Timed repetitions per batch size (after one warm-up).
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    /// Weights file (.pth, .safetensors, frozen); default: seeded random weights.
    #[arg(long)]
    pub weights: Option<std::path::PathBuf>,
    /// Also print the time per layer.
    #[arg(long)]
    pub layers: bool,
    /// Measure process CPU time instead of elapsed time (for a loaded machine; use with
    /// --threads 1 to get each op's own cost).
    #[arg(long)]
    pub cpu_time: bool,
    /// CPU engine: compute every convolution directly (no Winograd), for comparison.
    #[arg(long)]
    pub no_winograd: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Time training steps instead (CPU: forward on the gradient tape, the reference's losses,
    /// backward), per phase, with the peak memory.
    #[arg(long)]
    pub train: bool,
    /// Time a whole synthetic study instead (preprocessing, then one model without TTA, then
    /// the reference's fold ensemble with test-time augmentation).
    #[arg(long)]
    pub study: bool,
    #[command(flatten)]
    pub study_args: super::bench_study::StudyArgs,
    /// Time "last slice in -> mask out" for whole series instead, through the library's Rust
    /// API and its C ABI in alternation: p50, p95, p99, max and the breakdown (weights: --weights,
    /// else the bundled ones).
    #[arg(long)]
    pub latency: bool,
    #[command(flatten)]
    pub latency_args: super::bench_latency::LatencyArgs,
    /// CUDA: also time the forward pass replayed as a CUDA graph over the planned arena
    /// (eager vs graph on the device, graph end to end through pinned buffers, arena size).
    #[arg(long)]
    pub graph: bool,
    /// --layers on cuda: the tensor-core rate each layer's floor by arithmetic is taken at, in
    /// TFLOP/s (default: 798, this workplace's measured cuBLAS bf16 GEMM rate on H100 and H200;
    /// fp16 and bf16 tensor cores have the same rate on Hopper).
    #[arg(long, default_value_t = 798.0)]
    pub peak_tflops: f64,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let dims: Dims = args.dims.as_slice().try_into().context("--dims takes three sizes H,W,D")?;
    if args.latency {
        return super::bench_latency::run(
            args.device,
            args.threads,
            args.weights.as_deref(),
            &args.latency_args,
            args.json,
        );
    }
    let sd = match &args.weights {
        Some(p) => crate::weights::load_canonical(p)?,
        None => random_state_dict(0),
    };
    if args.train {
        if args.device.resolve() != Device::Cpu {
            bail!("--train: training runs on the CPU engine only (--device cpu)");
        }
        return bench_train(&args, &sd, dims);
    }
    if args.study {
        return super::bench_study::run(args.device, args.threads, &sd, &args.study_args, args.json);
    }
    match args.device.resolve() {
        #[cfg(feature = "cuda")]
        Device::Cuda if args.graph => graph::bench_graph(&args, &sd, dims),
        _ if args.graph => bail!("--graph: CUDA graphs need --device cuda and a build with the CUDA engine"),
        Device::Cpu | Device::Auto => {
            let cpu = CpuBackend::new(args.threads)?.with_winograd(!args.no_winograd);
            let threads = Some(cpu.threads());
            let ceilings = |b: &CpuBackend| Ok((4, Ceilings::measure_cpu(b.threads())));
            bench(cpu, ceilings, |_, _| None, &args, sd, dims, threads, false)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda => {
            let gpu = crate::backend::cuda::CudaBackend::new()?;
            // Timed on the device: the input is uploaded once and the logits stay there, so
            // the numbers are the engine's, not the PCIe bus's.
            let peak = args.peak_tflops * 1e12;
            let ceilings = |b: &crate::backend::cuda::CudaBackend| -> anyhow::Result<(usize, Ceilings)> {
                let source =
                    format!("{:.0} TFLOP/s tensor cores (--peak-tflops), copy bandwidth measured here", peak / 1e12);
                Ok((2, Ceilings { flops_per_s: peak, bytes_per_s: b.copy_bandwidth()?, source }))
            };
            let peak = |b: &crate::backend::cuda::CudaBackend, reset: bool| {
                if reset {
                    b.reset_memory_peak();
                }
                Some(b.memory_usage().2)
            };
            bench(gpu, ceilings, peak, &args, sd, dims, None, true)
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => {
            bail!("--device cuda: this build of fmseg has no CUDA engine (built without the `cuda` feature)")
        }
    }
}

/// `ceilings` gives the backend's element size and its two ceilings (for --layers);
/// `device_peak(backend, reset)` the device memory in use at its peak since the last reset.
#[allow(clippy::too_many_arguments)]
fn bench<B: Backend + 'static>(
    backend: B,
    ceilings: impl FnOnce(&B) -> anyhow::Result<(usize, Ceilings)>,
    device_peak: impl Fn(&B, bool) -> Option<usize>,
    args: &BenchArgs,
    sd: crate::weights::StateDict,
    dims: Dims,
    threads: Option<usize>,
    device_resident: bool,
) -> anyhow::Result<()> {
    let flops = crate::model::cost::forward_flops(dims)?;
    let mut rows = Vec::new();
    let clock = if args.cpu_time { Clock::ProcessCpu } else { Clock::Wall };
    if args.layers {
        let (elem_bytes, ceilings) = ceilings(&backend)?;
        let profiled = Profiled::new(backend).with_clock(clock).with_element_bytes(elem_bytes);
        let engine = Engine::new(profiled, &sd)?;
        let x = random_input(1, 1, dims);
        engine.logits(&x)?;
        engine.backend().reset();
        let t0 = clock.now();
        engine.logits(&x)?;
        let total = clock.now() - t0;
        print_layers(&engine.backend().table(), total, &ceilings);
        return Ok(());
    }
    let engine = Engine::new(backend, &sd)?;
    // The engine holds its weights in its own (packed, transformed) form: the checkpoint's
    // tensors are not part of a running engine's memory, nor of the peak RSS reported below.
    drop(sd);
    let be = engine.backend();
    for &n in &args.batch {
        let x = random_input(n as u64, n, dims);
        device_peak(be, true);
        let resident = if device_resident { Some(be.upload(&x)?) } else { None };
        let once = || -> anyhow::Result<()> {
            match &resident {
                Some(xt) => {
                    let out = engine.model().forward(be, xt)?;
                    be.synchronize()?;
                    drop(out);
                }
                None => {
                    std::hint::black_box(engine.logits(&x)?);
                }
            }
            Ok(())
        };
        once()?; // warm-up: buffers, page faults, kernel modules
        let mut times = Vec::with_capacity(args.iters);
        for _ in 0..args.iters.max(1) {
            let t0 = clock.now();
            once()?;
            times.push(clock.now() - t0);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        // The activations the planned arena would hold (fp16 channels-last, as the CUDA engine).
        let arena = if device_resident { crate::model::cost::planned_arena_bytes(dims, n).ok() } else { None };
        rows.push((n, median, times[0], device_peak(be, false), arena));
    }
    let peak = peak_rss_bytes();
    if args.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(n, med, best, dev, arena)| {
                serde_json::json!({"batch": n, "ms_per_patch": med * 1e3 / *n as f64, "best_ms_per_patch": best * 1e3 / *n as f64,
                "patches_per_s": *n as f64 / med, "gflops": flops * *n as f64 / med / 1e9,
                "device_peak_bytes": dev, "planned_arena_bytes": arena})
            })
            .collect();
        crate::outln!(
            "{}",
            serde_json::json!({"device": be.name(), "threads": threads, "dims": dims,
            "gflop_per_patch": flops / 1e9, "peak_rss_bytes": peak, "device_resident": device_resident, "results": v})
        );
        return Ok(());
    }
    crate::outln!("device: {}   patch {}x{}x{}   {:.1} GFLOP/patch", be.name(), dims[0], dims[1], dims[2], flops / 1e9);
    if device_resident {
        crate::outln!("timing: the forward pass on the device (input resident, logits left there), synchronised");
    }
    let mib = |b: Option<usize>| b.map_or("-".to_string(), |b| format!("{:.0}", b as f64 / (1 << 20) as f64));
    crate::outln!(
        "{:>6} {:>14} {:>14} {:>12} {:>10} {:>12} {:>12}",
        "batch",
        "ms/patch(med)",
        "ms/patch(best)",
        "patches/s",
        "GFLOP/s",
        "device MiB",
        "arena MiB"
    );
    for (n, med, best, dev, arena) in rows {
        crate::outln!(
            "{:>6} {:>14.3} {:>14.3} {:>12.3} {:>10.1} {:>12} {:>12}",
            n,
            med * 1e3 / n as f64,
            best * 1e3 / n as f64,
            n as f64 / med,
            flops * n as f64 / med / 1e9,
            mib(dev),
            mib(arena)
        );
    }
    if device_resident {
        crate::outln!(
            "device MiB: the pool's peak in use for that batch (weights included); arena MiB: the planned arena"
        );
    }
    match peak {
        Some(b) => crate::outln!("peak memory (RSS high-water mark): {:.0} MiB", b as f64 / (1 << 20) as f64),
        None => crate::outln!("peak memory: unavailable on this OS"),
    }
    Ok(())
}

/// Time per op against its floor: the larger of its arithmetic at the arithmetic ceiling and
/// its least memory traffic at the bandwidth ceiling.
fn print_layers(table: &[(String, OpStat)], total: f64, c: &Ceilings) {
    crate::outln!("ceilings: {:.1} TFLOP/s, {:.1} GB/s ({})", c.flops_per_s / 1e12, c.bytes_per_s / 1e9, c.source);
    crate::outln!(
        "{:>9} {:>6} {:>7} {:>9} {:>8} {:>9} {:>8} {:>6}  op",
        "ms",
        "%",
        "calls",
        "GFLOP/s",
        "GB/s",
        "floor ms",
        "x floor",
        "bound"
    );
    let mut floor_total = 0.0;
    for (label, s) in table {
        let rate = if s.flops > 0.0 { format!("{:.1}", s.flops / s.seconds / 1e9) } else { "-".into() };
        let floor = c.floor(s);
        floor_total += floor;
        let (x, bound) =
            if floor > 0.0 { (format!("{:.1}", s.seconds / floor), c.bound(s)) } else { ("-".into(), "-") };
        crate::outln!(
            "{:>9.3} {:>6.1} {:>7} {:>9} {:>8.1} {:>9.4} {:>8} {:>6}  {label}",
            s.seconds * 1e3,
            100.0 * s.seconds / total,
            s.calls,
            rate,
            s.bytes / s.seconds / 1e9,
            floor * 1e3,
            x,
            bound
        );
    }
    crate::outln!(
        "{:>9.3} total; sum of the floors {:.4} ms ({:.1}x)",
        total * 1e3,
        floor_total * 1e3,
        total / floor_total.max(1e-12)
    );
}

/// Seconds per training step for each batch size, with the time of each phase.
fn bench_train(args: &BenchArgs, sd: &crate::weights::StateDict, dims: Dims) -> anyhow::Result<()> {
    use crate::train::{step, tape::TapeBackend};
    let tape = TapeBackend::new(CpuBackend::new(args.threads)?.with_winograd(!args.no_winograd));
    crate::outln!("training step on {}, patch {dims:?}", tape.name());
    let mut results = Vec::new();
    for &b in &args.batch {
        let x = random_input(1, b, dims);
        // A label with some foreground: the upper tail of a smooth-ish random field.
        let label: Vec<u8> = x.data.iter().map(|&v| (v > 1.5) as u8).collect();
        step::forward_backward(&tape, sd, &x, &label, step::InputGrad::Skipped)?;
        let mut times = Vec::new();
        let mut phases: Vec<(String, f64)> = Vec::new();
        for _ in 0..args.iters.max(1) {
            let t = std::time::Instant::now();
            let r = step::forward_backward(&tape, sd, &x, &label, step::InputGrad::Skipped)?;
            times.push(t.elapsed().as_secs_f64());
            for (name, s) in r.seconds {
                match phases.iter_mut().find(|(n, _)| *n == name) {
                    Some(p) => p.1 += s,
                    None => phases.push((name, s)),
                }
            }
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let n = times.len() as f64;
        phases.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top: Vec<String> = phases.iter().take(6).map(|(p, s)| format!("{p} {:.2}", s / n)).collect();
        crate::outln!(
            "batch {b}: {median:.2} s per step (median of {}), {:.2} s per patch; {}",
            times.len(),
            median / b as f64,
            top.join(", ")
        );
        results.push(serde_json::json!({"batch": b, "seconds_per_step": median}));
    }
    match peak_rss_bytes() {
        Some(p) => crate::outln!("peak memory (RSS high-water mark): {:.0} MiB", p as f64 / (1 << 20) as f64),
        None => crate::outln!("peak memory: unavailable on this OS"),
    }
    if args.json {
        crate::outln!("{}", serde_json::json!({"train": results, "peak_rss_bytes": peak_rss_bytes()}));
    }
    Ok(())
}

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
