//! From per-slice DICOM geometry to one voxel grid with an LPS affine.
//!
//! Conventions (DICOM PS3.3 C.7.6.2): ImageOrientationPatient holds two direction cosines, the
//! first the direction of *increasing column index* (along a row, "row direction"), the second
//! the direction of *increasing row index* (down a column). PixelSpacing is
//! `[spacing between rows, spacing between columns]`, i.e. `[along the second cosine, along the
//! first]`. ImagePositionPatient is the centre of the first transmitted pixel.
//!
//! fmseg's voxel axes: `i` = column index (x in the image), `j` = row index, `k` = slice, with
//! slices ordered by increasing projection of ImagePositionPatient on the slice normal
//! `n = row_dir x col_dir`. The affine (voxel -> LPS mm) therefore has columns
//! `[row_dir * PixelSpacing[1], col_dir * PixelSpacing[0], n * slice_spacing]` and translation
//! ImagePositionPatient of slice k = 0. The slice spacing comes from the positions (the mean
//! step over the stack), never from SliceThickness, which is the excitation thickness and may
//! differ from the step (gaps, overlaps).

use std::path::PathBuf;

use super::header::FrameHeader;
use crate::error::dicom::{DResult, DicomError};
use crate::volume::Affine;

/// Two cosines that differ by more than this (per component) are different orientations.
/// Scanners write IOP with 6-16 significant digits; 1e-3 is about 0.06 degrees.
pub const ORIENTATION_TOLERANCE: f64 = 1e-3;
/// Relative tolerance on PixelSpacing agreement between slices.
pub const PIXEL_SPACING_TOLERANCE: f64 = 1e-4;
/// A step this close to zero (mm, or this fraction of the median step) is a duplicate position.
pub const DUPLICATE_TOLERANCE_MM: f64 = 1e-3;
pub const DUPLICATE_TOLERANCE_REL: f64 = 0.05;
/// A step larger than this many median steps means a missing slice (a missing slice gives ~2x).
pub const MISSING_SLICE_RATIO: f64 = 1.5;
/// Steps may deviate from the median by this fraction (or 1e-3 mm) and still count as uniform.
pub const UNIFORM_SPACING_REL: f64 = 0.01;
/// Largest in-plane offset between a slice's position and the stack axis, as a fraction of the
/// smaller pixel spacing (a sheared stack, e.g. with gantry tilt, is not a rectilinear grid).
pub const IN_PLANE_SHIFT_REL: f64 = 0.05;

/// One slice to stack: where it comes from (for messages) and its geometry.
#[derive(Clone, Debug)]
pub struct SliceRef<'a> {
    pub path: PathBuf,
    pub frame: &'a FrameHeader,
    /// Whether the file holds several frames (then messages name the frame too).
    pub multiframe: bool,
    pub rows: u16,
    pub cols: u16,
}

impl SliceRef<'_> {
    pub fn label(&self) -> String {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let name = if name.is_empty() { self.path.display().to_string() } else { name };
        if self.multiframe {
            format!("{name} frame {}", self.frame.frame + 1)
        } else {
            name
        }
    }
}

/// The voxel grid of a series.
#[derive(Clone, Debug, PartialEq)]
pub struct Stack {
    /// Indices into the input slices, in k order (increasing along `normal`).
    pub order: Vec<usize>,
    /// Unit direction of increasing column index (IOP first triplet).
    pub row_dir: [f64; 3],
    /// Unit direction of increasing row index (IOP second triplet).
    pub col_dir: [f64; 3],
    /// `row_dir x col_dir`.
    pub normal: [f64; 3],
    /// `[spacing between rows, spacing between columns]` as in DICOM.
    pub pixel_spacing: [f64; 2],
    pub slice_spacing: f64,
    /// False for a single slice, whose spacing comes from SpacingBetweenSlices / SliceThickness.
    pub spacing_from_positions: bool,
    /// ImagePositionPatient of slice k = 0.
    pub origin: [f64; 3],
    pub rows: u16,
    pub cols: u16,
}

impl Stack {
    /// Voxel (i = column, j = row, k = slice) -> LPS mm.
    pub fn affine(&self) -> Affine {
        let mut a = crate::volume::IDENTITY;
        for (r, row) in a.iter_mut().take(3).enumerate() {
            *row = [
                self.row_dir[r] * self.pixel_spacing[1],
                self.col_dir[r] * self.pixel_spacing[0],
                self.normal[r] * self.slice_spacing,
                self.origin[r],
            ];
        }
        a
    }
}

pub fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

/// Unit row and column directions from ImageOrientationPatient, or why they are unusable.
pub fn directions(iop: &[f64; 6]) -> Result<([f64; 3], [f64; 3]), String> {
    let r = [iop[0], iop[1], iop[2]];
    let c = [iop[3], iop[4], iop[5]];
    let (nr, nc) = (norm(r), norm(c));
    if (nr - 1.0).abs() > 1e-2 || (nc - 1.0).abs() > 1e-2 {
        return Err(format!("ImageOrientationPatient {iop:?} is not two unit vectors (lengths {nr:.4}, {nc:.4})"));
    }
    let r = r.map(|x| x / nr);
    let c = c.map(|x| x / nc);
    if dot(r, c).abs() > 1e-2 {
        return Err(format!("ImageOrientationPatient {iop:?}: the two directions are not orthogonal"));
    }
    Ok((r, c))
}

/// "axial", "oblique axial (12 deg)", "sagittal", ... from the slice normal; and the angle in
/// degrees between the normal and the S-I axis.
pub fn orientation_label(normal: [f64; 3]) -> (String, f64) {
    let a = normal.map(f64::abs);
    let (axis, name) = if a[2] >= a[0] && a[2] >= a[1] {
        (2, "axial")
    } else if a[1] >= a[0] {
        (1, "coronal")
    } else {
        (0, "sagittal")
    };
    let n = norm(normal).max(f64::MIN_POSITIVE);
    let angle = |ax: usize| (a[ax] / n).clamp(-1.0, 1.0).acos().to_degrees();
    let tilt = angle(axis);
    let label = if tilt < 0.5 { name.to_string() } else { format!("oblique {name} ({:.0} deg)", tilt) };
    (label, angle(2))
}

fn inconsistent(series: &str, msg: String) -> DicomError {
    DicomError::InconsistentGeometry { series: series.to_string(), msg }
}

/// A length in mm for a message: three decimals, or two significant digits when that would
/// print a non-zero length as 0.000.
fn mm(x: f64) -> String {
    if x.abs() >= 0.001 || x == 0.0 {
        format!("{x:.3}")
    } else {
        format!("{x:.1e}")
    }
}

/// Stack the slices of one series into a grid, checking everything that makes it one
/// rectilinear grid (see the module docs and the tolerance constants).
pub fn stack(series: &str, slices: &[SliceRef]) -> DResult<Stack> {
    let first = slices.first().ok_or_else(|| inconsistent(series, "no slices".into()))?;
    let need = |s: &SliceRef, what: &str| {
        DicomError::malformed(&s.path, format!("{}: no {what}: cannot place the slice in space", s.label()))
    };
    let mut geo = Vec::with_capacity(slices.len());
    for s in slices {
        let iop = s.frame.orientation.ok_or_else(|| need(s, "ImageOrientationPatient (0020,0037)"))?;
        let ipp = s.frame.position.ok_or_else(|| need(s, "ImagePositionPatient (0020,0032)"))?;
        let ps = s.frame.pixel_spacing.ok_or_else(|| need(s, "PixelSpacing (0028,0030)"))?;
        if ps.iter().any(|&x| x <= 0.0) {
            return Err(DicomError::malformed(&s.path, format!("{}: PixelSpacing {ps:?} must be positive", s.label())));
        }
        geo.push((iop, ipp, ps));
    }
    let (iop0, _, ps0) = geo[0];
    let (row_dir, col_dir) = directions(&iop0).map_err(|m| DicomError::malformed(&first.path, m))?;
    let normal = cross(row_dir, col_dir);

    for (s, (iop, _, ps)) in slices.iter().zip(&geo) {
        if s.rows != first.rows || s.cols != first.cols {
            return Err(inconsistent(
                series,
                format!(
                    "matrix differs: {} is {}x{} (rows x columns), {} is {}x{}",
                    first.label(),
                    first.rows,
                    first.cols,
                    s.label(),
                    s.rows,
                    s.cols
                ),
            ));
        }
        if iop.iter().zip(&iop0).any(|(a, b)| (a - b).abs() > ORIENTATION_TOLERANCE) {
            let (l0, _) = orientation_label(normal);
            let l1 = directions(iop).map(|(r, c)| orientation_label(cross(r, c)).0).unwrap_or_else(|m| m);
            return Err(inconsistent(
                series,
                format!("orientation differs: {} is {l0} {iop0:?}, {} is {l1} {iop:?}", first.label(), s.label()),
            ));
        }
        if ps.iter().zip(&ps0).any(|(a, b)| (a - b).abs() > PIXEL_SPACING_TOLERANCE * b.abs().max(1.0)) {
            return Err(inconsistent(
                series,
                format!("pixel spacing differs: {} has {ps0:?} mm, {} has {ps:?} mm", first.label(), s.label()),
            ));
        }
    }

    // Order along the normal; ties (duplicates, reported below) by label for determinism.
    let proj: Vec<f64> = geo.iter().map(|(_, p, _)| dot(*p, normal)).collect();
    let mut order: Vec<usize> = (0..slices.len()).collect();
    order.sort_by(|&a, &b| proj[a].total_cmp(&proj[b]).then_with(|| slices[a].label().cmp(&slices[b].label())));
    let origin = geo[order[0]].1;

    let n = order.len();
    let steps: Vec<f64> = order.windows(2).map(|w| proj[w[1]] - proj[w[0]]).collect();
    let mut sorted_steps = steps.clone();
    sorted_steps.sort_by(f64::total_cmp);
    // The lower median, so that with two steps of which one spans a missing slice, the median
    // is the regular step.
    let median = if n > 1 { sorted_steps[(n - 2) / 2] } else { 0.0 };
    let dup_tol = DUPLICATE_TOLERANCE_MM.max(DUPLICATE_TOLERANCE_REL * median);
    for (w, &step) in order.windows(2).zip(&steps) {
        if step <= dup_tol {
            return Err(DicomError::DuplicateSlice {
                series: series.to_string(),
                position: proj[w[0]],
                first: slices[w[0]].label(),
                second: slices[w[1]].label(),
            });
        }
    }

    // Every slice on the stack axis through the first: no in-plane shift.
    let shift_tol = IN_PLANE_SHIFT_REL * ps0[0].min(ps0[1]);
    for &idx in &order {
        let p = geo[idx].1;
        let d = [p[0] - origin[0], p[1] - origin[1], p[2] - origin[2]];
        let along = dot(d, normal);
        let off = norm([d[0] - along * normal[0], d[1] - along * normal[1], d[2] - along * normal[2]]);
        if off > shift_tol {
            return Err(inconsistent(
                series,
                format!(
                    "slices are not stacked along the slice normal: {} is shifted {} mm in-plane from {} \
                     (tolerance {} mm; sheared stacks, e.g. gantry tilt, are not supported)",
                    slices[idx].label(),
                    mm(off),
                    slices[order[0]].label(),
                    mm(shift_tol)
                ),
            ));
        }
    }

    let (slice_spacing, from_positions) = if n > 1 {
        let uniform_tol = (UNIFORM_SPACING_REL * median).max(1e-3);
        for (w, &step) in order.windows(2).zip(&steps) {
            if step > MISSING_SLICE_RATIO * median {
                return Err(DicomError::MissingSlice {
                    series: series.to_string(),
                    before: slices[w[0]].label(),
                    after: slices[w[1]].label(),
                    gap: step,
                    median,
                    missing: ((step / median).round() as usize).saturating_sub(1).max(1),
                });
            }
            if (step - median).abs() > uniform_tol {
                return Err(DicomError::NonUniformSpacing {
                    series: series.to_string(),
                    before: slices[w[0]].label(),
                    after: slices[w[1]].label(),
                    gap: step,
                    median,
                    tolerance: uniform_tol,
                });
            }
        }
        ((proj[order[n - 1]] - proj[order[0]]) / (n - 1) as f64, true)
    } else {
        let f = first.frame;
        let s = f.spacing_between_slices.filter(|x| *x > 0.0).or(f.slice_thickness.filter(|x| *x > 0.0)).unwrap_or(1.0);
        (s, false)
    };

    Ok(Stack {
        order,
        row_dir,
        col_dir,
        normal,
        pixel_spacing: ps0,
        slice_spacing,
        spacing_from_positions: from_positions,
        origin,
        rows: first.rows,
        cols: first.cols,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::dicom::header::Rescale;

    fn frame(pos: [f64; 3], iop: [f64; 6]) -> FrameHeader {
        FrameHeader {
            frame: 0,
            orientation: Some(iop),
            position: Some(pos),
            pixel_spacing: Some([0.5, 0.75]),
            slice_thickness: Some(3.0),
            spacing_between_slices: None,
            rescale: Rescale::IDENTITY,
            echo_time: None,
            repetition_time: None,
        }
    }

    fn refs(frames: &[FrameHeader]) -> Vec<SliceRef<'_>> {
        frames
            .iter()
            .enumerate()
            .map(|(i, f)| SliceRef {
                path: PathBuf::from(format!("s{i}.dcm")),
                frame: f,
                multiframe: false,
                rows: 4,
                cols: 6,
            })
            .collect()
    }

    const AXIAL: [f64; 6] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];

    #[test]
    fn axial_stack_sorted_and_affine_columns() {
        // Positions given out of order, descending z: the stack must come out ascending.
        let frames: Vec<_> = [8.0, 0.0, 4.0].iter().map(|&z| frame([-10.0, 20.0, z], AXIAL)).collect();
        let s = stack("S", &refs(&frames)).unwrap();
        assert_eq!(s.order, vec![1, 2, 0]);
        assert_eq!(s.slice_spacing, 4.0);
        let a = s.affine();
        // i along the row direction (x) with the column spacing 0.75; j along y with 0.5.
        assert_eq!([a[0][0], a[1][0], a[2][0]], [0.75, 0.0, 0.0]);
        assert_eq!([a[0][1], a[1][1], a[2][1]], [0.0, 0.5, 0.0]);
        assert_eq!([a[0][2], a[1][2], a[2][2]], [0.0, 0.0, 4.0]);
        assert_eq!([a[0][3], a[1][3], a[2][3]], [-10.0, 20.0, 0.0]);
    }

    #[test]
    fn lengths_in_messages_never_print_a_nonzero_as_zero() {
        assert_eq!(mm(0.0004), "4.0e-4");
        assert_eq!(mm(0.25), "0.250");
        assert_eq!(mm(0.0), "0.000");
    }

    #[test]
    fn labels() {
        assert_eq!(orientation_label([0.0, 0.0, 1.0]).0, "axial");
        assert_eq!(orientation_label([1.0, 0.0, 0.0]).0, "sagittal");
        assert_eq!(orientation_label([0.0, -1.0, 0.0]).0, "coronal");
        let t = 12f64.to_radians();
        let (l, tilt) = orientation_label([0.0, t.sin(), t.cos()]);
        assert_eq!(l, "oblique axial (12 deg)");
        assert!((tilt - 12.0).abs() < 1e-9);
    }

    #[test]
    fn missing_duplicate_nonuniform() {
        let mk = |zs: &[f64]| zs.iter().map(|&z| frame([0.0, 0.0, z], AXIAL)).collect::<Vec<_>>();
        let f = mk(&[0.0, 4.0, 12.0, 16.0]);
        match stack("S", &refs(&f)) {
            Err(DicomError::MissingSlice { before, after, missing, .. }) => {
                assert_eq!((before.as_str(), after.as_str(), missing), ("s1.dcm", "s2.dcm", 1));
            }
            other => panic!("{other:?}"),
        }
        let f = mk(&[0.0, 4.0, 4.0, 8.0]);
        assert!(matches!(stack("S", &refs(&f)), Err(DicomError::DuplicateSlice { .. })));
        let f = mk(&[0.0, 4.0, 8.3, 12.0]);
        assert!(matches!(stack("S", &refs(&f)), Err(DicomError::NonUniformSpacing { .. })));
        let f = mk(&[0.0, 4.0, 8.0 + 1e-4, 12.0]);
        assert!(stack("S", &refs(&f)).is_ok());
    }

    #[test]
    fn inconsistent_orientation_and_shear() {
        let mut f: Vec<_> = [0.0, 4.0, 8.0].iter().map(|&z| frame([0.0, 0.0, z], AXIAL)).collect();
        f[2].orientation = Some([1.0, 0.0, 0.0, 0.0, 0.0, -1.0]);
        assert!(matches!(stack("S", &refs(&f)), Err(DicomError::InconsistentGeometry { .. })));
        let f: Vec<_> = [0.0, 4.0, 8.0].iter().map(|&z| frame([z * 0.2, 0.0, z], AXIAL)).collect();
        let e = stack("S", &refs(&f)).unwrap_err().to_string();
        assert!(e.contains("not stacked along the slice normal"), "{e}");
    }
}
