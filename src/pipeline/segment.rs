//! The whole clinical flow in one call: an image file (NIfTI, or a DICOM file, directory or
//! Enhanced MR object) in, the fat-metaplasia mask on the image's own grid out.
//!
//! `load -> validate -> preprocess -> sliding window (fold ensemble, optional TTA) ->
//! postprocess`, each stage timed. [`segment`] does all of it from a path; an application that
//! already holds a [`Volume`] calls [`segment_volume`]; [`load_input`] is the first half on its
//! own (the CLI uses it to refuse a bad input before it loads any weights).
//!
//! DICOM input must be MR ([`crate::io::dicom::DicomError::NotMr`] otherwise); with several
//! series under the path, `series` picks one by UID, else the dicom module's rules choose.
//!
//! Validation refuses what the network cannot give a meaningful answer for, naming the file:
//! no voxels, a single slice or a single row (a 2-D image: the 2.5D network needs neighbouring
//! slices), non-finite voxels, a constant image (nothing to normalise: usually blank pixel
//! data), and a singular or non-finite affine. Small volumes are not refused: the reference
//! pads them by reflection to the network's patch; where that padding is more than the image
//! itself along an axis the result carries a warning.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::engine::AnyEngine;
use crate::error::{Error, Result};
use crate::io::{dicom, nifti};
use crate::pipeline::geometry;
use crate::pipeline::postprocess;
use crate::pipeline::preprocess::{preprocess, PreprocessConfig};
use crate::pipeline::study;
use crate::pipeline::tta::TtaConfig;
use crate::pipeline::window::{Predictor, WindowConfig};
use crate::tensor::Dims;
use crate::volume::{Affine, Volume};

/// Largest preprocessed grid accepted (voxels): 2^28 voxels are 1 GiB of f32 per channel.
/// An image that resamples to more than this at 1 x 1 x 7 mm is not a sacroiliac MRI.
pub const MAX_PREPROCESSED_VOXELS: usize = 1 << 28;

/// What to run; the defaults are the reference's (no TTA).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SegmentConfig {
    pub preprocess: PreprocessConfig,
    pub window: WindowConfig,
    /// The reference test script's test-time augmentation (13 passes per model), seeded.
    pub tta: Option<TtaConfig>,
    /// DICOM: the SeriesInstanceUID to load when the input holds several series.
    pub series: Option<String>,
    /// Also map the class-1 softmax probability back to the input grid.
    pub probability: bool,
}

/// Where the image came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InputInfo {
    pub path: PathBuf,
    /// `"nifti"` or `"dicom"`.
    pub format: String,
    pub series_uid: Option<String>,
    pub series_description: Option<String>,
    pub modality: Option<String>,
    pub series_number: Option<i64>,
    /// Why this DICOM series was the one segmented.
    pub series_choice: Option<String>,
    /// Voxels per axis of the input grid, in the file's own voxel order.
    pub dims: Dims,
    pub spacing_mm: [f64; 3],
    /// Voxel index -> LPS mm.
    pub affine_lps: Affine,
    /// A NIfTI input with neither a qform nor an sform code: its geometry is nibabel's guess
    /// from the voxel sizes (orientation unknown), and the outputs are written uncoded too.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub uncoded_nifti: bool,
    /// DICOM: how the series was put together, when a user should know (e.g. no SeriesInstanceUID).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// DICOM: where slice `k` came from (what a DICOM SEG of the mask references); empty for NIfTI.
    #[serde(skip)]
    pub sources: Vec<dicom::SliceSource>,
}

/// One timed stage.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct StageTime {
    pub stage: String,
    pub seconds: f64,
}

/// The pipeline's stages, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Load,
    Preprocess,
    Inference,
    Postprocess,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Load => "load",
            Stage::Preprocess => "preprocess",
            Stage::Inference => "inference",
            Stage::Postprocess => "postprocess",
        }
    }
}

/// Progress: a stage starts (`done == 0`), advances (inference: windows over all passes) or
/// ends (`done == total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentProgress {
    pub stage: Stage,
    pub done: usize,
    pub total: usize,
}

/// A loaded, validated input image.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedInput {
    pub image: Volume,
    pub info: InputInfo,
}

/// Everything the segmentation produced.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentResult {
    pub input: InputInfo,
    /// The input image as loaded (the overlay and the report's midline use it).
    pub image: Volume,
    /// 0 (background) or 1 (fat metaplasia) per voxel, on the input's grid and affine.
    pub mask: Volume,
    /// Class-1 probability on the input's grid, when asked for.
    pub probability: Option<Volume>,
    /// The network's grid after preprocessing (LPS, 1 x 1 x 7 mm, padded).
    pub preprocessed_dims: Dims,
    pub windows_per_pass: usize,
    /// Sliding-window passes in all (models x TTA passes per model).
    pub passes: usize,
    pub timings: Vec<StageTime>,
    pub warnings: Vec<String>,
}

/// Load an image file, DICOM or NIfTI, and validate it (see the module docs).
pub fn load_input(path: &Path, series: Option<&str>) -> Result<LoadedInput> {
    let loaded = read_input(path, series)?;
    let d = loaded.image.dims;
    if loaded.info.format == "dicom" && !path.is_dir() && d[2] == 1 {
        return Err(Error::format(
            path,
            format!(
                "a single DICOM slice ({}x{} pixels): fmseg segments 3-D volumes; pass the directory that holds \
                 the whole series",
                d[0], d[1]
            ),
        ));
    }
    validate(path, &loaded.image)?;
    Ok(loaded)
}

/// Read an image file (NIfTI, or DICOM: a file, directory or Enhanced MR object) as it is,
/// without the checks of what the network can segment ([`load_input`] adds them): what
/// `fmseg convert` writes, a single slice and a constant image included.
pub fn read_input(path: &Path, series: Option<&str>) -> Result<LoadedInput> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let loaded = if meta.is_dir() {
        load_dicom(path, series)?
    } else {
        match sniff(path)? {
            Kind::Nifti => {
                if let Some(uid) = series {
                    return Err(Error::format(
                        path,
                        format!("--series {uid} selects a DICOM series, but this is a NIfTI file"),
                    ));
                }
                let (image, header) = nifti::read_with_header(path)?;
                let mut info = describe(path, "nifti", &image, None, None, None);
                info.uncoded_nifti = header.affine_source == nifti::AffineSource::Pixdim;
                LoadedInput { image, info }
            }
            Kind::Other => load_dicom(path, series).map_err(|e| match e {
                Error::Dicom(d) if matches!(*d, dicom::DicomError::NoImages { .. }) => Error::format(
                    path,
                    "neither a NIfTI-1 image (.nii, .nii.gz) nor a DICOM image: fmseg segments T1 MRI in these formats",
                ),
                e => e,
            })?,
        }
    };
    Ok(loaded)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Nifti,
    /// DICOM, or not an image at all: the DICOM reader decides and says which.
    Other,
}

/// NIfTI by content (gzip magic, or `sizeof_hdr == 348` with the `n+1`/`ni1` magic) or by
/// name (`.nii`, `.nii.gz`, `.hdr`: the NIfTI reader then says what is wrong with it).
fn sniff(path: &Path) -> Result<Kind> {
    use std::io::Read;
    let mut head = Vec::with_capacity(348);
    std::fs::File::open(path).and_then(|f| f.take(348).read_to_end(&mut head)).map_err(|e| Error::io(path, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    let by_name = name.ends_with(".nii") || name.ends_with(".nii.gz");
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let nifti1 = head.len() >= 348
        && (head[..4] == 348i32.to_le_bytes() || head[..4] == 348i32.to_be_bytes())
        && (&head[344..347] == b"n+1" || &head[344..347] == b"ni1");
    Ok(if by_name || gzip || nifti1 { Kind::Nifti } else { Kind::Other })
}

/// A DICOM file, directory or Enhanced MR object: one MR series (`series` by UID, else the
/// selection rules of [`crate::io::dicom::select`]); a non-MR series is refused.
fn load_dicom(path: &Path, series: Option<&str>) -> Result<LoadedInput> {
    let sel = dicom::Selection::from_option(series).require_mr();
    Ok(from_series(path, dicom::load_series(path, &sel)?))
}

/// A loaded DICOM series as the pipeline's input (found under `path`), not yet validated
/// ([`validate`]).
pub fn from_series(path: &Path, l: dicom::LoadedSeries) -> LoadedInput {
    let mut info = describe(
        path,
        "dicom",
        &l.volume,
        Some(l.info.uid.clone()),
        Some(l.info.description.clone()),
        Some(l.info.modality.clone()),
    );
    info.series_number = l.info.series_number;
    info.series_choice = Some(l.reason);
    info.note = l.info.note.clone();
    info.sources = l.slices;
    LoadedInput { image: l.volume, info }
}

fn describe(
    path: &Path,
    format: &str,
    image: &Volume,
    series_uid: Option<String>,
    series_description: Option<String>,
    modality: Option<String>,
) -> InputInfo {
    InputInfo {
        path: path.to_path_buf(),
        format: format.into(),
        series_uid,
        series_description,
        modality,
        series_number: None,
        series_choice: None,
        dims: image.dims,
        spacing_mm: image.spacing(),
        // + 0.0 turns the -0.0 of flipped axes into 0.0 in the report
        affine_lps: image.affine.map(|r| r.map(|v| v + 0.0)),
        uncoded_nifti: false,
        note: None,
        sources: Vec::new(),
    }
}

/// Refuse images the network cannot give a meaningful answer for (see the module docs).
pub fn validate(path: &Path, image: &Volume) -> Result<()> {
    let d = image.dims;
    let bad = |m: String| Err(Error::format(path, m));
    if d.contains(&0) {
        return bad(format!("the image is empty (dims {}x{}x{})", d[0], d[1], d[2]));
    }
    if d.iter().filter(|&&n| n == 1).count() > 0 {
        return bad(format!(
            "a {} image (dims {}x{}x{}): fmseg segments 3-D volumes, with at least 2 voxels along every axis \
             (the 2.5D network needs neighbouring slices)",
            if d.iter().filter(|&&n| n == 1).count() == 1 { "2-D" } else { "1-D" },
            d[0],
            d[1],
            d[2]
        ));
    }
    let a = &image.affine;
    if a.iter().flatten().any(|v| !v.is_finite()) {
        return bad(format!("the image's affine holds non-finite values: {a:?}"));
    }
    let det = crate::linalg::det3(&crate::linalg::linear_part(a));
    if det.is_nan() || det.abs() <= 1e-12 {
        return bad(format!("the image's affine is singular (determinant {det:e}): its voxels have no volume"));
    }
    let non_finite = image.data.iter().filter(|v| !v.is_finite()).count();
    if non_finite > 0 {
        let first = image.data.iter().position(|v| !v.is_finite()).unwrap_or(0);
        let (i, j, k) = (first / (d[1] * d[2]), (first / d[2]) % d[1], first % d[2]);
        return bad(format!(
            "the image holds {non_finite} non-finite voxel value(s) (NaN or Inf), the first at voxel ({i}, {j}, {k})"
        ));
    }
    let first = image.data[0];
    if image.data.iter().all(|&v| v == first) {
        return bad(format!("the image is constant (every voxel is {first}): there is no anatomy to segment"));
    }
    Ok(())
}

/// [`load_input`] then [`segment_volume`] with one predictor per engine (a fold ensemble when
/// several).
pub fn segment(
    path: &Path,
    cfg: &SegmentConfig,
    engines: &[AnyEngine],
    progress: &mut dyn FnMut(SegmentProgress),
) -> Result<SegmentResult> {
    let t0 = Instant::now();
    progress(SegmentProgress { stage: Stage::Load, done: 0, total: 1 });
    let input = load_input(path, cfg.series.as_deref())?;
    progress(SegmentProgress { stage: Stage::Load, done: 1, total: 1 });
    let load = StageTime { stage: Stage::Load.name().into(), seconds: t0.elapsed().as_secs_f64() };
    let mut closures: Vec<_> = engines.iter().map(|e| move |x: &crate::tensor::HostTensor| e.logits(x)).collect();
    let mut models: Vec<&mut dyn Predictor> = closures.iter_mut().map(|c| c as &mut dyn Predictor).collect();
    let mut r = segment_volume(input, cfg, &mut models, progress)?;
    r.timings.insert(0, load);
    Ok(r)
}

/// Segment a loaded image with one or more models (their logits are averaged, as the
/// reference's fold ensemble), mapping the mask back onto the image's own grid.
pub fn segment_volume(
    input: LoadedInput,
    cfg: &SegmentConfig,
    models: &mut [&mut dyn Predictor],
    progress: &mut dyn FnMut(SegmentProgress),
) -> Result<SegmentResult> {
    let LoadedInput { image, info } = input;
    let s = segment_image(&image, &info.path, info.uncoded_nifti, cfg, models, progress)?;
    Ok(SegmentResult {
        input: info,
        image,
        mask: s.mask,
        probability: s.probability,
        preprocessed_dims: s.preprocessed_dims,
        windows_per_pass: s.windows_per_pass,
        passes: s.passes,
        timings: s.timings,
        warnings: s.warnings,
    })
}

/// What [`segment_image`] produced (a [`SegmentResult`] without the input).
#[derive(Clone, Debug, PartialEq)]
pub struct Segmented {
    pub mask: Volume,
    pub probability: Option<Volume>,
    pub preprocessed_dims: Dims,
    pub windows_per_pass: usize,
    pub passes: usize,
    pub timings: Vec<StageTime>,
    pub warnings: Vec<String>,
}

/// [`segment_volume`] on a borrowed image: `path` names it in messages, `uncoded_nifti` says
/// its orientation is a guess (a warning). What an embedding application calls
/// ([`crate::embed::Segmenter`]): the image stays the caller's.
pub fn segment_image(
    image: &Volume,
    path: &Path,
    uncoded_nifti: bool,
    cfg: &SegmentConfig,
    models: &mut [&mut dyn Predictor],
    progress: &mut dyn FnMut(SegmentProgress),
) -> Result<Segmented> {
    if models.is_empty() {
        return Err(Error::Value("segment: no models given (pass at least one weights file)".into()));
    }
    validate(path, image)?;
    let mut timings = Vec::new();
    let mut warnings = Vec::new();
    if uncoded_nifti {
        warnings.push(format!(
            "{}: qform_code and sform_code are both 0, so the image has no orientation: its geometry is \
             guessed from the voxel sizes alone (nibabel's fallback) and left and right may be swapped; \
             the left/right volumes are not reliable, and the mask is written uncoded as well",
            path.display()
        ));
    }
    let mut timed = |stage: Stage, t: Instant| {
        timings.push(StageTime { stage: stage.name().into(), seconds: t.elapsed().as_secs_f64() })
    };

    // Preprocess, after checking that the grid it makes is of a sane size.
    let t = Instant::now();
    progress(SegmentProgress { stage: Stage::Preprocess, done: 0, total: 1 });
    check_preprocessed_size(path, image, &cfg.preprocess)?;
    let pre = preprocess(image, &cfg.preprocess).map_err(|e| in_file(path, e))?;
    let grid = pre.chain.spacing.out_dims;
    let axes = ["left-right", "anterior-posterior", "inferior-superior"];
    for (a, axis) in axes.iter().enumerate() {
        if grid[a] * 2 < cfg.preprocess.min_size[a] {
            warnings.push(format!(
                "the image spans only {} voxel(s) of {} mm {axis}; it was padded by reflection to {} (the \
                 network's patch): expect a less reliable result",
                grid[a], cfg.preprocess.pixdim[a], pre.volume.dims[a]
            ));
        }
    }
    progress(SegmentProgress { stage: Stage::Preprocess, done: 1, total: 1 });
    timed(Stage::Preprocess, t);

    // Inference: every model, every TTA pass, every window.
    let t = Instant::now();
    let plan = study::StudyPlan::new(pre.volume.dims, models.len(), &cfg.window, cfg.tta.as_ref())?;
    let (windows_per_pass, passes, total) = (plan.windows.len(), plan.passes.len(), plan.total_windows());
    let default_window = WindowConfig { sw_batch: cfg.window.sw_batch, ..WindowConfig::default() };
    if cfg.window.overlap > default_window.overlap {
        let usual = crate::pipeline::window::windows(pre.volume.dims, &default_window).len();
        if windows_per_pass >= 4 * usual {
            warnings.push(format!(
                "overlap {} plans {windows_per_pass} windows per pass, {usual} at the default overlap {}: {:.0}x the \
                 work, for a result that changes little",
                cfg.window.overlap,
                default_window.overlap,
                windows_per_pass as f64 / usual as f64
            ));
        }
    }
    progress(SegmentProgress { stage: Stage::Inference, done: 0, total });
    let logits = study::run(&plan, &pre.volume.data, models, &mut |p| {
        progress(SegmentProgress { stage: Stage::Inference, done: p.done, total })
    })?;
    timed(Stage::Inference, t);

    // Back to the input's grid.
    let t = Instant::now();
    progress(SegmentProgress { stage: Stage::Postprocess, done: 0, total: 1 });
    let (mask, probability) = if cfg.probability {
        let seg = postprocess::postprocess(&logits, &pre.chain)?;
        (seg.mask, Some(seg.probability))
    } else {
        let (dims, classes) = postprocess::argmax(&logits)?;
        if dims != pre.chain.padded_dims {
            return Err(Error::Shape(format!(
                "logits grid {dims:?} is not the preprocessed grid {:?}",
                pre.chain.padded_dims
            )));
        }
        let classes: Vec<f32> = classes.into_iter().map(f32::from).collect();
        let back = postprocess::to_original(&classes, &pre.chain, postprocess::Interp::Nearest)?;
        (Volume::new(image.dims, back, image.affine)?, None)
    };
    progress(SegmentProgress { stage: Stage::Postprocess, done: 1, total: 1 });
    timed(Stage::Postprocess, t);

    Ok(Segmented { mask, probability, preprocessed_dims: pre.volume.dims, windows_per_pass, passes, timings, warnings })
}

/// Refuse, before allocating it, a preprocessed grid beyond [`MAX_PREPROCESSED_VOXELS`].
fn check_preprocessed_size(path: &Path, image: &Volume, cfg: &PreprocessConfig) -> Result<()> {
    let o = geometry::orient_to_lps(image.dims, &image.affine).map_err(|e| in_file(path, e))?;
    let plan =
        geometry::plan_spacing(o.out_dims(), &o.out_affine(&image.affine), cfg.pixdim).map_err(|e| in_file(path, e))?;
    let padded = [0, 1, 2].map(|a| plan.out_dims[a].max(cfg.min_size[a]) as u128);
    let n = padded[0] * padded[1] * padded[2];
    if n > MAX_PREPROCESSED_VOXELS as u128 {
        return Err(Error::format(
            path,
            format!(
                "the image ({}x{}x{} voxels of {:.3?} mm) resamples to {}x{}x{} voxels at {:?} mm, more than \
                 fmseg handles ({MAX_PREPROCESSED_VOXELS} voxels)",
                image.dims[0],
                image.dims[1],
                image.dims[2],
                image.spacing(),
                padded[0],
                padded[1],
                padded[2],
                cfg.pixdim
            ),
        ));
    }
    Ok(())
}

/// Name the input file in errors that do not already.
fn in_file(path: &Path, e: Error) -> Error {
    match e {
        Error::Io { .. } | Error::Format { .. } => e,
        other => Error::format(path, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::IDENTITY;

    fn vol(dims: Dims, f: impl Fn(usize) -> f32) -> Volume {
        Volume::new(dims, (0..dims.iter().product()).map(f).collect(), IDENTITY).unwrap()
    }

    #[test]
    fn validation_names_the_problem() {
        let p = Path::new("scan.nii");
        let msg = |v: &Volume| validate(p, v).unwrap_err().to_string();
        assert!(validate(p, &vol([4, 5, 3], |i| i as f32)).is_ok());
        let m = msg(&vol([4, 5, 1], |i| i as f32));
        assert!(m.contains("scan.nii") && m.contains("2-D") && m.contains("4x5x1"), "{m}");
        assert!(msg(&vol([4, 1, 1], |i| i as f32)).contains("1-D"));
        let m = msg(&vol([4, 5, 3], |i| if i == 7 { f32::NAN } else { i as f32 }));
        assert!(m.contains("1 non-finite") && m.contains("(0, 2, 1)"), "{m}");
        assert!(msg(&vol([4, 5, 3], |_| 2.0)).contains("constant"));
        let mut v = vol([4, 5, 3], |i| i as f32);
        v.affine[2][2] = 0.0;
        assert!(msg(&v).contains("singular"));
        v.affine[2][2] = f64::NAN;
        assert!(msg(&v).contains("non-finite"));
    }

    #[test]
    fn oversized_grids_are_refused_before_allocation() {
        // 2 m voxels: 58 m across, 58001 x 58001 voxels at 1 mm: refused; 30 x 30 x 2 voxels of 1 mm: fine.
        let mut a = IDENTITY;
        a[0][0] = 2000.0;
        a[1][1] = 2000.0;
        let v = Volume::new([30, 30, 2], vec![0.0; 1800], a).unwrap();
        let e = check_preprocessed_size(Path::new("big.nii"), &v, &PreprocessConfig::default()).unwrap_err();
        assert!(e.to_string().contains("big.nii") && e.to_string().contains("more than"), "{e}");
        let small = vol([30, 30, 2], |i| i as f32);
        assert!(check_preprocessed_size(Path::new("s.nii"), &small, &PreprocessConfig::default()).is_ok());
    }
}
