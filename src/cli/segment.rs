//! `fmseg segment INPUT --out DIR`: the clinical command. Segments fat metaplasia in a T1 MRI
//! (NIfTI, or DICOM: a file, a directory, an Enhanced MR object) and writes into DIR:
//!
//! - `fm_mask.nii.gz`: the mask, u8 0/1, on the input's own grid and affine (ITK-SNAP and
//!   nibabel overlay it on the input as is);
//! - `report.json`: volumes, lesions, sides, slices, and how the result was made
//!   ([`crate::pipeline::report`]);
//! - `overlay.png`: the outline of the mask on the image's slices ([`crate::pipeline::overlay`]);
//! - with `--probability`, `fm_probability.nii.gz`: the class-1 probability, f32;
//! - with `--seg` (DICOM input), `fm_seg.dcm`: the mask as a DICOM SEG of the source series, one
//!   frame on each source image plane, in the source's patient and study
//!   ([`crate::io::dicom::seg_object`]).
//!
//! With `--truth MASK` (a 0/1 NIfTI on the input's grid, any voxel order) the report gains a
//! `truth` section (Dice, precision, recall, lesions found, missed and false) and the overlay
//! tints found, missed and false FM instead of outlining the mask ([`crate::pipeline::truth`]).
//!
//! DIR is locked and checked writable before any work ([`OutputDir`]): a second run into it
//! is refused, an input that is one of the outputs is refused, and the outputs replace an
//! earlier run's as a group (an earlier `fm_probability.nii.gz` goes when this run makes
//! none). A failure leaves the previous results as they were (and removes DIR again if this
//! run created it).
//!
//! Weights: `--weights` (repeat for a fold ensemble), else the files in the environment
//! variable `FMSEG_WEIGHTS` (a path, or several joined by the platform's path separator),
//! else the bundled `weights/fmseg-unet25d.fmw` of the source tree fmseg was built from.
//! Weights that are not known to be trained (metadata `trained=false`, or bundled weights
//! without `trained=true`) draw a notice on stderr and a warning in the report.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;

use crate::cli::classify;
use crate::engine::{AnyEngine, Device};
use crate::io::nifti::{self, WriteType};
use crate::io::output_dir::OutputDir;
use crate::pipeline::report::{Midline, OverlayInfo, Report, WeightsInfo};
use crate::pipeline::segment::{self, SegmentConfig, SegmentProgress, Stage, StageTime};
use crate::pipeline::tta::TtaConfig;
use crate::pipeline::window::{Predictor, WindowConfig};
use crate::pipeline::{overlay, truth};
use crate::tensor::HostTensor;

/// The bundled weights, relative to the source tree.
pub const BUNDLED_WEIGHTS: &str = "weights/fmseg-unet25d.fmw";
/// Environment variable naming the weights when `--weights` is not given.
pub const WEIGHTS_ENV: &str = "FMSEG_WEIGHTS";

pub const MASK_FILE: &str = "fm_mask.nii.gz";
pub const PROBABILITY_FILE: &str = "fm_probability.nii.gz";
pub const OVERLAY_FILE: &str = "overlay.png";
pub const REPORT_FILE: &str = "report.json";
pub const SEG_FILE: &str = "fm_seg.dcm";
/// Every file a run may write into its output directory.
const ALL_OUTPUTS: [&str; 8] = [
    MASK_FILE,
    PROBABILITY_FILE,
    SEG_FILE,
    OVERLAY_FILE,
    REPORT_FILE,
    classify::CLASSIFICATION_FILE,
    classify::GRADCAM_FILE,
    classify::GRADCAM_PNG,
];

#[derive(Args, Debug)]
pub struct SegmentArgs {
    /// The T1 image: a NIfTI file (.nii, .nii.gz), a DICOM file, a directory of DICOM files, or an
    /// Enhanced MR object.
    pub input: PathBuf,
    /// Output directory (created if needed): fm_mask.nii.gz, report.json, overlay.png.
    #[arg(long)]
    pub out: PathBuf,
    /// Weights (.pth checkpoint, safetensors or .fmw); repeat for a fold ensemble (logits averaged).
    /// Default: $FMSEG_WEIGHTS, else the bundled weights/fmseg-unet25d.fmw.
    #[arg(long = "weights", value_name = "FILE")]
    pub weights: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// The reference's test-time augmentation: 13 sliding-window passes per model (noise, flips).
    #[arg(long)]
    pub tta: bool,
    /// Seed of the test-time augmentation noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sliding-window overlap, in [0, 1).
    #[arg(long, default_value_t = 0.5)]
    pub overlap: f64,
    /// Windows per network call (throughput only; the result does not depend on it).
    #[arg(long = "sw-batch", default_value_t = 2)]
    pub sw_batch: usize,
    /// CPU worker threads (0 = all cores; more than the cores are capped to them).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// DICOM: the SeriesInstanceUID to segment when the input holds several series.
    #[arg(long, value_name = "UID")]
    pub series: Option<String>,
    /// Also write fm_probability.nii.gz (class-1 softmax probability, f32).
    #[arg(long)]
    pub probability: bool,
    /// A ground-truth FM mask (0/1 NIfTI on the input's grid): Dice, precision and recall in the
    /// report, found (green), missed (yellow) and false (red) FM in the overlay.
    #[arg(long, value_name = "MASK")]
    pub truth: Option<PathBuf>,
    /// Also write fm_seg.dcm: the mask as a DICOM SEG object of the source series (DICOM input only).
    #[arg(long)]
    pub seg: bool,
    /// Also classify axSpA against other causes from the image and this mask (classification.json, gradcam.nii.gz, gradcam.png; see `fmseg classify`).
    #[arg(long)]
    pub classify: bool,
    /// With --classify: the clinical variables (JSON), for the image+clinical classifier.
    #[arg(long, requires = "classify")]
    pub clinical: Option<PathBuf>,
    /// With --classify: the classifier weights (default: the bundled one that fits --clinical).
    #[arg(long, requires = "classify")]
    pub classifier: Option<PathBuf>,
}

/// A weights file to use and whether it is the bundled default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightsChoice {
    pub path: PathBuf,
    pub bundled: bool,
}

/// `--weights`, else `$FMSEG_WEIGHTS` (`env`), else the `bundled` file; each must exist.
pub fn resolve_weights(given: &[PathBuf], env: Option<OsString>, bundled: &Path) -> anyhow::Result<Vec<WeightsChoice>> {
    let exists = |p: &Path, how: &str| -> anyhow::Result<()> {
        match std::fs::metadata(p) {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => bail!("{how} {} is not a file", p.display()),
            Err(e) => bail!("{how} {}: {e}", p.display()),
        }
    };
    if !given.is_empty() {
        for p in given {
            exists(p, "weights")?;
        }
        return Ok(given.iter().map(|p| WeightsChoice { path: p.clone(), bundled: false }).collect());
    }
    if let Some(v) = env.filter(|v| !v.is_empty()) {
        let paths: Vec<PathBuf> = std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect();
        for p in &paths {
            exists(p, &format!("${WEIGHTS_ENV} names"))?;
        }
        if !paths.is_empty() {
            return Ok(paths.into_iter().map(|path| WeightsChoice { path, bundled: false }).collect());
        }
    }
    if bundled.is_file() {
        return Ok(vec![WeightsChoice { path: bundled.to_path_buf(), bundled: true }]);
    }
    bail!(
        "no weights: --weights was not given, ${WEIGHTS_ENV} is not set, and the bundled weights file {} is not \
         there (trained weights are not bundled with this build). Pass --weights FILE (a .pth checkpoint, \
         .safetensors or .fmw file; repeat it for a fold ensemble) or set {WEIGHTS_ENV}",
        bundled.display()
    )
}

/// The notice for weights not known to be trained, or with a caveat in their metadata, if any.
pub fn untrained_notice(w: &WeightsInfo) -> Option<String> {
    match (w.trained, w.bundled) {
        (Some(true), _) => w.caveat.as_ref().map(|c| format!("the weights {}: {c}", w.path.display())),
        (Some(false), _) => Some(format!(
            "the weights {} are marked as untrained (metadata trained=false): the mask is not a diagnosis",
            w.path.display()
        )),
        (None, true) => Some(format!(
            "the bundled weights {} are not marked as trained (no trained=true in their metadata): until trained \
             weights are published they are the reference implementation's random initialisation and the mask \
             means nothing. Pass --weights with a trained checkpoint",
            w.path.display()
        )),
        (None, false) => None,
    }
}

pub fn run(a: SegmentArgs) -> anyhow::Result<()> {
    let t_start = Instant::now();
    let input = a.input.clone();
    // The crate's errors already carry their cause in their message (printing the chain too
    // would repeat it); the input is named unless the message already does.
    let named = |e: crate::error::Error| -> anyhow::Error {
        let msg = e.to_string();
        if msg.contains(&input.display().to_string()) {
            anyhow::Error::msg(msg)
        } else {
            anyhow::Error::msg(format!("cannot segment {}: {msg}", input.display()))
        }
    };
    if !(0.0..1.0).contains(&a.overlap) {
        bail!("--overlap {} must be in [0, 1)", a.overlap);
    }
    if a.sw_batch == 0 {
        bail!("--sw-batch must be at least 1");
    }
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join(BUNDLED_WEIGHTS);
    let choices = resolve_weights(&a.weights, std::env::var_os(WEIGHTS_ENV), &bundled)?;
    // The output directory, locked and proven writable before anything expensive.
    let out = OutputDir::open(&a.out).map_err(|e| anyhow::anyhow!("--out: {e}"))?;
    for (what, p) in std::iter::once(("the input", &a.input)).chain(a.truth.iter().map(|t| ("--truth", t))) {
        refuse_overwriting(what, p, &out)?;
    }

    let cfg = SegmentConfig {
        window: WindowConfig { overlap: a.overlap, sw_batch: a.sw_batch, ..WindowConfig::default() },
        tta: a.tta.then_some(TtaConfig { seed: a.seed, ..TtaConfig::default() }),
        series: a.series.clone(),
        probability: a.probability,
        ..SegmentConfig::default()
    };
    let mut progress = Reporter::new();

    // 1. the input, before anything expensive
    let t = Instant::now();
    progress.line(&format!("reading {}", a.input.display()));
    let loaded = segment::load_input(&a.input, a.series.as_deref()).map_err(named)?;
    let mut timings = vec![StageTime { stage: Stage::Load.name().into(), seconds: t.elapsed().as_secs_f64() }];
    let i = &loaded.info;
    progress.line(&format!(
        "{} image {}x{}x{} at {:.3}x{:.3}x{:.3} mm{}",
        i.format,
        i.dims[0],
        i.dims[1],
        i.dims[2],
        i.spacing_mm[0],
        i.spacing_mm[1],
        i.spacing_mm[2],
        i.series_uid.as_ref().map(|u| format!(", series {u}")).unwrap_or_default()
    ));

    if a.seg && loaded.info.sources.is_empty() {
        bail!(
            "--seg needs a DICOM input (a DICOM SEG references the images it segments), but {} is {}",
            a.input.display(),
            loaded.info.format
        );
    }

    if let Some(n) = &loaded.info.note {
        progress.line(&format!("WARNING: {n}"));
    }

    // the ground truth, checked against the input's grid before any inference
    let truth = match &a.truth {
        Some(p) => {
            let v = nifti::read(p).map_err(flat).with_context(|| format!("--truth {}", p.display()))?;
            Some(truth::align_to(p, &v, &loaded.image).map_err(flat)?)
        }
        None => None,
    };

    // 2. weights and engines (the classifier's too: its errors come before any inference)
    let t = Instant::now();
    let classifier = match a.classify {
        true => Some(classify::ClassifierSetup::load(
            a.classifier.as_deref(),
            a.clinical.as_deref(),
            None,
            a.device,
            a.threads,
        )?),
        false => None,
    };
    let models = Models::load(&choices, a.device, a.threads)?;
    for n in &models.info.notices {
        eprintln!("fmseg segment: NOTICE: {n}");
    }
    timings.push(StageTime { stage: "weights".into(), seconds: t.elapsed().as_secs_f64() });
    progress.line(&format!("{} model(s) on {}", models.engines.len(), models.info.device));

    // 3. segmentation
    let result = models.segment(loaded, &cfg, &mut |p| progress.update(p)).map_err(named)?;
    progress.finish();
    for w in &result.warnings {
        eprintln!("fmseg segment: WARNING: {w}");
    }
    timings.extend(result.timings.iter().cloned());

    // 4. the classification, if asked for
    let classified = match &classifier {
        Some(c) => {
            let refs = models
                .info
                .weights
                .iter()
                .map(|w| classify::ModelRef { path: w.path.display().to_string(), sha256: w.sha256.clone() })
                .collect();
            let fm = classify::FmMask { volume: &result.mask, path: &a.input, name: "predicted".into() };
            let r = c.classify(&result.image, &a.input, &fm, Some(refs), models.info.notices.clone())?;
            eprintln!("fmseg segment: {}", r.summary);
            Some(r)
        }
        None => None,
    };

    // 5. report, overlay and the outputs, all or nothing
    let seg = a.seg.then(|| seg_parameters(&models.info.weights, &a.tta, a.seed, a.overlap));
    let written = write_result(
        out,
        &result,
        &cfg,
        &models.info,
        Extras {
            truth: a.truth.as_deref().zip(truth.as_deref()),
            seg,
            timings,
            started: t_start,
            sidecar: None,
            classified: classified.as_ref(),
        },
    )
    .map_err(|e| match e {
        WriteError::Make(e) => named(e),
        WriteError::Write(e) => {
            e.context(format!("writing the outputs of {} into {}", a.input.display(), a.out.display()))
        }
    })?;
    let (report, summary) = (written.report, written.summary);
    eprintln!("fmseg segment: {summary}");
    if let Some(t) = &report.truth {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        eprintln!(
            "fmseg segment: against {}: Dice {}, precision {}, recall {}; {} of {} lesion(s) found, {} false",
            t.file,
            f(t.dice),
            f(t.precision),
            f(t.recall),
            t.lesions_found,
            t.truth_lesions,
            t.false_lesions
        );
    }
    eprintln!(
        "fmseg segment: wrote {} in {:.1} s",
        report.outputs.iter().map(|n| a.out.join(n).display().to_string()).collect::<Vec<_>>().join(", "),
        t_start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A crate error as its message alone (see `named` in [`run`]).
fn flat(e: crate::error::Error) -> anyhow::Error {
    anyhow::Error::msg(e.to_string())
}

/// The network weights, each on its engine, loaded once for any number of images.
pub struct Models {
    pub engines: Vec<AnyEngine>,
    pub info: ModelInfo,
}

/// What the results say about the models.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub weights: Vec<WeightsInfo>,
    /// Notices about the weights (untrained, caveats): every result carries them.
    pub notices: Vec<String>,
    pub device: String,
}

impl Models {
    pub fn load(choices: &[WeightsChoice], device: Device, threads: usize) -> anyhow::Result<Models> {
        let (mut engines, mut weights, mut notices) = (Vec::new(), Vec::new(), Vec::new());
        for c in choices {
            let info = WeightsInfo::of(&c.path, c.bundled).map_err(flat)?;
            notices.extend(untrained_notice(&info));
            let sd = crate::weights::load_canonical(&c.path).map_err(flat)?;
            engines.push(AnyEngine::new(device, threads, &sd).map_err(flat)?);
            weights.push(info);
        }
        let device = engines.first().map(|e| e.device_name()).unwrap_or_default();
        Ok(Models { engines, info: ModelInfo { weights, notices, device } })
    }

    /// Segment one loaded image with every model (a fold ensemble when several).
    pub fn segment(
        &self,
        loaded: segment::LoadedInput,
        cfg: &SegmentConfig,
        progress: &mut dyn FnMut(SegmentProgress),
    ) -> crate::error::Result<segment::SegmentResult> {
        let mut closures: Vec<_> = self.engines.iter().map(|e| move |x: &HostTensor| e.logits(x)).collect();
        let mut models: Vec<&mut dyn Predictor> = closures.iter_mut().map(|c| c as &mut dyn Predictor).collect();
        segment::segment_volume(loaded, cfg, &mut models, progress)
    }
}

/// The SEG's algorithm parameters (and UID seed): the weights' checksums and the settings.
pub fn seg_parameters(weights: &[WeightsInfo], tta: &bool, seed: u64, overlap: f64) -> String {
    let sha: Vec<&str> = weights.iter().map(|w| w.sha256.as_str()).collect();
    format!("weights sha256 {}; tta {tta}; seed {seed}; overlap {overlap}", sha.join(","))
}

/// What a result carries beyond the segmentation itself.
pub struct Extras<'a> {
    /// `--truth`: the file and the mask aligned to the input's grid.
    pub truth: Option<(&'a Path, &'a [u8])>,
    /// Write the DICOM SEG, with these algorithm parameters.
    pub seg: Option<String>,
    /// The stages timed so far.
    pub timings: Vec<StageTime>,
    pub started: Instant,
    /// One more file committed with the group, made from the report (`fmseg batch`'s record
    /// of the series, so that a result and its record are never apart).
    pub sidecar: Option<Sidecar<'a>>,
    /// `--classify`: the classification's files, committed with the group.
    pub classified: Option<&'a classify::Classified>,
}

/// A file name and how to make its bytes from the report.
pub type Sidecar<'a> = (&'static str, &'a dyn Fn(&Report) -> Vec<u8>);

/// What [`write_result`] wrote.
pub struct Written {
    pub report: Report,
    /// One line: FM volume, lesions, sides, slices.
    pub summary: String,
}

/// Making an output failed (the input's fault: name it), or writing it did (the disk's).
pub enum WriteError {
    Make(crate::error::Error),
    Write(anyhow::Error),
}

/// The report, overlay, mask (and probability, SEG) of `result`, committed into `out` as a
/// group: all of them or, on any failure, none (the previous results stay).
pub fn write_result(
    out: OutputDir,
    result: &segment::SegmentResult,
    cfg: &SegmentConfig,
    models: &ModelInfo,
    x: Extras,
) -> Result<Written, WriteError> {
    let make = WriteError::Make;
    let t = Instant::now();
    let mut timings = x.timings;
    let midline = Midline::from_image(&result.image);
    let mut report = Report::new(result, cfg, models.device.clone(), models.weights.clone(), &midline).map_err(make)?;
    report.warnings.extend(models.notices.iter().cloned());
    if let Some((p, t)) = x.truth {
        let pred: Vec<u8> = result.mask.data.iter().map(|&v| (v > 0.5) as u8).collect();
        report.truth = Some(truth::compare(p, &pred, t, &result.mask).map_err(make)?);
    }
    timings.push(StageTime { stage: "report".into(), seconds: t.elapsed().as_secs_f64() });
    let t = Instant::now();
    let picture = match x.truth {
        Some((_, t)) => overlay::render_compared(&result.image, &result.mask, t),
        None => overlay::render(&result.image, &result.mask),
    }
    .map_err(make)?;
    let png = overlay::encode_png(&picture).map_err(make)?;
    timings.push(StageTime { stage: "overlay".into(), seconds: t.elapsed().as_secs_f64() });
    report.overlay = Some(OverlayInfo { file: OVERLAY_FILE.into(), slices: picture.slices.clone() });

    let coded = !result.input.uncoded_nifti;
    let mut outputs: Vec<Output> = vec![Output::Nifti(MASK_FILE, &result.mask, WriteType::U8, coded)];
    if let Some(p) = &result.probability {
        outputs.push(Output::Nifti(PROBABILITY_FILE, p, WriteType::F32, coded));
    }
    if let Some(parameters) = &x.seg {
        let d = crate::io::dicom::SegDescription::fmseg(parameters);
        let bytes =
            crate::io::dicom::encode_seg(&result.mask, &result.input.sources, &d).map_err(|e| make(e.into()))?;
        outputs.push(Output::Bytes(SEG_FILE, bytes));
    }
    outputs.push(Output::Bytes(OVERLAY_FILE, png));
    if let Some(c) = x.classified {
        outputs.push(Output::Bytes(classify::CLASSIFICATION_FILE, c.json.clone()));
        outputs.push(Output::Nifti(classify::GRADCAM_FILE, &c.gradcam, WriteType::F32, true));
        outputs.push(Output::Bytes(classify::GRADCAM_PNG, c.png.clone()));
    }
    report.outputs = outputs.iter().map(|o| o.name().to_string()).chain([REPORT_FILE.to_string()]).collect();
    if let Some((name, make)) = x.sidecar {
        outputs.push(Output::Bytes(name, make(&report)));
    }
    let f = &report.findings;
    let summary = format!(
        "FM {:.2} ml ({} voxels) in {} lesion(s): left {:.2} ml, right {:.2} ml; slices {:?}",
        f.fm_volume_ml, f.fm_voxels, f.lesion_count, f.left_ml, f.right_ml, f.slices_with_fm
    );
    write_outputs(out, outputs, |writing| {
        let mut r = report.clone();
        r.timings = timings.clone();
        r.timings.push(StageTime { stage: "write".into(), seconds: writing });
        r.timings.push(StageTime { stage: "total".into(), seconds: x.started.elapsed().as_secs_f64() });
        Ok(r.to_json()?.into_bytes())
    })
    .map_err(WriteError::Write)?;
    Ok(Written { report, summary })
}

/// One output file.
enum Output<'a> {
    /// A NIfTI file, with transform codes or (for an uncoded input) without.
    Nifti(&'static str, &'a crate::volume::Volume, WriteType, bool),
    Bytes(&'static str, Vec<u8>),
}

impl Output<'_> {
    fn name(&self) -> &'static str {
        match self {
            Output::Nifti(n, ..) | Output::Bytes(n, _) => n,
        }
    }
}

/// Refuse a run whose outputs would overwrite the file it reads.
fn refuse_overwriting(what: &str, input: &Path, out: &OutputDir) -> anyhow::Result<()> {
    let Ok(input_real) = input.canonicalize() else { return Ok(()) };
    for name in ALL_OUTPUTS {
        if out.dest(name).canonicalize().is_ok_and(|d| d == input_real) {
            bail!(
                "{what} {} is one of this run's outputs ({name} in --out {}): it would be overwritten; choose \
                 another --out",
                input.display(),
                out.path().display()
            );
        }
    }
    Ok(())
}

/// Write every output and then the report (`report(seconds spent writing the others)` makes
/// its bytes) under temporary names in the locked `dir`, then commit them as a group, removing
/// an earlier run's results that this one does not make.
fn write_outputs(
    mut dir: OutputDir,
    outputs: Vec<Output>,
    report: impl FnOnce(f64) -> crate::error::Result<Vec<u8>>,
) -> anyhow::Result<()> {
    let t = Instant::now();
    for o in &outputs {
        let (tmp, dest) = (dir.stage(o.name()), dir.dest(o.name()));
        match o {
            Output::Nifti(_, vol, ty, coded) => nifti::write_coded(&tmp, vol, *ty, *coded).map_err(|e| {
                anyhow::anyhow!("writing {}: {}", dest.display(), crate::io::hide_temporary(&e.to_string()))
            })?,
            Output::Bytes(_, bytes) => {
                std::fs::write(&tmp, bytes).map_err(|e| anyhow::anyhow!("writing {}: {e}", dest.display()))?
            }
        }
    }
    let bytes = report(t.elapsed().as_secs_f64()).map_err(flat)?;
    let dest = dir.dest(REPORT_FILE);
    std::fs::write(dir.stage(REPORT_FILE), bytes).map_err(|e| anyhow::anyhow!("writing {}: {e}", dest.display()))?;
    dir.commit(&ALL_OUTPUTS).map_err(flat)
}

/// Progress on stderr: a bar for the inference on a terminal, a few plain lines otherwise.
struct Reporter {
    tty: bool,
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    stage_started: Instant,
    last_quarter: usize,
}

impl Reporter {
    fn new() -> Self {
        Reporter {
            tty: std::io::stderr().is_terminal(),
            bar: None,
            started: Instant::now(),
            stage_started: Instant::now(),
            last_quarter: 0,
        }
    }

    fn line(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(format!("fmseg segment: {msg}")),
            None => eprintln!("fmseg segment: {msg}"),
        }
    }

    fn update(&mut self, p: SegmentProgress) {
        match (p.stage, p.done) {
            (Stage::Inference, 0) => {
                self.stage_started = Instant::now();
                self.last_quarter = 0;
                self.line(&format!("inference: {} window(s) of 192x192x16", p.total));
                if self.tty {
                    let style = indicatif::ProgressStyle::with_template(
                        "fmseg segment: [{bar:40}] {pos}/{len} windows, {elapsed} elapsed, about {eta} left",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
                    self.bar = Some(indicatif::ProgressBar::new(p.total as u64).with_style(style));
                }
            }
            (Stage::Inference, done) => {
                if let Some(b) = &self.bar {
                    b.set_position(done as u64);
                } else {
                    let quarter = done * 4 / p.total.max(1);
                    if quarter > self.last_quarter {
                        self.last_quarter = quarter;
                        self.line(&format!(
                            "inference: {done}/{} windows ({:.1} s)",
                            p.total,
                            self.stage_started.elapsed().as_secs_f64()
                        ));
                    }
                }
                if done == p.total {
                    if let Some(b) = self.bar.take() {
                        b.finish_and_clear();
                    }
                }
            }
            (stage, 0) => {
                self.stage_started = Instant::now();
                self.line(&format!("{}...", stage.name()));
            }
            _ => {}
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        self.line(&format!("segmented in {:.1} s", self.started.elapsed().as_secs_f64()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_resolution_order_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, bundled) = (dir.path().join("a.fmw"), dir.path().join("b.pth"), dir.path().join("bundled.fmw"));
        std::fs::write(&a, b"x").unwrap();
        std::fs::write(&b, b"x").unwrap();
        let missing_bundled = dir.path().join("nope.fmw");
        // --weights wins
        let r = resolve_weights(&[a.clone(), b.clone()], Some(b.clone().into()), &bundled).unwrap();
        assert_eq!(
            r,
            vec![WeightsChoice { path: a.clone(), bundled: false }, WeightsChoice { path: b.clone(), bundled: false }]
        );
        // then the environment (several paths)
        let env = std::env::join_paths([&a, &b]).unwrap();
        let r = resolve_weights(&[], Some(env), &missing_bundled).unwrap();
        assert_eq!(r.len(), 2);
        let e = resolve_weights(&[], Some(dir.path().join("gone.fmw").into()), &bundled).unwrap_err().to_string();
        assert!(e.contains("FMSEG_WEIGHTS") && e.contains("gone.fmw"), "{e}");
        // then the bundled file
        std::fs::write(&bundled, b"x").unwrap();
        let r = resolve_weights(&[], None, &bundled).unwrap();
        assert_eq!(r, vec![WeightsChoice { path: bundled.clone(), bundled: true }]);
        let r = resolve_weights(&[], Some(OsString::new()), &bundled).unwrap();
        assert!(r[0].bundled);
        // nothing: a message that says what to do
        let e = resolve_weights(&[], None, &missing_bundled).unwrap_err().to_string();
        assert!(e.contains("--weights") && e.contains("nope.fmw") && e.contains("FMSEG_WEIGHTS"), "{e}");
        let e = resolve_weights(&[dir.path().join("x.pth")], None, &bundled).unwrap_err().to_string();
        assert!(e.contains("x.pth"), "{e}");
        let e = resolve_weights(&[dir.path().to_path_buf()], None, &bundled).unwrap_err().to_string();
        assert!(e.contains("not a file"), "{e}");
    }

    #[test]
    fn untrained_notices() {
        let w = |trained, bundled| WeightsInfo {
            file: "w.fmw".into(),
            path: "w.fmw".into(),
            sha256: String::new(),
            format: "frozen".into(),
            trained,
            caveat: None,
            bundled,
        };
        assert!(untrained_notice(&w(Some(true), true)).is_none());
        let partial = WeightsInfo { caveat: Some("partly trained".into()), ..w(Some(true), true) };
        assert!(untrained_notice(&partial).unwrap().contains("partly trained"));
        assert!(untrained_notice(&w(None, false)).is_none());
        assert!(untrained_notice(&w(Some(false), false)).unwrap().contains("untrained"));
        assert!(untrained_notice(&w(None, true)).unwrap().contains("bundled"));
    }
}
