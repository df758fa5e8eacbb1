//! The scan: where the patient's pelvis lies in the scanner, the axial-oblique slab prescribed
//! over it, and the image grid (matrix, pixel size, slices) as an LPS affine.
//!
//! The pelvis frame (see `anatomy`) is tilted in the scanner by the patient's pelvic tilt (the
//! sacral axis leans forward at the top), with small obliquity and rotation. The operator tilts
//! the slab about the left-right axis to follow the sacrum, imperfectly; the slab is centred on
//! the joints with an offset, and the in-plane field of view is centred with a random offset.

use super::render::Grid;
use super::rng::Rng;
use crate::volume::Affine;
use serde::{Deserialize, Serialize};

pub const TILT_RANGE_DEG: (f64, f64) = (0.0, 30.0);
pub const PIXEL_RANGE_MM: (f64, f64) = (0.5, 1.0);
pub const THICKNESS_RANGE_MM: (f64, f64) = (3.0, 6.0);
pub const SLICES_RANGE: (usize, usize) = (14, 30);
pub const MATRIX_RANGE: (usize, usize) = (256, 512);
/// Slab length the slice count is drawn for (before clamping to [`SLICES_RANGE`]), mm.
pub const SLAB_RANGE_MM: (f64, f64) = (60.0, 130.0);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Acquisition {
    pub field_strength_t: f64,
    /// A vendor-like label with that vendor's storage habits (rescale, value range).
    pub vendor: String,
    /// Volume dims `(i, j, k)`: `i` along the rows (towards the patient's left), `j` down the
    /// columns (towards posterior), `k` the slice.
    pub dims: [usize; 3],
    pub pixel_spacing_mm: [f64; 2],
    pub slice_thickness_mm: f64,
    pub slice_spacing_mm: f64,
    pub fov_mm: [f64; 2],
    /// Slab tilt about the left-right axis (top of the slab towards anterior).
    pub tilt_deg: f64,
    /// Small extra rotations of the slab about the anterior-posterior and the head-foot axes.
    pub slab_rotation_deg: [f64; 2],
    pub pelvic_tilt_deg: f64,
    pub pelvic_obliquity_deg: f64,
    pub pelvic_rotation_deg: f64,
    /// Slices stored head to foot (the affine's third column points inferior).
    pub slices_descending: bool,
    /// Phase-encoding axis of the volume (0 or 1): where ghosts and wrap appear.
    pub phase_axis: usize,
    /// Voxel index -> LPS mm.
    pub affine: Affine,
    pub repetition_time_ms: f64,
    pub echo_time_ms: f64,
    pub echo_train_length: u32,
}

/// Pelvis frame -> scanner LPS: `world = r * local + c`.
#[derive(Clone, Debug)]
pub struct Pose {
    pub r: [[f64; 3]; 3],
    pub c: [f64; 3],
}

impl Pose {
    pub fn to_world(&self, p: [f32; 3]) -> [f64; 3] {
        let p = p.map(|v| v as f64);
        [0, 1, 2].map(|i| self.r[i][0] * p[0] + self.r[i][1] * p[1] + self.r[i][2] * p[2] + self.c[i])
    }
    pub fn to_local(&self, w: [f64; 3]) -> [f32; 3] {
        let d = [w[0] - self.c[0], w[1] - self.c[1], w[2] - self.c[2]];
        [0, 1, 2].map(|i| (self.r[0][i] * d[0] + self.r[1][i] * d[1] + self.r[2][i] * d[2]) as f32)
    }
}

pub fn rot_x(a: f64) -> [[f64; 3]; 3] {
    let (s, c) = a.sin_cos();
    [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]
}
pub fn rot_y(a: f64) -> [[f64; 3]; 3] {
    let (s, c) = a.sin_cos();
    [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
}
pub fn rot_z(a: f64) -> [[f64; 3]; 3] {
    let (s, c) = a.sin_cos();
    [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
}
pub fn matmul(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut o = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            o[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    o
}

/// Draws the acquisition. `centre_local` is where in the pelvis frame the slab is aimed.
pub fn sample_acquisition(rng: &mut Rng) -> (Acquisition, Pose) {
    let field = if rng.chance(0.55) { 1.5 } else { 3.0 };
    let vendor =
        ["Siemens-like", "GE-like", "Philips-like", "Canon-like"][rng.weighted(&[0.35, 0.25, 0.3, 0.1])].to_string();

    // Matrix and pixel size: a field of view of 220-400 mm on a common matrix.
    let fov = rng.uniform(220.0, 400.0);
    let choices = [256usize, 288, 320, 336, 352, 384, 400, 416, 448, 480, 512];
    let ok: Vec<usize> = choices
        .iter()
        .copied()
        .filter(|&n| (PIXEL_RANGE_MM.0..=PIXEL_RANGE_MM.1).contains(&(fov / n as f64)))
        .collect();
    let n0 = if ok.is_empty() { 384 } else { ok[rng.int(0, ok.len() as i64 - 1) as usize] };
    let px = ((fov / n0 as f64).clamp(PIXEL_RANGE_MM.0, PIXEL_RANGE_MM.1) * 1e4).round() / 1e4;
    let n1 = if rng.chance(0.35) {
        ((n0 as f64 * rng.uniform(0.75, 0.95) / 16.0).round() as usize * 16).clamp(MATRIX_RANGE.0, n0)
    } else {
        n0
    };
    let thickness = (rng.uniform(THICKNESS_RANGE_MM.0, THICKNESS_RANGE_MM.1) * 10.0).round() / 10.0;
    let spacing =
        if rng.chance(0.5) { thickness } else { ((thickness * rng.uniform(1.05, 1.25)) * 10.0).round() / 10.0 };
    let slab = rng.uniform(SLAB_RANGE_MM.0, SLAB_RANGE_MM.1);
    let ns = ((slab / spacing).round() as usize).clamp(SLICES_RANGE.0, SLICES_RANGE.1);

    // Patient and slab orientation.
    let pelvic_tilt = rng.uniform(8.0, 28.0);
    let obliquity = rng.normal_clamped(0.0, 2.0, -5.0, 5.0);
    let rotation = rng.normal_clamped(0.0, 2.5, -6.0, 6.0);
    // The operator follows the sacrum, imperfectly; now and then the slab is left nearly
    // axial or tilted too far.
    let tilt = if rng.chance(0.1) { rng.uniform(0.0, 8.0) } else { pelvic_tilt + rng.normal(0.0, 4.0) }
        .clamp(TILT_RANGE_DEG.0, TILT_RANGE_DEG.1);
    let slab_rot = [rng.normal_clamped(0.0, 1.5, -4.0, 4.0), rng.normal_clamped(0.0, 1.5, -4.0, 4.0)];
    let r_p = matmul(
        &rot_z(rotation.to_radians()),
        &matmul(&rot_y(obliquity.to_radians()), &rot_x(pelvic_tilt.to_radians())),
    );
    let table = [rng.normal(0.0, 8.0), rng.normal(-10.0, 10.0), rng.uniform(-260.0, -60.0)];
    let pose = Pose { r: r_p, c: table };
    let r_s =
        matmul(&rot_z(slab_rot[1].to_radians()), &matmul(&rot_y(slab_rot[0].to_radians()), &rot_x(tilt.to_radians())));
    let e = [0, 1, 2].map(|c| [r_s[0][c], r_s[1][c], r_s[2][c]]);

    // Centre: the joints' middle, with offsets (in the pelvis frame).
    let centre_local = [
        rng.normal_clamped(0.0, 6.0, -15.0, 15.0) as f32,
        rng.uniform(-12.0, 12.0) as f32,
        rng.uniform(-8.0, 8.0) as f32,
    ];
    let centre = pose.to_world(centre_local);
    let dims = [n0, n1, ns];
    let steps = [px, px, spacing];
    let mut affine = [[0.0; 4]; 4];
    affine[3][3] = 1.0;
    let descending = rng.chance(0.3);
    for c in 0..3 {
        let sgn = if c == 2 && descending { -1.0 } else { 1.0 };
        for r in 0..3 {
            affine[r][c] = e[c][r] * steps[c] * sgn;
        }
    }
    for r in 0..3 {
        affine[r][3] = centre[r] - (0..3).map(|c| affine[r][c] * (dims[c] as f64 - 1.0) / 2.0).sum::<f64>();
    }
    let acq = Acquisition {
        field_strength_t: field,
        vendor,
        dims,
        pixel_spacing_mm: [px, px],
        slice_thickness_mm: thickness,
        slice_spacing_mm: spacing,
        fov_mm: [px * n0 as f64, px * n1 as f64],
        tilt_deg: tilt,
        slab_rotation_deg: slab_rot,
        pelvic_tilt_deg: pelvic_tilt,
        pelvic_obliquity_deg: obliquity,
        pelvic_rotation_deg: rotation,
        slices_descending: descending,
        phase_axis: if rng.chance(0.6) { 1 } else { 0 },
        affine,
        repetition_time_ms: (rng.uniform(350.0, 900.0)).round(),
        echo_time_ms: (rng.uniform(7.0, 22.0) * 10.0).round() / 10.0,
        echo_train_length: rng.int(2, 6) as u32,
    };
    (acq, pose)
}

/// The render grid (pelvis frame) of an acquisition.
pub fn grid_of(acq: &Acquisition, pose: &Pose) -> Grid {
    let a = &acq.affine;
    // local = R^T (A ijk + o - c)
    let mut m = [[0.0f32; 3]; 3];
    let mut t = [0.0f32; 3];
    for i in 0..3 {
        for c in 0..3 {
            m[i][c] = (0..3).map(|r| pose.r[r][i] * a[r][c]).sum::<f64>() as f32;
        }
        t[i] = (0..3).map(|r| pose.r[r][i] * (a[r][3] - pose.c[r])).sum::<f64>() as f32;
    }
    Grid { dims: acq.dims, m, t, half_thickness: (0.5 * acq.slice_thickness_mm / acq.slice_spacing_mm) as f32 }
}
