//! `fmseg bench --latency`: "last slice in -> mask out" over many series of one size, through
//! the Rust API and the C ABI in alternation ([`crate::embed::latency`]), with p50/p95/p99/max
//! and the breakdown.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

use crate::embed::latency::{c_call, rust_call, AbiEngine, PreparedSeries, Route, Sample, Summary};
use crate::embed::{Segmenter, SegmenterOptions, SeriesPlan};
use crate::engine::Device;

#[derive(Args, Debug)]
pub struct LatencyArgs {
    /// --latency: series per route (default: 20 on the CPU, 100 on a GPU).
    #[arg(long)]
    pub series: Option<usize>,
    /// --latency: the series' voxels (columns, rows, slices).
    #[arg(long, value_delimiter = ',', default_value = "448,448,24")]
    pub series_dims: Vec<usize>,
    /// --latency: their spacing in mm.
    #[arg(long, value_delimiter = ',', default_value = "0.7,0.7,4")]
    pub series_spacing: Vec<f64>,
    /// --latency: the routes to time, alternating per series: rust, c.
    #[arg(long, value_delimiter = ',', default_value = "rust,c")]
    pub routes: Vec<String>,
}

pub fn run(device: Device, threads: usize, weights: Option<&Path>, a: &LatencyArgs, json: bool) -> anyhow::Result<()> {
    let dims: [usize; 3] = a.series_dims.as_slice().try_into().context("--series-dims takes three sizes")?;
    let spacing_mm: [f64; 3] = a.series_spacing.as_slice().try_into().context("--series-spacing takes three values")?;
    if dims.iter().any(|&d| d < 2) || spacing_mm.iter().any(|&s| !(s > 0.0 && s.is_finite())) {
        bail!("--series-dims must be at least 2 per axis and --series-spacing positive: {dims:?} at {spacing_mm:?} mm");
    }
    let plan = SeriesPlan { dims, spacing_mm };
    let mut routes = Vec::new();
    for r in &a.routes {
        routes.push(match r.as_str() {
            "rust" => Route::Rust,
            "c" => Route::CAbi,
            r => bail!("--routes {r}: expected rust or c"),
        });
    }
    let weights: PathBuf = match weights {
        Some(p) => p.to_path_buf(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(super::segment::BUNDLED_WEIGHTS),
    };

    // Both engines are built and warmed up before any series is timed.
    let rust = if routes.contains(&Route::Rust) {
        let mut o = SegmenterOptions::new(&weights);
        o.device = device;
        o.threads = threads;
        o.plan = plan;
        Some(Segmenter::new(&o)?)
    } else {
        None
    };
    let c = if routes.contains(&Route::CAbi) {
        let code = match device {
            Device::Auto => 0,
            Device::Cpu => 1,
            Device::Cuda => 2,
        };
        Some(AbiEngine::create(&weights, code, threads as u32, &plan)?)
    } else {
        None
    };
    let device_name = match (&rust, &c) {
        (Some(s), _) => s.device(),
        (None, Some(c)) => c.device()?,
        (None, None) => bail!("--routes: name at least one of rust, c"),
    };
    let n = a.series.unwrap_or(if device_name.starts_with("cpu") { 20 } else { 100 });
    if n == 0 {
        bail!("--series must be at least 1");
    }

    // The control: one fixed 192x192x16 forward pass on a CPU engine of the same weights, timed
    // between series. Its spread is the machine's own (the work never changes), against which
    // the series' spread can be read.
    let control = if device_name.starts_with("cpu") {
        let sd = crate::weights::load_canonical(&weights)?;
        let e = crate::engine::AnyEngine::new(Device::Cpu, threads, &sd)?;
        let x = crate::model::init::random_input(7, 1, [192, 192, 16]);
        e.on_workers(|| e.logits(&x))?;
        Some((e, x))
    } else {
        None
    };
    let mut control_ms = Vec::with_capacity(n);
    let mut samples: Vec<(Route, Vec<Sample>)> = routes.iter().map(|&r| (r, Vec::with_capacity(n))).collect();
    let mut mask = Vec::new();
    let bar = indicatif::ProgressBar::new((n * routes.len()) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} calls, {elapsed} elapsed, ~{eta} left")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message("latency");
    for i in 0..n {
        // A fresh series each time (made before the clock), the routes in turn on it.
        let series = PreparedSeries::synthetic(&plan, i as u64 + 1)?;
        for (route, out) in samples.iter_mut() {
            let s = match route {
                Route::Rust => rust_call(rust.as_ref().expect("built above"), &series)?,
                Route::CAbi => c_call(c.as_ref().expect("built above"), &series, &mut mask)?,
            };
            out.push(s);
            bar.inc(1);
        }
        if let Some((e, x)) = &control {
            let t = std::time::Instant::now();
            e.on_workers(|| e.logits(x))?;
            control_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    bar.finish_and_clear();
    let summaries: Vec<Summary> = samples.iter().map(|(r, s)| Summary::of(*r, s)).collect();
    let q = |p: f64| crate::embed::latency::quantile(&control_ms, p);
    let control_json = (!control_ms.is_empty()).then(|| {
        serde_json::json!({"what": "one fixed 192x192x16 forward pass, timed between series", "p50_ms": q(0.5),
            "p99_ms": q(0.99), "max_ms": q(1.0), "each_ms": control_ms})
    });

    if json {
        crate::outln!(
            "{}",
            serde_json::json!({"device": device_name, "threads": threads, "series_dims": dims,
            "series_spacing_mm": spacing_mm, "weights": weights, "routes": summaries, "control": control_json})
        );
        return Ok(());
    }
    crate::outln!(
        "latency, last slice in -> mask out: {n} series of {} x {} x {} voxels ({} x {} x {} mm) per route, alternating",
        dims[0],
        dims[1],
        dims[2],
        spacing_mm[0],
        spacing_mm[1],
        spacing_mm[2]
    );
    crate::outln!("device: {device_name}   weights: {}", weights.display());
    crate::outln!(
        "{:<9} {:>9} {:>9} {:>9} {:>9}   {:>8} {:>10} {:>9} {:>8} {:>11} {:>7} {:>9}",
        "route",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "assemble",
        "preprocess",
        "network",
        "windows",
        "postprocess",
        "report",
        "overhead"
    );
    for s in &summaries {
        crate::outln!(
            "{:<9} {:>9.1} {:>9.1} {:>9.1} {:>9.1}   {:>8.1} {:>10.1} {:>9.1} {:>8.1} {:>11.1} {:>7.1} {:>8.1}%",
            s.route,
            s.p50_ms,
            s.p95_ms,
            s.p99_ms,
            s.max_ms,
            s.assemble_ms,
            s.preprocess_ms,
            s.network_ms,
            s.windows_ms,
            s.postprocess_ms,
            s.report_ms,
            s.overhead_share * 100.0
        );
    }
    crate::outln!(
        "breakdown: medians in ms; assemble = the last push + SeriesBuilder::finish (Rust route); overhead = everything \
         but the network, share of the latency"
    );
    for s in &summaries {
        crate::outln!("{}: p99 is {:+.1}% of p50", s.route, s.p99_over_p50 * 100.0);
    }
    if !control_ms.is_empty() {
        crate::outln!(
            "control (the machine's own spread): one fixed 192x192x16 forward pass between series: p50 {:.1} ms, p99 \
             {:.1} ms ({:+.1}%)",
            q(0.5),
            q(0.99),
            (q(0.99) / q(0.5) - 1.0) * 100.0
        );
    }
    Ok(())
}
