//! Listing the series under a path and loading one into a [`Volume`].

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::geometry;
use super::header::FileHeader;
use super::info::{slice_refs, summarize, SeriesInfo};
use super::pixels::{check_pixel_format, decode_frames};
use super::scan::scan;
use super::select::{choose, Selection};
use crate::error::dicom::DicomError;
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
    /// A frame of a multi-frame object (references to it name the frame number).
    pub multiframe: bool,
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
    log::info!("series {}: {}", info.label(), choice.reason);
    load_files(info, &files[choice.index], choice.reason)
}

/// Every series under a path with the headers of its files, read once: what a batch over an
/// archive chooses from and loads series by series without scanning the tree again.
#[derive(Debug)]
pub struct Index {
    pub list: SeriesList,
    files: Vec<Vec<FileHeader>>,
}

impl Index {
    /// Scan `path` (a tree or a file); no error when it holds no image (the list is empty).
    pub fn build(path: &Path) -> Result<Index> {
        let Found { list, files } = find(path)?;
        Ok(Index { list, files })
    }

    /// The files of series `i` (of `list.series`), sorted by path.
    pub fn files(&self, i: usize) -> Vec<&Path> {
        self.files[i].iter().map(|h| h.path.as_path()).collect()
    }

    /// Load series `i`, recording `reason` as why it was chosen.
    pub fn load(&self, i: usize, reason: &str) -> Result<LoadedSeries> {
        load_files(self.list.series[i].clone(), &self.files[i], reason.to_string())
    }
}

/// Stack, check and decode the files of one series.
fn load_files(info: SeriesInfo, files: &[FileHeader], reason: String) -> Result<LoadedSeries> {
    let refs = slice_refs(files);
    let stack = geometry::stack(&info.label(), &refs)?;
    for h in files {
        check_pixel_format(h)?;
    }
    let voxels = stack.cols as u128 * stack.rows as u128 * stack.order.len() as u128;
    if voxels > crate::volume::MAX_INPUT_VOXELS as u128 {
        return Err(DicomError::InconsistentGeometry {
            series: info.label(),
            msg: format!(
                "{} x {} x {} slices = {voxels} voxels is more than fmseg reads ({} voxels); nothing was decoded",
                stack.cols,
                stack.rows,
                stack.order.len(),
                crate::volume::MAX_INPUT_VOXELS
            ),
        }
        .into());
    }
    // (file, frame) of each slice reference, in the same order as `refs`.
    let owners: Vec<(usize, usize)> =
        files.iter().enumerate().flat_map(|(fi, h)| (0..h.frames.len()).map(move |f| (fi, f))).collect();

    let decoded: Vec<Vec<Vec<f32>>> = files.par_iter().map(decode_frames).collect::<std::result::Result<_, _>>()?;

    let (cols, rows) = (stack.cols as usize, stack.rows as usize);
    let mut frames: Vec<&[f32]> = Vec::with_capacity(stack.order.len());
    let mut slices = Vec::with_capacity(stack.order.len());
    for &r in &stack.order {
        let (fi, f) = owners[r];
        frames.push(&decoded[fi][f]);
        let h = &files[fi];
        slices.push(SliceSource {
            path: h.path.clone(),
            frame: h.frames[f].frame,
            sop_class_uid: h.sop_class_uid.clone(),
            sop_instance_uid: h.sop_instance_uid.clone(),
            multiframe: h.number_of_frames > 1 || h.is_enhanced(),
        });
    }
    let data = assemble(&frames, cols, rows);
    let volume = Volume::new([cols, rows, frames.len()], data, stack.affine())?;
    Ok(LoadedSeries { volume, info, reason, slices })
}

/// Row-major frames (`row * cols + col`), in slice order, to fmseg's voxel order
/// (`(i = col, j = row, k)`, k fastest): a blocked transpose. Reading the same pixel of every
/// frame at once thrashes the caches (frames are ~1 MB apart, so they map to the same cache
/// sets); instead a block of 16 frames x 64 columns of one row is copied into a 4 KB buffer
/// (each frame read sequentially), then written out as 64 runs of 16 consecutive k.
/// On a 512x512x200 series this took assembly from 1.2 s to well under the decode time.
pub fn assemble(frames: &[&[f32]], cols: usize, rows: usize) -> Vec<f32> {
    const KB: usize = 16;
    const IB: usize = 64;
    let n = frames.len();
    let mut data = vec![0f32; cols * rows * n];
    if data.is_empty() {
        return data;
    }
    data.par_chunks_mut(IB * rows * n).enumerate().for_each(|(t, chunk)| {
        let i0 = t * IB;
        let width = chunk.len() / (rows * n);
        let mut buf = [[0f32; IB]; KB];
        for j in 0..rows {
            let src = j * cols + i0;
            for k0 in (0..n).step_by(KB) {
                let kw = KB.min(n - k0);
                for (b, frame) in buf.iter_mut().zip(&frames[k0..k0 + kw]) {
                    b[..width].copy_from_slice(&frame[src..src + width]);
                }
                for ii in 0..width {
                    let o = (ii * rows + j) * n + k0;
                    for (d, b) in chunk[o..o + kw].iter_mut().zip(&buf) {
                        *d = b[ii];
                    }
                }
            }
        }
    });
    data
}

/// [`load_series`] for callers that need only the volume and the series summary
/// (`fmseg convert`, the segment pipeline).
pub fn load_volume(path: &Path, selection: &Selection) -> Result<(Volume, SeriesInfo)> {
    let l = load_series(path, selection)?;
    Ok((l.volume, l.info))
}

#[cfg(test)]
mod tests {
    #[test]
    fn assemble_matches_the_definition() {
        // 150 columns and 37 slices: full and partial blocks both ways.
        let (cols, rows, n) = (150, 5, 37);
        let frames: Vec<Vec<f32>> = (0..n).map(|k| (0..rows * cols).map(|p| (k * 1000 + p) as f32).collect()).collect();
        let refs: Vec<&[f32]> = frames.iter().map(|f| f.as_slice()).collect();
        let data = super::assemble(&refs, cols, rows);
        for i in 0..cols {
            for j in 0..rows {
                for k in 0..n {
                    assert_eq!(data[(i * rows + j) * n + k], frames[k][j * cols + i]);
                }
            }
        }
    }
}
