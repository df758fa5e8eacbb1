//! [`Segmenter`]: an engine built once, then a finished series in, its mask out, as many times
//! as a scanner sends series.
//!
//! Construction does everything that can be done ahead: the weights are read, checked and
//! prepared on the device (packed for the CPU kernels, FP16 on the GPU), and one warm-up
//! segmentation of a series of the planned size runs, so that the CPU engine's buffer pool
//! holds every large buffer a call of that size needs and the first real call is as fast as
//! the hundredth. A call then reads no file and compiles nothing.
//!
//! Concurrency: `Segmenter` is `Send + Sync`. Calls from several threads queue on one lock
//! and run one at a time (each already uses every engine thread, or the whole GPU), so they
//! never share a buffer and never slow each other down beyond the wait.
//!
//! Allocation, on the CPU after warm-up (tests/embed.rs counts it with a counting global
//! allocator): the network allocates 3 buffers per window (the logits it returns, their shape,
//! the output's map list): every activation comes from the engine's buffer pool and every
//! per-op vector from its scratch. The pipeline around it works in whole-volume steps and
//! allocates about 17 buffers of one volume each per call (resampling, padding, blending,
//! the way back to the input grid, the report) plus the returned mask and findings: 75-80
//! allocations in all for a one-window series.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::engine::{AnyEngine, Device};
use crate::error::{Error, Result};
use crate::pipeline::report::{analyse, Findings, Midline, WeightsInfo};
use crate::pipeline::segment::{self, SegmentConfig, StageTime};
use crate::pipeline::tta::TtaConfig;
use crate::pipeline::window::Predictor;
use crate::tensor::{Dims, HostTensor};
use crate::volume::Volume;

/// The series size a [`Segmenter`] is planned and warmed up for: voxels per axis and their
/// spacing in mm (an axial stack). A typical sacroiliac T1 series is the default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeriesPlan {
    pub dims: Dims,
    pub spacing_mm: [f64; 3],
}

impl Default for SeriesPlan {
    /// 448 x 448 x 24 voxels of 0.7 x 0.7 x 4 mm.
    fn default() -> Self {
        SeriesPlan { dims: [448, 448, 24], spacing_mm: [0.7, 0.7, 4.0] }
    }
}

/// How to build a [`Segmenter`]. `weights` is required; the rest defaults to the reference's
/// inference (one pass, no test-time augmentation) on the best device present.
#[derive(Clone, Debug)]
pub struct SegmenterOptions {
    /// One weights file (`.pth`, `.safetensors`, `.fmw`), or several for the reference's fold
    /// ensemble (logits averaged).
    pub weights: Vec<PathBuf>,
    pub device: Device,
    /// CPU engine worker threads (0 = all cores).
    pub threads: usize,
    /// The reference test script's test-time augmentation (13 passes per model).
    pub tta: Option<TtaConfig>,
    /// Also return the class-1 probability on the input grid.
    pub probability: bool,
    /// The series size to warm up for.
    pub plan: SeriesPlan,
    /// Run one segmentation of a `plan`-sized series at construction (recommended; off only
    /// where start-up time matters more than the first call's).
    pub warm_up: bool,
}

impl SegmenterOptions {
    pub fn new(weights: impl Into<PathBuf>) -> Self {
        SegmenterOptions {
            weights: vec![weights.into()],
            device: Device::Auto,
            threads: 0,
            tta: None,
            probability: false,
            plan: SeriesPlan::default(),
            warm_up: true,
        }
    }
}

/// Seconds spent per stage of one call. `network` is the time inside the network's forward
/// passes; `windows` the rest of the sliding-window stage (cutting patches, blending).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    pub preprocess: f64,
    pub network: f64,
    pub windows: f64,
    pub postprocess: f64,
    pub report: f64,
    pub total: f64,
}

impl Timings {
    /// Everything but the network itself.
    pub fn overhead(&self) -> f64 {
        self.total - self.network
    }
}

/// One call's result: the mask on the input's own grid and what can be read off it.
#[derive(Clone, Debug, PartialEq)]
pub struct Segmentation {
    /// 0 (background) or 1 (fat metaplasia) per voxel, on the input's grid and affine.
    pub mask: Volume,
    /// The class-1 probability on the input grid, when the options asked for it.
    pub probability: Option<Volume>,
    /// Volumes, lesions, sides and slices of the mask.
    pub findings: Findings,
    pub timings: Timings,
    /// What a user should know about this result (e.g. an image much smaller than the patch).
    pub warnings: Vec<String>,
}

/// The network weights on their device, and the settings every call uses.
pub struct Segmenter {
    engines: Vec<AnyEngine>,
    weights: Vec<WeightsInfo>,
    cfg: SegmentConfig,
    plan: SeriesPlan,
    /// Serialises calls (see the module docs).
    lock: Mutex<()>,
}

impl Segmenter {
    /// Loads and prepares the weights and, with `warm_up`, runs one segmentation of a series
    /// of the planned size.
    pub fn new(options: &SegmenterOptions) -> Result<Self> {
        if options.weights.is_empty() {
            return Err(Error::Value("Segmenter: no weights file given".into()));
        }
        let mut engines = Vec::with_capacity(options.weights.len());
        let mut weights = Vec::with_capacity(options.weights.len());
        for path in &options.weights {
            weights.push(WeightsInfo::of(path, false)?);
            let sd = crate::weights::load_canonical(path)?;
            engines.push(AnyEngine::new(options.device, options.threads, &sd)?);
        }
        let cfg =
            SegmentConfig { tta: options.tta.clone(), probability: options.probability, ..SegmentConfig::default() };
        let s = Segmenter { engines, weights, cfg, plan: options.plan, lock: Mutex::new(()) };
        if options.warm_up {
            s.segment_named(&synthetic_series(&options.plan, 0)?, Path::new("warm-up series"))?;
        }
        Ok(s)
    }

    /// The device the network runs on, in words.
    pub fn device(&self) -> String {
        self.engines[0].device_name()
    }

    pub fn weights(&self) -> &[WeightsInfo] {
        &self.weights
    }

    pub fn plan(&self) -> SeriesPlan {
        self.plan
    }

    /// Segment one series. The volume must be 3-D with at least 2 voxels along every axis,
    /// finite, not constant, with an invertible affine (LPS); anything else is refused with
    /// the reason.
    pub fn segment(&self, volume: &Volume) -> Result<Segmentation> {
        self.segment_named(volume, Path::new("input volume"))
    }

    /// Read an image (a DICOM directory or file, an Enhanced MR object, a NIfTI file) and
    /// segment it. The read is not part of the returned timings.
    pub fn segment_path(&self, path: &Path) -> Result<Segmentation> {
        let loaded = segment::load_input(path, None)?;
        let mut s = self.segment_named(&loaded.image, path)?;
        if loaded.info.uncoded_nifti {
            s.warnings
                .insert(0, format!("{}: the NIfTI file has no orientation (qform and sform codes 0)", path.display()));
        }
        Ok(s)
    }

    /// As [`Segmenter::segment`], naming the volume `name` in messages.
    pub fn segment_named(&self, volume: &Volume, name: &Path) -> Result<Segmentation> {
        let _turn = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let t0 = Instant::now();
        // Nanoseconds inside the network's forward passes (atomic: the call runs on a worker).
        let network_ns = AtomicU64::new(0);
        let seg = self.engines[0].on_workers(|| {
            let mut closures: Vec<_> = self
                .engines
                .iter()
                .map(|e| {
                    let network_ns = &network_ns;
                    move |x: &HostTensor| {
                        let t = Instant::now();
                        let r = e.logits(x);
                        network_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        r
                    }
                })
                .collect();
            let mut models: Vec<&mut dyn Predictor> = closures.iter_mut().map(|c| c as &mut dyn Predictor).collect();
            segment::segment_image(volume, name, false, &self.cfg, &mut models, &mut |_| {})
        })?;
        let network = network_ns.load(Ordering::Relaxed) as f64 * 1e-9;
        let t = Instant::now();
        let findings = analyse(&seg.mask, &Midline::from_image(volume))?;
        let report = t.elapsed().as_secs_f64();
        let stage =
            |name: &str| seg.timings.iter().filter(|s: &&StageTime| s.stage == name).map(|s| s.seconds).sum::<f64>();
        let inference = stage("inference");
        let timings = Timings {
            preprocess: stage("preprocess"),
            network,
            windows: (inference - network).max(0.0),
            postprocess: stage("postprocess"),
            report,
            total: t0.elapsed().as_secs_f64(),
        };
        Ok(Segmentation { mask: seg.mask, probability: seg.probability, findings, timings, warnings: seg.warnings })
    }
}

/// The `seed`-th synthetic series of the plan's size: a body-like bright ellipse with two
/// darker "bones", its texture shifted by `seed`. It is what the warm-up call segments (seed
/// 0; its result is discarded, only its buffers' sizes matter) and what the latency benchmark
/// sends.
pub fn synthetic_series(plan: &SeriesPlan, seed: u64) -> Result<Volume> {
    let d = plan.dims;
    let mut data = vec![0f32; d[0] * d[1] * d[2]];
    let phase = seed as f32 * 0.37;
    for i in 0..d[0] {
        for j in 0..d[1] {
            let (x, y) = (i as f32 / d[0] as f32 - 0.5, j as f32 / d[1] as f32 - 0.5);
            let body = x * x / 0.16 + y * y / 0.09 < 1.0;
            let bone = ((x.abs() - 0.12) / 0.05).powi(2) + (y / 0.08).powi(2) < 1.0;
            let v = if bone {
                250.0
            } else if body {
                400.0 + 50.0 * (x * 7.0 + phase).sin()
            } else {
                10.0
            };
            for k in 0..d[2] {
                data[(i * d[1] + j) * d[2] + k] = v + k as f32;
            }
        }
    }
    let mut a = crate::volume::IDENTITY;
    for c in 0..3 {
        a[c][c] = plan.spacing_mm[c];
    }
    Volume::new(d, data, a)
}
