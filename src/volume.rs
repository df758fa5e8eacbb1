//! A 3-D image with its geometry: the unit every reader produces and every writer consumes.

use crate::error::{Error, Result};
use crate::tensor::{numel, Dims};

/// Voxel index `(i, j, k, 1)` to patient coordinates in millimetres, **LPS** (DICOM's
/// convention: +x to the patient's left, +y posterior, +z superior). NIfTI's RAS affines are
/// converted at the file boundary.
pub type Affine = [[f64; 4]; 4];

/// The largest image any reader accepts (2^28 voxels, 1 GiB as float32: a 512x512x1024 stack),
/// checked against the declared size before the voxel data is read or memory is reserved.
pub const MAX_INPUT_VOXELS: usize = 1 << 28;

pub const IDENTITY: Affine = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];

/// A scalar volume. `data` is row-major over `(i, j, k)` with `k` fastest, the same order as the
/// network's `(H, W, D)`: `data[(i * dims[1] + j) * dims[2] + k]`. For an axial series `k`
/// is the slice index.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    pub dims: Dims,
    pub data: Vec<f32>,
    pub affine: Affine,
}

impl Volume {
    pub fn new(dims: Dims, data: Vec<f32>, affine: Affine) -> Result<Self> {
        if numel(dims) != data.len() {
            return Err(Error::Shape(format!("volume {:?} needs {} voxels, got {}", dims, numel(dims), data.len())));
        }
        Ok(Volume { dims, data, affine })
    }

    pub fn index(&self, i: usize, j: usize, k: usize) -> usize {
        (i * self.dims[1] + j) * self.dims[2] + k
    }

    pub fn get(&self, i: usize, j: usize, k: usize) -> f32 {
        self.data[self.index(i, j, k)]
    }

    /// Voxel spacing: the length of each affine column.
    pub fn spacing(&self) -> [f64; 3] {
        let a = &self.affine;
        [0, 1, 2].map(|c| (a[0][c].powi(2) + a[1][c].powi(2) + a[2][c].powi(2)).sqrt())
    }

    /// World position (LPS mm) of a voxel centre.
    pub fn world(&self, ijk: [f64; 3]) -> [f64; 3] {
        let a = &self.affine;
        [0, 1, 2].map(|r| a[r][0] * ijk[0] + a[r][1] * ijk[1] + a[r][2] * ijk[2] + a[r][3])
    }
}

/// RAS <-> LPS: negate the first two rows (the transform is its own inverse).
pub fn flip_xy(a: &Affine) -> Affine {
    let mut o = *a;
    for r in 0..2 {
        for c in 0..4 {
            o[r][c] = -o[r][c];
        }
    }
    o
}
