//! Finding DICOM images under a path: a directory tree (recursive, symlinks followed), a single
//! file, or an Enhanced (multi-frame) object. A file is DICOM when it carries the Part 10
//! preamble (`DICM` at byte 128); anything else is skipped quietly (counted, logged at debug).
//! A file with the preamble that cannot be parsed is reported by name with the reason.
//! Headers are read up to (not including) Pixel Data, so scanning an archive stays cheap.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use rayon::prelude::*;

use super::guard::contain;
use super::header::{is_image, read_header, FileHeader};
use crate::error::dicom::{DResult, DicomError};

/// The outcome of scanning a path.
#[derive(Debug, Default)]
pub struct Scan {
    /// Image headers grouped by SeriesInstanceUID (sorted by UID; files sorted by path).
    pub series: BTreeMap<String, Vec<FileHeader>>,
    /// Files without the DICOM preamble (and dangling symlinks, temporary files).
    pub skipped_non_dicom: usize,
    /// DICOM objects that are not images (no Rows/Columns: DICOMDIR, SR, presentation states).
    pub skipped_non_image: usize,
    /// Files with the DICOM preamble that could not be parsed, or whose header is unusable.
    pub unreadable: Vec<DicomError>,
}

/// Whether a file starts with the 128-byte preamble followed by `DICM`.
pub fn has_dicm_preamble(path: &Path) -> DResult<bool> {
    let mut f = std::fs::File::open(path).map_err(|e| DicomError::io(path, e))?;
    let mut buf = [0u8; 132];
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DicomError::io(path, e)),
        }
    }
    Ok(got == 132 && &buf[128..132] == b"DICM")
}

/// Our own (and the NIfTI writer's) in-progress temporary files: `.name.tmp`, `.name.tmp-...`.
fn is_temporary(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.') && n.contains(".tmp"))
}

/// Files under `root` in name order, and how many entries were passed over (dangling symlinks,
/// temporary files of an interrupted write). Other walk errors (permissions, symlink loops)
/// are errors: skipping them could silently drop slices.
fn list_files(root: &Path) -> DResult<(Vec<PathBuf>, usize)> {
    let meta = std::fs::metadata(root).map_err(|e| DicomError::io(root, e))?;
    if meta.is_file() {
        return Ok((vec![root.to_path_buf()], 0));
    }
    let mut files = Vec::new();
    let mut passed_over = 0;
    for entry in walkdir::WalkDir::new(root).follow_links(true).sort_by_file_name() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if e.io_error().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) => {
                log::debug!("skipping {}: {e}", e.path().unwrap_or(root).display());
                passed_over += 1;
                continue;
            }
            Err(e) => {
                let p = e.path().unwrap_or(root).to_path_buf();
                let msg = e.to_string();
                return Err(match e.into_io_error() {
                    Some(io) => DicomError::io(&p, io),
                    None => DicomError::malformed(&p, msg),
                });
            }
        };
        if entry.file_type().is_file() {
            if is_temporary(entry.path()) {
                passed_over += 1;
            } else {
                files.push(entry.into_path());
            }
        }
    }
    Ok((files, passed_over))
}

enum FileKind {
    NotDicom,
    NotImage,
    Image(Box<FileHeader>),
    Bad(DicomError),
}

fn classify(path: &Path) -> DResult<FileKind> {
    if !has_dicm_preamble(path)? {
        return Ok(FileKind::NotDicom);
    }
    let unreadable = |reason: String| Ok(FileKind::Bad(DicomError::Unreadable { path: path.to_path_buf(), reason }));
    if let Err(e) = super::lengths::check_lengths(path, true) {
        return Ok(FileKind::Bad(e));
    }
    let obj = match contain(|| OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(path)) {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return unreadable(error_chain(&e)),
        Err(panic) => return unreadable(format!("parser failed: {panic}")),
    };
    if !is_image(&obj) {
        // dicom-rs ends a data set quietly when the file ends inside an element tag, so a file
        // cut in its header can parse "successfully" without Rows: an image SOP class (or pixel
        // data) without Rows/Columns is a broken file, not a non-image object to skip.
        let class = obj.meta().media_storage_sop_class_uid().trim_end_matches('\0');
        if is_image_sop_class(class) || obj.get(tags::PIXEL_DATA).is_some() || obj.get(tags::NUMBER_OF_FRAMES).is_some()
        {
            return Ok(FileKind::Bad(DicomError::Unreadable {
                path: path.to_path_buf(),
                reason: format!(
                    "image object (SOP class {class}) without Rows/Columns: the file is truncated or malformed"
                ),
            }));
        }
        return Ok(FileKind::NotImage);
    }
    let ts = obj.meta().transfer_syntax().to_string();
    let class = obj.meta().media_storage_sop_class_uid().to_string();
    match read_header(&obj, path, &ts, &class) {
        Ok(h) => Ok(FileKind::Image(Box::new(h))),
        Err(e) => Ok(FileKind::Bad(e)),
    }
}

/// Image storage SOP classes an MR study may hold: MR, Enhanced MR (+colour, legacy converted),
/// CT, Enhanced CT, legacy converted CT, PET, Enhanced PET, secondary captures.
fn is_image_sop_class(uid: &str) -> bool {
    const ROOT: &str = "1.2.840.10008.5.1.4.1.1.";
    const IMAGE: &[&str] =
        &["4", "4.1", "4.3", "4.4", "2", "2.1", "2.2", "128", "128.1", "130", "7", "7.1", "7.2", "7.3", "7.4"];
    uid.strip_prefix(ROOT).is_some_and(|rest| IMAGE.contains(&rest))
}

/// A dicom-rs error with its sources, on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Scan `path` (a directory tree or one file). I/O errors on the path itself are errors; broken
/// DICOM files are collected in [`Scan::unreadable`]. A file without the preamble is skipped
/// unless it looks like a damaged slice: a `.dcm`/`.ima` name, or a name that differs only in
/// its digits from an image beside it (`IM1_0012` next to `IM1_0011`); dropping such a file
/// would silently shorten the stack.
pub fn scan(path: &Path) -> DResult<Scan> {
    let (files, passed_over) = list_files(path)?;
    let kinds: Vec<DResult<FileKind>> = files.par_iter().map(|f| classify(f)).collect();
    let mut out = Scan { skipped_non_dicom: passed_over, ..Scan::default() };
    let mut not_dicom = Vec::new();
    for (k, f) in kinds.into_iter().zip(&files) {
        match k? {
            FileKind::NotDicom => not_dicom.push(f),
            FileKind::NotImage => out.skipped_non_image += 1,
            FileKind::Image(h) => out.series.entry(h.series_uid.clone()).or_default().push(*h),
            FileKind::Bad(e) => out.unreadable.push(e),
        }
    }
    let image_patterns: std::collections::HashSet<(Option<&Path>, String)> =
        out.series.values().flatten().map(|h| (h.path.parent(), name_pattern(&h.path))).collect();
    let mut damaged = Vec::new();
    for f in not_dicom {
        let named_like_dicom = f
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("dcm") || e.eq_ignore_ascii_case("ima"));
        if named_like_dicom || image_patterns.contains(&(f.parent(), name_pattern(f))) {
            damaged.push(DicomError::DamagedSlice { path: f.clone(), reason: not_dicom_reason(f) });
        } else {
            out.skipped_non_dicom += 1;
        }
    }
    out.unreadable.extend(damaged);
    log::debug!(
        "{}: {} file(s), {} series, {} non-DICOM and {} non-image DICOM file(s) skipped, {} unreadable",
        path.display(),
        files.len(),
        out.series.len(),
        out.skipped_non_dicom,
        out.skipped_non_image,
        out.unreadable.len()
    );
    Ok(out)
}

/// A file name with every run of digits replaced by `#`: `IM1_0012.dcm` -> `IM#_#.dcm`.
fn name_pattern(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('#') {
            out.push('#');
        }
    }
    out
}

/// Why a file named like a DICOM image is not one, in words: its size, and whether it is all zeros.
fn not_dicom_reason(path: &Path) -> String {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let zeros = size > 0
        && std::fs::File::open(path).is_ok_and(|f| {
            let mut buf = [0u8; 1 << 16];
            let mut f = std::io::BufReader::new(f);
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) if buf[..n].iter().all(|&b| b == 0) => continue,
                    _ => break false,
                }
            }
        });
    let what = if size == 0 {
        "is empty".to_string()
    } else if size < 132 {
        format!("is cut short ({size} bytes, shorter than the 132-byte DICOM preamble)")
    } else if zeros {
        format!("holds {size} zero bytes")
    } else {
        format!("has no DICOM preamble ({size} bytes)")
    };
    format!(
        "{what}, but it is named like the DICOM images beside it: a damaged or truncated slice? Remove it, or \
         replace it with an intact copy, to segment the series"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_patterns_ignore_digits() {
        assert_eq!(name_pattern(Path::new("d/IM1_0012.dcm")), "IM#_#.dcm");
        assert_eq!(name_pattern(Path::new("IM1_0009")), name_pattern(Path::new("IM27_0100")));
        assert_ne!(name_pattern(Path::new("README")), name_pattern(Path::new("IM1_0009")));
    }
}
