//! Training data: where cases come from, and each case preprocessed once into a [`Sample`].
//!
//! Three kinds of [`Source`]:
//! - [`Source::Nifti`]: a directory of image/label pairs in the reference's layout,
//!   `<id>_MRI.nii.gz` with `<id>_seg.nii.gz` (`.nii` accepted for either). Other files are
//!   ignored. Cases are ordered by the image's file name (byte order), which is the
//!   reference's `sorted(glob("*_MRI.nii.gz"))` order, so its folds come out the same.
//! - [`Source::Dicom`]: a directory with one subdirectory per case, `<root>/<id>/`, holding that
//!   case's DICOM series (any file names, any depth below) and, directly in `<root>/<id>/`,
//!   exactly one NIfTI mask named `<id>_seg.nii.gz`, `<id>_seg.nii`, `mask.nii.gz` or
//!   `mask.nii`. The series is chosen and loaded as `fmseg segment` does (MR only; with several
//!   series under the directory, the DICOM module's selection rules). Files directly in
//!   `<root>` and hidden subdirectories are ignored; cases are ordered by directory name.
//! - [`Source::Phantom`]: synthetic studies from [`crate::phantom::generate_case`], one per
//!   seed, with id `phantom-<seed>`, in the order given. They are generated when first used
//!   (on the loader's threads) and then cached like the others: a fixed synthetic dataset,
//!   so folds and validation mean the same thing as with real data.
//!
//! Every image goes through the inference preprocessing ([`preprocess`]: LPS, 1 x 1 x 7 mm
//! trilinear, reflect pad to 192 x 192 x 16, z-score) and its label through the same grid chain
//! with nearest-neighbour resampling ([`preprocess_label`]), as the reference's `Spacingd(mode=
//! ("bilinear", "nearest"))` does. A label must be on the image's grid (it may be stored in
//! another voxel order: both are compared after orientation to LPS, affines within
//! [`GRID_TOL_MM`]) and hold only 0 and 1.
//!
//! [`Dataset`] holds the case list and caches each preprocessed [`Sample`] after its first load.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};
use crate::io::nifti;
use crate::phantom::{self, PhantomConfig};
use crate::pipeline::preprocess::{preprocess, preprocess_label, PreprocessConfig};
use crate::pipeline::segment;
use crate::pipeline::truth::binary_values;
use crate::tensor::{numel, Dims};
use crate::volume::{Affine, Volume};

pub use crate::pipeline::truth::GRID_TOL_MM;

/// One preprocessed training case: image and label on the network's grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub id: String,
    /// Z-scored image, row-major over `dims` with the last axis fastest (as [`Volume`]).
    pub image: Vec<f32>,
    /// 0/1 label on the same grid.
    pub label: Vec<u8>,
    pub dims: Dims,
    /// LPS voxel-to-world affine of the preprocessed grid.
    pub affine: Affine,
}

impl Sample {
    /// A sample from data already on the network's grid (checked for size and label values).
    pub fn new(id: impl Into<String>, image: Vec<f32>, label: Vec<u8>, dims: Dims, affine: Affine) -> Result<Self> {
        let id = id.into();
        let n = numel(dims);
        if image.len() != n || label.len() != n {
            return Err(Error::Shape(format!(
                "sample {id}: dims {dims:?} need {n} voxels, image has {} and label {}",
                image.len(),
                label.len()
            )));
        }
        if let Some(p) = label.iter().position(|&v| v > 1) {
            return Err(Error::Value(format!(
                "sample {id}: label value {} at voxel index {p} (must be 0 or 1)",
                label[p]
            )));
        }
        Ok(Sample { id, image, label, dims, affine })
    }

    /// Number of foreground (label 1) voxels.
    pub fn foreground(&self) -> usize {
        self.label.iter().filter(|&&v| v == 1).count()
    }
}

/// Where a training set comes from (see the module docs for each layout).
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A directory of `<id>_MRI.nii.gz` / `<id>_seg.nii.gz` pairs.
    Nifti(PathBuf),
    /// A directory of `<id>/` case directories, each a DICOM series plus a NIfTI mask.
    Dicom(PathBuf),
    /// Synthetic studies, one per seed.
    Phantom { seeds: Vec<u64>, config: PhantomConfig },
}

/// How one case is loaded.
#[derive(Clone, Debug, PartialEq)]
pub enum CaseInput {
    NiftiPair {
        image: PathBuf,
        label: PathBuf,
    },
    Dicom {
        dir: PathBuf,
        mask: PathBuf,
    },
    Phantom {
        seed: u64,
        config: PhantomConfig,
    },
    /// A sample handed over already preprocessed ([`Dataset::from_samples`]).
    InMemory,
}

/// One case of a source, not yet loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseEntry {
    pub id: String,
    pub input: CaseInput,
}

const IMAGE_SUFFIXES: [&str; 2] = ["_MRI.nii.gz", "_MRI.nii"];
const LABEL_SUFFIXES: [&str; 2] = ["_seg.nii.gz", "_seg.nii"];

fn strip_any<'a>(name: &'a str, suffixes: &[&str]) -> Option<&'a str> {
    suffixes.iter().find_map(|s| name.strip_suffix(s)).filter(|id| !id.is_empty())
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let path = e.path();
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            continue; // not UTF-8: cannot be one of our names
        };
        let is_dir = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?.is_dir();
        out.push((name, path, is_dir));
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

impl Source {
    /// `phantom:N` (seeds `0..N`) or `phantom:A..B` (seeds `A..B`), with the default phantom
    /// configuration; anything else is a directory for [`Source::detect`].
    pub fn parse(spec: &str) -> Result<Source> {
        if let Some(rest) = spec.strip_prefix("phantom:") {
            let bad = || Error::Value("expected phantom:N or phantom:A..B with whole numbers, A < B".into());
            let (a, b) = match rest.split_once("..") {
                Some((a, b)) => (a.parse::<u64>().map_err(|_| bad())?, b.parse::<u64>().map_err(|_| bad())?),
                None => (0, rest.parse::<u64>().map_err(|_| bad())?),
            };
            if a >= b {
                return Err(bad());
            }
            return Ok(Source::Phantom { seeds: (a..b).collect(), config: PhantomConfig::default() });
        }
        Source::detect(Path::new(spec))
    }

    /// The layout of a data directory: NIfTI pairs if it holds any `*_MRI.nii[.gz]` file,
    /// else DICOM case directories if it has any subdirectory.
    pub fn detect(dir: &Path) -> Result<Source> {
        let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
        if !meta.is_dir() {
            return Err(Error::format(
                dir,
                "training data must be a directory (of <id>_MRI.nii.gz / <id>_seg.nii.gz pairs, or of one \
                 directory per DICOM case)",
            ));
        }
        let entries = read_dir_sorted(dir)?;
        if entries.iter().any(|(n, _, d)| !d && strip_any(n, &IMAGE_SUFFIXES).is_some()) {
            return Ok(Source::Nifti(dir.to_path_buf()));
        }
        if entries.iter().any(|(n, _, d)| *d && !n.starts_with('.')) {
            return Ok(Source::Dicom(dir.to_path_buf()));
        }
        Err(Error::format(
            dir,
            "no training cases: expected <id>_MRI.nii.gz images with <id>_seg.nii.gz labels, or one subdirectory \
             per case holding a DICOM series and a mask.nii.gz",
        ))
    }

    /// The cases of this source, in the order folds are made from. Errors: an image without
    /// its label (or a label without its image), two files for one case, no cases at all.
    pub fn cases(&self) -> Result<Vec<CaseEntry>> {
        let cases = match self {
            Source::Nifti(dir) => nifti_cases(dir)?,
            Source::Dicom(dir) => dicom_cases(dir)?,
            Source::Phantom { seeds, config } => {
                let mut seen = std::collections::HashSet::new();
                let mut v = Vec::with_capacity(seeds.len());
                for &seed in seeds {
                    if !seen.insert(seed) {
                        return Err(Error::Value(format!("phantom seed {seed} is listed twice")));
                    }
                    v.push(CaseEntry {
                        id: format!("phantom-{seed}"),
                        input: CaseInput::Phantom { seed, config: config.clone() },
                    });
                }
                if v.is_empty() {
                    return Err(Error::Value("the phantom source has no seeds: the dataset is empty".into()));
                }
                v
            }
        };
        Ok(cases)
    }
}

fn nifti_cases(dir: &Path) -> Result<Vec<CaseEntry>> {
    let entries = read_dir_sorted(dir)?;
    let mut images: Vec<(String, PathBuf)> = Vec::new();
    let mut labels: std::collections::BTreeMap<String, PathBuf> = Default::default();
    for (name, path, is_dir) in entries {
        if is_dir {
            continue;
        }
        if let Some(id) = strip_any(&name, &IMAGE_SUFFIXES) {
            if let Some((_, other)) = images.iter().find(|(i, _)| i == id) {
                return Err(Error::format(
                    &path,
                    format!("case {id} has two images: this file and {}; keep one", other.display()),
                ));
            }
            images.push((id.to_string(), path));
        } else if let Some(id) = strip_any(&name, &LABEL_SUFFIXES) {
            if let Some(other) = labels.get(id) {
                return Err(Error::format(
                    &path,
                    format!("case {id} has two labels: this file and {}; keep one", other.display()),
                ));
            }
            labels.insert(id.to_string(), path);
        }
    }
    if images.is_empty() {
        return Err(Error::format(dir, "no <id>_MRI.nii.gz (or .nii) images: the dataset is empty"));
    }
    // the reference's order: sorted image paths (same directory, so by file name)
    images.sort_by(|a, b| {
        let n = |p: &PathBuf| p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        n(&a.1).as_bytes().cmp(n(&b.1).as_bytes())
    });
    let mut cases = Vec::with_capacity(images.len());
    for (id, image) in images {
        let Some(label) = labels.remove(&id) else {
            return Err(Error::format(
                &image,
                format!("image without label: expected {id}_seg.nii.gz (or {id}_seg.nii) next to it"),
            ));
        };
        cases.push(CaseEntry { id, input: CaseInput::NiftiPair { image, label } });
    }
    if let Some((id, label)) = labels.into_iter().next() {
        return Err(Error::format(
            &label,
            format!("label without image: expected {id}_MRI.nii.gz (or {id}_MRI.nii) next to it"),
        ));
    }
    Ok(cases)
}

fn dicom_cases(dir: &Path) -> Result<Vec<CaseEntry>> {
    let mut cases = Vec::new();
    for (name, path, is_dir) in read_dir_sorted(dir)? {
        if !is_dir || name.starts_with('.') {
            continue;
        }
        let names = [
            format!("{name}_seg.nii.gz"),
            format!("{name}_seg.nii"),
            "mask.nii.gz".to_string(),
            "mask.nii".to_string(),
        ];
        let found: Vec<PathBuf> = names.iter().map(|n| path.join(n)).filter(|p| p.is_file()).collect();
        let mask = match found.len() {
            1 => found.into_iter().next().unwrap_or_default(),
            0 => {
                return Err(Error::format(
                    &path,
                    format!("DICOM case without mask: expected one of {} in this directory", names.join(", ")),
                ))
            }
            _ => {
                let list: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
                return Err(Error::format(
                    &path,
                    format!("DICOM case with several masks: {}; keep one", list.join(", ")),
                ));
            }
        };
        cases.push(CaseEntry { id: name, input: CaseInput::Dicom { dir: path, mask } });
    }
    if cases.is_empty() {
        return Err(Error::format(dir, "no case subdirectories (DICOM series + mask.nii.gz): the dataset is empty"));
    }
    Ok(cases)
}

/// Preprocess an image and its 0/1 label (on the image's grid up to voxel order) into a
/// [`Sample`]. `image_name` and `label_name` name them in errors.
pub fn prepare(
    id: &str,
    image: &Volume,
    label: &[u8],
    label_dims: Dims,
    label_affine: &Affine,
    cfg: &PreprocessConfig,
    names: (&Path, &Path),
) -> Result<Sample> {
    let p = preprocess(image, cfg).map_err(|e| Error::format(names.0, e.to_string()))?;
    let lab = preprocess_label(label, label_dims, label_affine, &p.chain, GRID_TOL_MM).map_err(|e| {
        Error::Shape(format!("label {} does not fit image {}: {e}", names.1.display(), names.0.display()))
    })?;
    Ok(Sample { id: id.to_string(), image: p.volume.data, label: lab, dims: p.volume.dims, affine: p.volume.affine })
}

/// Load and preprocess one case.
pub fn load_case(case: &CaseEntry, cfg: &PreprocessConfig) -> Result<Sample> {
    match &case.input {
        CaseInput::NiftiPair { image, label } => {
            let img = nifti::read(image)?;
            segment::validate(image, &img)?;
            let lab = nifti::read(label)?;
            let values = binary_values(label, &lab)?;
            prepare(&case.id, &img, &values, lab.dims, &lab.affine, cfg, (image, label))
        }
        CaseInput::Dicom { dir, mask } => {
            let img = segment::load_input(dir, None)?.image;
            let lab = nifti::read(mask)?;
            let values = binary_values(mask, &lab)?;
            prepare(&case.id, &img, &values, lab.dims, &lab.affine, cfg, (dir, mask))
        }
        CaseInput::Phantom { seed, config } => {
            let c = phantom::generate_case(*seed, config);
            let name = PathBuf::from(&case.id);
            prepare(&case.id, &c.image, &c.mask, c.image.dims, &c.image.affine, cfg, (&name, &name))
        }
        CaseInput::InMemory => {
            Err(Error::Other(format!("case {}: an in-memory sample has no file to load it from", case.id)))
        }
    }
}

/// The cases of a training set and their preprocessed samples, each loaded once (on first
/// use, by whichever thread asks first) and then kept in memory. Shared between threads
/// through an `Arc`.
pub struct Dataset {
    cases: Vec<CaseEntry>,
    cfg: PreprocessConfig,
    cache: Vec<OnceLock<Arc<Sample>>>,
}

impl Dataset {
    /// A dataset over `cases` (an error if there are none, or if two share an id).
    pub fn new(cases: Vec<CaseEntry>, cfg: PreprocessConfig) -> Result<Self> {
        if cases.is_empty() {
            return Err(Error::Value("the training dataset is empty".into()));
        }
        let mut ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Value(format!("case id {} appears twice in the dataset", w[0])));
        }
        let cache = (0..cases.len()).map(|_| OnceLock::new()).collect();
        Ok(Dataset { cases, cfg, cache })
    }

    /// [`Source::cases`] then [`Dataset::new`].
    pub fn from_source(source: &Source, cfg: PreprocessConfig) -> Result<Self> {
        Dataset::new(source.cases()?, cfg)
    }

    /// A dataset of samples already in memory (tests, or data made elsewhere).
    pub fn from_samples(samples: Vec<Sample>) -> Result<Self> {
        let cases = samples.iter().map(|s| CaseEntry { id: s.id.clone(), input: CaseInput::InMemory }).collect();
        let ds = Dataset::new(cases, PreprocessConfig::default())?;
        for (cell, s) in ds.cache.iter().zip(samples) {
            let _ = cell.set(Arc::new(s));
        }
        Ok(ds)
    }

    pub fn len(&self) -> usize {
        self.cases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }

    pub fn cases(&self) -> &[CaseEntry] {
        &self.cases
    }

    pub fn ids(&self) -> Vec<&str> {
        self.cases.iter().map(|c| c.id.as_str()).collect()
    }

    /// Sample `i`, loaded and preprocessed on first call, from the cache afterwards.
    pub fn sample(&self, i: usize) -> Result<Arc<Sample>> {
        let cell = self
            .cache
            .get(i)
            .ok_or_else(|| Error::Value(format!("case index {i} is out of range (the dataset has {})", self.len())))?;
        if let Some(s) = cell.get() {
            return Ok(s.clone());
        }
        let s = Arc::new(load_case(&self.cases[i], &self.cfg)?);
        // another thread may have loaded it meanwhile: the result is the same either way
        let _ = cell.set(s.clone());
        Ok(s)
    }

    /// Whether sample `i` is already in memory.
    pub fn is_cached(&self, i: usize) -> bool {
        self.cache.get(i).is_some_and(|c| c.get().is_some())
    }
}
