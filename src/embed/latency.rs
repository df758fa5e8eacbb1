//! Latency of one series as a scanner sees it: "last slice in -> mask out", through the Rust
//! API ([`SeriesBuilder`] then [`Segmenter::segment`]) and through the C ABI
//! (`fmseg_segment_volume` into a caller-owned mask), over many series of one size.
//! `fmseg bench --latency` prints it; `benches/cpu.rs` times one call of each route.
//!
//! What counts: for the Rust route, every slice but the last is pushed before the clock starts
//! (its decode, rescale and checks run as slices arrive); the clock covers the last push,
//! `finish` (ordering, spacing checks, the copy into the volume) and the segmentation. For the
//! C route the caller's voxel buffer is complete when the clock starts; the clock covers the
//! ABI call (its layout copy in, the segmentation, the mask copied out).

use std::time::Instant;

use super::capi::{self, FmsegEngine, FmsegOptions, FmsegStatus, FmsegTimings};
use super::segmenter::{synthetic_series, Segmenter, SeriesPlan, Timings};
use super::series_builder::{slice_of, SeriesBuilder, SliceGeometry};
use crate::error::{Error, Result};
use crate::volume::Volume;

/// Which front door a call goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `SeriesBuilder` + `Segmenter::segment`.
    Rust,
    /// `fmseg_segment_volume`.
    CAbi,
}

impl Route {
    pub fn name(self) -> &'static str {
        match self {
            Route::Rust => "Rust API",
            Route::CAbi => "C ABI",
        }
    }
}

/// One series, ready to be handed over: its slices (for the builder) and its voxels in the
/// ABI's layout (column fastest, then row, then slice), both made before any clock starts.
pub struct PreparedSeries {
    pub slices: Vec<(SliceGeometry, Vec<f32>)>,
    pub abi_voxels: Vec<f32>,
    pub dims: [usize; 3],
    /// Row-major 4 x 4 LPS affine.
    pub abi_affine: [f64; 16],
}

impl PreparedSeries {
    /// The `seed`-th synthetic series of the plan's size.
    pub fn synthetic(plan: &SeriesPlan, seed: u64) -> Result<Self> {
        Ok(Self::of(&synthetic_series(plan, seed)?))
    }

    /// A volume cut into the slices a scanner would send (each with its DICOM geometry).
    pub fn of(v: &Volume) -> Self {
        let slices: Vec<(SliceGeometry, Vec<f32>)> = (0..v.dims[2]).map(|k| slice_of(v, k)).collect();
        // The ABI's layout is the slices' row-major pixels one after the other.
        let abi_voxels = slices.iter().flat_map(|(_, px)| px.iter().copied()).collect();
        let mut abi_affine = [0f64; 16];
        for (d, row) in v.affine.iter().enumerate() {
            abi_affine[d * 4..d * 4 + 4].copy_from_slice(row);
        }
        PreparedSeries { slices, abi_voxels, dims: v.dims, abi_affine }
    }
}

/// One call: the latency and its breakdown.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Last slice in (or the ABI call made) -> mask out, seconds.
    pub latency: f64,
    /// The part spent in the last push and `finish` (Rust route; 0 for the C route).
    pub assemble: f64,
    /// The segmentation's own stages.
    pub stages: Timings,
    pub fm_voxels: usize,
}

/// An engine behind the C ABI, freed on drop.
pub struct AbiEngine(*mut FmsegEngine);

impl AbiEngine {
    /// `fmseg_engine_create` with the segmenter's plan, warmed up like it.
    pub fn create(weights: &std::path::Path, device: u32, threads: u32, plan: &SeriesPlan) -> Result<Self> {
        let mut o = std::mem::MaybeUninit::<FmsegOptions>::uninit();
        abi(capi::fmseg_options_init(o.as_mut_ptr()), "fmseg_options_init")?;
        // SAFETY: initialised by fmseg_options_init (checked above).
        let mut o = unsafe { o.assume_init() };
        o.device = device;
        o.threads = threads;
        o.plan_dims = plan.dims;
        o.plan_spacing_mm = plan.spacing_mm;
        let path = std::ffi::CString::new(weights.to_string_lossy().as_bytes())
            .map_err(|_| Error::Value(format!("{}: a path with a NUL byte", weights.display())))?;
        let mut e = std::ptr::null_mut();
        abi(capi::fmseg_engine_create(path.as_ptr(), &o, &mut e), "fmseg_engine_create")?;
        Ok(AbiEngine(e))
    }

    /// The device, in words (`fmseg_engine_device`).
    pub fn device(&self) -> Result<String> {
        let mut buf = [0 as std::ffi::c_char; 256];
        abi(capi::fmseg_engine_device(self.0, buf.as_mut_ptr(), buf.len()), "fmseg_engine_device")?;
        // SAFETY: fmseg_engine_device wrote a NUL-terminated string into the buffer.
        Ok(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
    }
}

impl Drop for AbiEngine {
    fn drop(&mut self) {
        capi::fmseg_engine_free(self.0);
    }
}

fn abi(s: FmsegStatus, call: &str) -> Result<()> {
    if s == FmsegStatus::FmsegOk {
        return Ok(());
    }
    // SAFETY: fmseg_last_error never returns NULL and its string lives until the next call.
    let msg = unsafe { std::ffi::CStr::from_ptr(capi::fmseg_last_error()) }.to_string_lossy().into_owned();
    Err(Error::Value(format!("{call} returned {s:?}: {msg}")))
}

/// One series through the Rust API.
pub fn rust_call(segmenter: &Segmenter, series: &PreparedSeries) -> Result<Sample> {
    let [ni, nj, nk] = series.dims;
    let (rows, cols) = (u16::try_from(nj), u16::try_from(ni));
    let (Ok(rows), Ok(cols)) = (rows, cols) else {
        return Err(Error::Value(format!("a {ni} x {nj} slice does not fit DICOM's 16-bit rows and columns")));
    };
    let mut b = SeriesBuilder::with_capacity("latency series", rows, cols, nk);
    let (last, before) = series.slices.split_last().ok_or_else(|| Error::Value("a series without slices".into()))?;
    for (g, px) in before {
        b.push(*g, px, 1.0, 0.0)?;
    }
    let t0 = Instant::now();
    b.push(last.0, &last.1, 1.0, 0.0)?;
    let volume = b.finish()?;
    let assemble = t0.elapsed().as_secs_f64();
    let s = segmenter.segment(&volume)?;
    let latency = t0.elapsed().as_secs_f64();
    Ok(Sample { latency, assemble, stages: s.timings, fm_voxels: s.findings.fm_voxels })
}

/// One series through the C ABI into `mask` (the caller's buffer, reused across calls).
pub fn c_call(engine: &AbiEngine, series: &PreparedSeries, mask: &mut Vec<u8>) -> Result<Sample> {
    let n = series.abi_voxels.len();
    mask.resize(n, 0);
    let t0 = Instant::now();
    let s = capi::fmseg_segment_volume(
        engine.0,
        series.abi_voxels.as_ptr(),
        series.dims.as_ptr(),
        series.abi_affine.as_ptr(),
        mask.as_mut_ptr(),
        n,
    );
    let latency = t0.elapsed().as_secs_f64();
    abi(s, "fmseg_segment_volume")?;
    let mut t = FmsegTimings::default();
    abi(capi::fmseg_last_timings(engine.0, &mut t), "fmseg_last_timings")?;
    let stages = Timings {
        preprocess: t.preprocess_s,
        network: t.network_s,
        windows: t.windows_s,
        postprocess: t.postprocess_s,
        report: t.report_s,
        total: t.total_s,
    };
    Ok(Sample { latency, assemble: 0.0, stages, fm_voxels: mask.iter().filter(|&&m| m == 1).count() })
}

/// The nearest-rank `p`-quantile (0 < p <= 1) of `xs`.
pub fn quantile(xs: &[f64], p: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied().unwrap_or(f64::NAN)
}

/// Latency statistics of one route.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub route: &'static str,
    pub series: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Medians of the breakdown, ms.
    pub assemble_ms: f64,
    pub preprocess_ms: f64,
    pub network_ms: f64,
    pub windows_ms: f64,
    pub postprocess_ms: f64,
    pub report_ms: f64,
    /// Everything but the network, as a share of the median latency.
    pub overhead_share: f64,
    /// p99 / p50 - 1.
    pub p99_over_p50: f64,
    /// Every call's latency and its network time, ms, in call order.
    pub latencies_ms: Vec<f64>,
    pub network_ms_each: Vec<f64>,
}

impl Summary {
    pub fn of(route: Route, samples: &[Sample]) -> Self {
        let ms = |f: &dyn Fn(&Sample) -> f64| quantile(&samples.iter().map(f).collect::<Vec<_>>(), 0.5) * 1e3;
        let lat: Vec<f64> = samples.iter().map(|s| s.latency).collect();
        let (p50, p99) = (quantile(&lat, 0.5), quantile(&lat, 0.99));
        let overhead: Vec<f64> = samples.iter().map(|s| (s.latency - s.stages.network) / s.latency).collect();
        Summary {
            route: route.name(),
            series: samples.len(),
            p50_ms: p50 * 1e3,
            p95_ms: quantile(&lat, 0.95) * 1e3,
            p99_ms: p99 * 1e3,
            max_ms: quantile(&lat, 1.0) * 1e3,
            assemble_ms: ms(&|s| s.assemble),
            preprocess_ms: ms(&|s| s.stages.preprocess),
            network_ms: ms(&|s| s.stages.network),
            windows_ms: ms(&|s| s.stages.windows),
            postprocess_ms: ms(&|s| s.stages.postprocess),
            report_ms: ms(&|s| s.stages.report),
            overhead_share: quantile(&overhead, 0.5),
            p99_over_p50: p99 / p50 - 1.0,
            latencies_ms: lat.iter().map(|l| l * 1e3).collect(),
            network_ms_each: samples.iter().map(|s| s.stages.network * 1e3).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let xs: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        assert_eq!(quantile(&xs, 0.5), 10.0);
        assert_eq!(quantile(&xs, 0.95), 19.0);
        assert_eq!(quantile(&xs, 0.99), 20.0);
        assert_eq!(quantile(&xs, 1.0), 20.0);
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
    }

    /// A volume cut into slices and put together again by the builder is the same volume,
    /// whatever order the slices arrive in; the ABI copy is the same voxels column-fastest.
    #[test]
    fn prepared_slices_rebuild_the_volume() {
        let plan = SeriesPlan { dims: [20, 14, 6], spacing_mm: [0.7, 0.8, 4.0] };
        let v = synthetic_series(&plan, 3).unwrap();
        let p = PreparedSeries::of(&v);
        let mut b = SeriesBuilder::new("t", 14, 20);
        for k in [3, 0, 5, 1, 4, 2] {
            b.push(p.slices[k].0, &p.slices[k].1, 1.0, 0.0).unwrap();
        }
        let w = b.finish().unwrap();
        assert_eq!(w.dims, v.dims);
        assert_eq!(w.data, v.data);
        for r in 0..4 {
            for c in 0..4 {
                assert!((w.affine[r][c] - v.affine[r][c]).abs() < 1e-9, "{:?} vs {:?}", w.affine, v.affine);
            }
        }
        let (i, j, k) = (7, 5, 4);
        assert_eq!(p.abi_voxels[(k * 14 + j) * 20 + i], v.data[(i * 14 + j) * 6 + k]);
    }
}
