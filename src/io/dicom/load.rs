//! Listing the series under a path and loading one into a [`Volume`].

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::error::DicomError;
use super::geometry;
use super::header::FileHeader;
use super::info::{slice_refs, summarize, SeriesInfo};
use super::pixels::{check_pixel_format, decode_frames};
use super::scan::scan;
use super::select::{choose, Selection};
use crate::error::Result;
use crate::volume::Volume;

/// Everything found under a path.
#[derive(Debug)]
pub struct SeriesList {
    /// One entry per SeriesInstanceUID, sorted by UID.
    pub series: Vec<SeriesInfo>,
    pub skipped_non_dicom: usize,
    pub skipped_non_image: usize,
    /// Files with the DICOM preamble that could not be read: each error names the file.
    pub unreadable: Vec<DicomError>,
}

/// Where slice `k` of a loaded volume came from.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceSource {
    pub path: PathBuf,
    /// Frame index inside the file (0 for classic images).
    pub frame: u32,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

/// A loaded series: the volume, its summary, why it was chosen, and its slices' sources.
#[derive(Clone, Debug)]
pub struct LoadedSeries {
    pub volume: Volume,
    pub info: SeriesInfo,
    pub reason: String,
    /// `slices[k]` is slice `k` of the volume.
    pub slices: Vec<SliceSource>,
}

struct Found {
    list: SeriesList,
    files: Vec<Vec<FileHeader>>,
}

fn find(path: &Path) -> Result<Found> {
    let s = scan(path)?;
    let mut series = Vec::with_capacity(s.series.len());
    let mut files = Vec::with_capacity(s.series.len());
    for (uid, mut hs) in s.series {
        hs.sort_by(|a, b| a.path.cmp(&b.path));
        series.push(summarize(&uid, &hs));
        files.push(hs);
    }
    for e in &s.unreadable {
        log::warn!("{e}");
    }
    let list = SeriesList {
        series,
        skipped_non_dicom: s.skipped_non_dicom,
        skipped_non_image: s.skipped_non_image,
        unreadable: s.unreadable,
    };
    Ok(Found { list, files })
}

fn no_images(path: &Path, list: SeriesList) -> crate::error::Error {
    match list.unreadable.into_iter().next() {
        Some(e) => e.into(),
        None => DicomError::NoImages {
            path: path.to_path_buf(),
            skipped: list.skipped_non_dicom,
            non_image: list.skipped_non_image,
        }
        .into(),
    }
}

/// Every series under `path` (a directory tree or one file), with the counts of what was
/// skipped and the files that could not be read. An error when there is no image at all.
pub fn scan_series(path: &Path) -> Result<SeriesList> {
    let f = find(path)?;
    if f.list.series.is_empty() {
        return Err(no_images(path, f.list));
    }
    Ok(f.list)
}

/// The series under `path`, sorted by SeriesInstanceUID (unreadable files are logged).
pub fn list_series(path: &Path) -> Result<Vec<SeriesInfo>> {
    Ok(scan_series(path)?.series)
}

/// Choose a series under `path` and load it. Strict: a DICOM file under the path that cannot
/// be read is an error even when it may not belong to the chosen series (it could be one of
/// its slices).
pub fn load_series(path: &Path, selection: &Selection) -> Result<LoadedSeries> {
    let Found { list, files } = find(path)?;
    if list.series.is_empty() {
        return Err(no_images(path, list));
    }
    if let Some(e) = list.unreadable.into_iter().next() {
        return Err(e.into());
    }
    let choice = choose(path, &list.series, selection)?;
    let info = list.series[choice.index].clone();
    let files = &files[choice.index];
    log::info!("series {}: {}", info.label(), choice.reason);

    let refs = slice_refs(files);
    let stack = geometry::stack(&info.label(), &refs)?;
    for h in files {
        check_pixel_format(h)?;
    }
    // (file, frame) of each slice reference, in the same order as `refs`.
    let owners: Vec<(usize, usize)> =
        files.iter().enumerate().flat_map(|(fi, h)| (0..h.frames.len()).map(move |f| (fi, f))).collect();

    let decoded: Vec<Vec<Vec<f32>>> = files.par_iter().map(decode_frames).collect::<std::result::Result<_, _>>()?;

    let (cols, rows, n) = (stack.cols as usize, stack.rows as usize, stack.order.len());
    let mut data = vec![0f32; cols * rows * n];
    let mut slices = Vec::with_capacity(n);
    for (k, &r) in stack.order.iter().enumerate() {
        let (fi, f) = owners[r];
        let frame = &decoded[fi][f];
        // Volume order (i = column, j = row, k = slice), k fastest; the frame is row-major.
        for j in 0..rows {
            let row = &frame[j * cols..(j + 1) * cols];
            for (i, &v) in row.iter().enumerate() {
                data[(i * rows + j) * n + k] = v;
            }
        }
        let h = &files[fi];
        slices.push(SliceSource {
            path: h.path.clone(),
            frame: h.frames[f].frame,
            sop_class_uid: h.sop_class_uid.clone(),
            sop_instance_uid: h.sop_instance_uid.clone(),
        });
    }
    let volume = Volume::new([cols, rows, n], data, stack.affine())?;
    Ok(LoadedSeries { volume, info, reason: choice.reason, slices })
}

/// [`load_series`] for callers that need only the volume and the series summary
/// (`fmseg convert`, the segment pipeline).
pub fn load_volume(path: &Path, selection: &Selection) -> Result<(Volume, SeriesInfo)> {
    let l = load_series(path, selection)?;
    Ok((l.volume, l.info))
}
