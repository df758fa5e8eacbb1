//! The geometry of MONAI's `Orientation` and `Spacing` transforms, reproduced operation for
//! operation (MONAI 1.x, as used to make the reference fixtures).
//!
//! All affines here are LPS (the crate's convention). MONAI works in RAS, but the two differ
//! by negating the first two rows, and every computation below (polar factor, Cholesky of
//! `A^T A`, LU solves, corner tests) is exactly sign-symmetric in IEEE arithmetic, so the
//! results are the same numbers with those rows negated.
//!
//! Resampling follows MONAI's `spatial_resample` with the PyTorch backend:
//! `xform = solve(A_src, A_dst)` maps a destination voxel index to a source voxel index; it
//! is wrapped into PyTorch's normalised coordinates (`to_norm_affine`, align_corners=False),
//! turned into a sampling grid by `affine_grid` and sampled by `grid_sample`. Where this
//! matters is nearest-neighbour resampling: source coordinates that land exactly half-way
//! between two voxels (routine when 0.75 mm voxels meet a 1 mm grid) are decided by the last
//! bit of that float64 pipeline. [`SourceGrid`] therefore evaluates the same expressions in
//! the same order as PyTorch 2.9 on CPU: `linspace` contracted into a fused multiply-add
//! (as the compiler does in PyTorch's AVX2/AVX-512 kernels), the grid product summed
//! x, y, z, 1 without fusion, then `((g + 1) * size - 1) / 2`, border clamping and
//! round-half-to-even. With it the fixture's mask is reproduced voxel for voxel.

use crate::error::{Error, Result};
use crate::linalg::{self, Mat3, Mat4};
use crate::tensor::Dims;
use crate::volume::{Affine, IDENTITY};

/// MONAI's `AFFINE_TOL` (monai/data/utils.py).
pub const AFFINE_TOL: f64 = 1e-3;

// ---------------------------------------------------------------- orientation

/// A reorientation by axis permutation and flips: output axis `a` is input axis `perm[a]`,
/// reversed when `flip[a]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reorientation {
    pub perm: [usize; 3],
    pub flip: [bool; 3],
    pub in_dims: Dims,
}

impl Reorientation {
    pub fn out_dims(&self) -> Dims {
        self.perm.map(|p| self.in_dims[p])
    }

    pub fn is_identity(&self) -> bool {
        self.perm == [0, 1, 2] && self.flip == [false; 3]
    }

    /// Input voxel index of output voxel `o`.
    fn source(&self, o: [usize; 3]) -> [usize; 3] {
        let mut s = [0; 3];
        for a in 0..3 {
            let n = self.in_dims[self.perm[a]];
            s[self.perm[a]] = if self.flip[a] { n - 1 - o[a] } else { o[a] };
        }
        s
    }

    /// Reorient row-major (k fastest) voxel data.
    pub fn apply<T: Copy + Default>(&self, data: &[T]) -> Vec<T> {
        let od = self.out_dims();
        let id = self.in_dims;
        let mut out = vec![T::default(); data.len()];
        let mut n = 0;
        for i in 0..od[0] {
            for j in 0..od[1] {
                for k in 0..od[2] {
                    let s = self.source([i, j, k]);
                    out[n] = data[(s[0] * id[1] + s[1]) * id[2] + s[2]];
                    n += 1;
                }
            }
        }
        out
    }

    /// Undo [`Reorientation::apply`]: data on the output grid back to the input grid.
    pub fn invert<T: Copy + Default>(&self, data: &[T]) -> Vec<T> {
        let od = self.out_dims();
        let id = self.in_dims;
        let mut out = vec![T::default(); data.len()];
        let mut n = 0;
        for i in 0..od[0] {
            for j in 0..od[1] {
                for k in 0..od[2] {
                    let s = self.source([i, j, k]);
                    out[(s[0] * id[1] + s[1]) * id[2] + s[2]] = data[n];
                    n += 1;
                }
            }
        }
        out
    }

    /// The affine of the reoriented grid: `affine @ inv_ornt_aff` (nibabel), which maps an
    /// output index to the input index.
    pub fn out_affine(&self, affine: &Affine) -> Affine {
        let mut x = [[0.0; 4]; 4];
        x[3][3] = 1.0;
        for a in 0..3 {
            let p = self.perm[a];
            if self.flip[a] {
                x[p][a] = -1.0;
                x[p][3] = (self.in_dims[p] - 1) as f64;
            } else {
                x[p][a] = 1.0;
            }
        }
        linalg::matmul4(affine, &x)
    }
}

/// nibabel's `io_orientation`: for each voxel axis, the world axis it runs closest to and
/// the sign, from the orthogonal polar factor of the direction matrix, assigning world axes
/// greedily in voxel-axis order. `None` for a singular affine.
pub fn io_orientation(affine: &Affine) -> Option<[(usize, bool); 3]> {
    let m = linalg::linear_part(affine);
    let mut rs: Mat3 = m;
    for c in 0..3 {
        let z = (m[0][c] * m[0][c] + m[1][c] * m[1][c] + m[2][c] * m[2][c]).sqrt();
        if z == 0.0 {
            return None;
        }
        for row in rs.iter_mut() {
            row[c] /= z;
        }
    }
    let mut r = linalg::polar3(&rs)?;
    let mut out = [(0usize, false); 3];
    for (in_ax, o) in out.iter_mut().enumerate() {
        let mut best = 0;
        for w in 1..3 {
            if r[w][in_ax].abs() > r[best][in_ax].abs() {
                best = w;
            }
        }
        if r[best][in_ax] == 0.0 {
            return None;
        }
        *o = (best, r[best][in_ax] < 0.0);
        for c in 0..3 {
            r[best][c] = 0.0;
        }
    }
    Some(out)
}

/// MONAI `Orientation(axcodes="LPS")`: array axis 0 towards the patient's left, 1 posterior,
/// 2 superior, i.e. every axis increasing along the LPS world axis of the same number.
pub fn orient_to_lps(dims: Dims, affine: &Affine) -> Result<Reorientation> {
    let ornt = io_orientation(affine)
        .ok_or_else(|| Error::Value(format!("cannot reorient: singular voxel-to-world affine {affine:?}")))?;
    let mut perm = [0; 3];
    let mut flip = [false; 3];
    for (in_ax, &(w, neg)) in ornt.iter().enumerate() {
        perm[w] = in_ax;
        flip[w] = neg;
    }
    Ok(Reorientation { perm, flip, in_dims: dims })
}

// ---------------------------------------------------------------- spacing

/// MONAI `Spacing(pixdim, diagonal=False)`: the output grid for an input grid.
#[derive(Clone, Debug, PartialEq)]
pub struct SpacingPlan {
    pub in_dims: Dims,
    pub in_affine: Affine,
    pub out_dims: Dims,
    /// The output affine; equal to `in_affine` when `resampled` is false.
    pub out_affine: Affine,
    /// False when MONAI skips the resampling because the grids already agree to
    /// `AFFINE_TOL` (the data are then passed through and the affine kept).
    pub resampled: bool,
}

/// Columns' lengths (`affine_to_spacing`).
pub fn spacing_of(a: &Affine) -> [f64; 3] {
    [0, 1, 2].map(|c| (a[0][c] * a[0][c] + a[1][c] * a[1][c] + a[2][c] * a[2][c]).sqrt())
}

/// MONAI's `zoom_affine(affine, scale, diagonal=False)`: keep the rotation of the QR
/// factorisation (via Cholesky of `A^T A`), set the column lengths to `scale`, zero
/// translation.
pub fn zoom_affine(affine: &Affine, scale: [f64; 3]) -> Result<Affine> {
    let rzs = linalg::linear_part(affine);
    let rtr = linalg::matmul3(&linalg::transpose3(&rzs), &rzs);
    let l = linalg::cholesky3(&rtr)
        .ok_or_else(|| Error::Value(format!("cannot resample: degenerate voxel-to-world affine {affine:?}")))?;
    let zs = linalg::transpose3(&l); // upper triangular
    let zs_inv = linalg::inv3(&zs)
        .ok_or_else(|| Error::Value(format!("cannot resample: degenerate voxel-to-world affine {affine:?}")))?;
    let rot = linalg::matmul3(&rzs, &zs_inv);
    let s = [0, 1, 2].map(|i| zs[i][i].signum() * scale[i].abs());
    let mut out = IDENTITY;
    for i in 0..3 {
        for j in 0..3 {
            out[i][j] = rot[i][j] * s[j];
        }
    }
    Ok(out)
}

/// MONAI's `compute_shape_offset(shape, in_affine, out_affine)` (scale_extent=False): the
/// output shape covering the input's voxel centres, and the output origin: at the input
/// corner that is the minimum along every output axis when there is one (tested with
/// `allclose(.., 0, rtol=AFFINE_TOL)`, i.e. NumPy's `atol=1e-8`), else centre-aligned.
pub fn compute_shape_offset(shape: Dims, in_affine: &Affine, out_affine: &Affine) -> Result<(Dims, [f64; 3])> {
    let xf = linalg::solve4(out_affine, in_affine)
        .ok_or_else(|| Error::Value(format!("output affine {out_affine:?} is not invertible")))?;
    let sh = shape.map(|d| d as f64);
    // corners in np.meshgrid(indexing="ij") order: axis 0 slowest
    let mut corners = [[0.0f64; 4]; 8];
    for (c, corner) in corners.iter_mut().enumerate() {
        for a in 0..3 {
            corner[a] = if (c >> (2 - a)) & 1 == 1 { sh[a] - 1.0 } else { 0.0 };
        }
        corner[3] = 1.0;
    }
    let mul = |m: &Mat4, v: &[f64; 4]| -> [f64; 4] {
        let mut o = [0.0; 4];
        for (r, out) in o.iter_mut().enumerate() {
            let mut acc = 0.0;
            for k in 0..4 {
                acc += m[r][k] * v[k];
            }
            *out = acc;
        }
        o
    };
    let out_c: Vec<[f64; 4]> = corners.iter().map(|c| mul(&xf, c)).collect();
    let mut out_shape = [0usize; 3];
    for a in 0..3 {
        let vals = out_c.iter().map(|c| c[a] / c[3]);
        let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let n = (hi - lo + 1.0).round_ties_even();
        if !(1.0..=1e7).contains(&n) {
            return Err(Error::Value(format!("resampled grid would have {n} voxels along axis {a}")));
        }
        out_shape[a] = n as usize;
    }
    for (i, ci) in out_c.iter().enumerate() {
        let is_min = (0..3).all(|a| {
            let m = out_c.iter().map(|c| c[a] - ci[a]).fold(f64::INFINITY, f64::min);
            m.abs() <= 1e-8 // np.allclose(m, 0, rtol=AFFINE_TOL): atol only, as b = 0
        });
        if is_min {
            let w = mul(in_affine, &corners[i]);
            return Ok((out_shape, [w[0], w[1], w[2]]));
        }
    }
    let mut off = [0.0; 3];
    for (r, o) in off.iter_mut().enumerate() {
        let mut a_in = 0.0;
        let mut a_out = 0.0;
        for k in 0..3 {
            a_in += in_affine[r][k] * (sh[k] / 2.0);
            a_out += out_affine[r][k] * (out_shape[k] as f64 / 2.0);
        }
        *o = a_in + in_affine[r][3] - a_out;
    }
    Ok((out_shape, off))
}

/// MONAI's `allclose` on affines (PyTorch semantics: `|a - b| <= atol + rtol |b|`, rtol 1e-5).
fn allclose(a: &Mat4, b: &Mat4, atol: f64) -> bool {
    (0..4).all(|i| (0..4).all(|j| (a[i][j] - b[i][j]).abs() <= atol + 1e-5 * b[i][j].abs()))
}

/// Would MONAI's `spatial_resample` skip resampling from (`src`, `src_dims`) to
/// (`dst`, `dst_dims`)? Returns the `xform` (destination index -> source index) otherwise.
pub fn resample_xform(src: &Affine, src_dims: Dims, dst: &Affine, dst_dims: Dims) -> Result<Option<Mat4>> {
    let xform =
        linalg::solve4(src, dst).ok_or_else(|| Error::Value(format!("source affine {src:?} is not invertible")))?;
    let same_size = src_dims == dst_dims;
    if same_size && (allclose(src, dst, AFFINE_TOL) || allclose(&xform, &IDENTITY, AFFINE_TOL)) {
        return Ok(None);
    }
    Ok(Some(xform))
}

/// Plan MONAI's `Spacing(pixdim)` for a grid: MONAI keeps an input spacing that is already
/// within `AFFINE_TOL` of the target.
pub fn plan_spacing(in_dims: Dims, in_affine: &Affine, pixdim: [f64; 3]) -> Result<SpacingPlan> {
    let orig = spacing_of(in_affine);
    let out_d = [0, 1, 2].map(|i| {
        let t = pixdim[i];
        if (t - AFFINE_TOL) <= orig[i] && orig[i] <= (t + AFFINE_TOL) {
            orig[i]
        } else {
            t
        }
    });
    let mut out_affine = zoom_affine(in_affine, out_d)?;
    let (out_dims, offset) = compute_shape_offset(in_dims, in_affine, &out_affine)?;
    for r in 0..3 {
        out_affine[r][3] = offset[r];
    }
    match resample_xform(in_affine, in_dims, &out_affine, out_dims)? {
        None => Ok(SpacingPlan {
            in_dims,
            in_affine: *in_affine,
            out_dims: in_dims,
            out_affine: *in_affine,
            resampled: false,
        }),
        Some(_) => Ok(SpacingPlan { in_dims, in_affine: *in_affine, out_dims, out_affine, resampled: true }),
    }
}

/// `affine @ translate(shift)` as MONAI composes pads (shift = -pad) and crops (+start).
pub fn translate(affine: &Affine, shift: [f64; 3]) -> Affine {
    let mut t = IDENTITY;
    for r in 0..3 {
        t[r][3] = shift[r];
    }
    linalg::matmul4(affine, &t)
}

// ---------------------------------------------------------------- PyTorch sampling grid

/// `torch.linspace(-1, 1, n)` (float64, CPU) as built: `start + step * i` for the first half
/// and `end - step * (n - 1 - i)` for the rest, each contracted into one fused multiply-add.
fn torch_linspace(n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![-1.0];
    }
    let step = 2.0 / (n - 1) as f64;
    let half = n / 2;
    (0..n)
        .map(|i| if i < half { step.mul_add(i as f64, -1.0) } else { (-step).mul_add((n - 1 - i) as f64, 1.0) })
        .collect()
}

/// `linspace_from_neg_one(n, align_corners=False)` of PyTorch's `affine_grid`.
fn base_grid(n: usize) -> Vec<f64> {
    if n <= 1 {
        return vec![0.0];
    }
    torch_linspace(n).into_iter().map(|v| v * (n - 1) as f64 / n as f64).collect()
}

/// MONAI's `normalize_transform(shape, align_corners=False)`.
fn normalize_transform(dims: Dims) -> Mat4 {
    let mut m = IDENTITY;
    for a in 0..3 {
        let s = dims[a] as f64;
        let s = if s <= 0.0 { 2.0 } else { s };
        m[a][a] = 2.0 / s;
        m[a][3] = 1.0 / s - 1.0;
    }
    m
}

/// For every destination voxel, the (unclamped-then-border-clamped) source coordinate that
/// PyTorch's `affine_grid` + `grid_sample(align_corners=False, padding_mode="border")`
/// computes from MONAI's `xform`.
pub struct SourceGrid {
    theta: Mat4,
    base: [Vec<f64>; 3],
    src_dims: Dims,
    pub dst_dims: Dims,
}

impl SourceGrid {
    pub fn new(xform: &Mat4, src_dims: Dims, dst_dims: Dims) -> Result<Self> {
        // to_norm_affine: src_xform @ xform @ inv(dst_xform)
        let dst_inv = linalg::inv4(&normalize_transform(dst_dims))
            .ok_or_else(|| Error::Value(format!("bad grid size {dst_dims:?}")))?;
        let theta = linalg::matmul4(&linalg::matmul4(&normalize_transform(src_dims), xform), &dst_inv);
        Ok(SourceGrid { theta, base: dst_dims.map(base_grid), src_dims, dst_dims })
    }

    /// Source coordinate (in source voxel units, border-clamped) of destination voxel `d`.
    #[inline]
    pub fn coord(&self, d: [usize; 3]) -> [f64; 3] {
        let (b0, b1, b2) = (self.base[0][d[0]], self.base[1][d[1]], self.base[2][d[2]]);
        let mut out = [0.0; 3];
        for (m, o) in out.iter_mut().enumerate() {
            let t = &self.theta[m];
            // bmm of (x, y, z, 1) = (axis 2, axis 1, axis 0, 1) with the index-reversed theta
            let mut g = b2 * t[2];
            g += b1 * t[1];
            g += b0 * t[0];
            g += t[3];
            let size = self.src_dims[m] as f64;
            let c = ((g + 1.0) * size - 1.0) / 2.0;
            *o = (size - 1.0).min(c.max(0.0));
        }
        out
    }
}

/// Resample row-major `src` (dims `grid.src_dims`) with nearest neighbour (round half to
/// even, as `std::nearbyint`).
pub fn sample_nearest<T: Copy>(src: &[T], grid: &SourceGrid) -> Vec<T> {
    let [d0, d1, d2] = grid.dst_dims;
    let s = grid.src_dims;
    let mut out = Vec::with_capacity(d0 * d1 * d2);
    for i in 0..d0 {
        for j in 0..d1 {
            for k in 0..d2 {
                let c = grid.coord([i, j, k]);
                let [x, y, z] = c.map(|v| v.round_ties_even() as usize);
                out.push(src[(x * s[1] + y) * s[2] + z]);
            }
        }
    }
    out
}

/// Resample row-major `src` with trilinear interpolation, as PyTorch's 3-D CPU
/// `grid_sample` (float64 weights, corners accumulated in its order).
pub fn sample_linear(src: &[f32], grid: &SourceGrid) -> Vec<f32> {
    let [d0, d1, d2] = grid.dst_dims;
    let s = grid.src_dims;
    let at = |z: i64, y: i64, x: i64| -> Option<f64> {
        if z >= 0 && y >= 0 && x >= 0 && (z as usize) < s[0] && (y as usize) < s[1] && (x as usize) < s[2] {
            Some(src[(z as usize * s[1] + y as usize) * s[2] + x as usize] as f64)
        } else {
            None
        }
    };
    let mut out = Vec::with_capacity(d0 * d1 * d2);
    for i in 0..d0 {
        for j in 0..d1 {
            for k in 0..d2 {
                // PyTorch names: z = axis 0 (depth), y = axis 1, x = axis 2
                let [iz, iy, ix] = grid.coord([i, j, k]);
                let (x0, y0, z0) = (ix.floor(), iy.floor(), iz.floor());
                let (x1, y1, z1) = (x0 + 1.0, y0 + 1.0, z0 + 1.0);
                let tnw = (x1 - ix) * (y1 - iy) * (z1 - iz);
                let tne = (ix - x0) * (y1 - iy) * (z1 - iz);
                let tsw = (x1 - ix) * (iy - y0) * (z1 - iz);
                let tse = (ix - x0) * (iy - y0) * (z1 - iz);
                let bnw = (x1 - ix) * (y1 - iy) * (iz - z0);
                let bne = (ix - x0) * (y1 - iy) * (iz - z0);
                let bsw = (x1 - ix) * (iy - y0) * (iz - z0);
                let bse = (ix - x0) * (iy - y0) * (iz - z0);
                let (xa, ya, za, xb, yb, zb) = (x0 as i64, y0 as i64, z0 as i64, x1 as i64, y1 as i64, z1 as i64);
                let mut acc = 0.0f64;
                for (w, z, y, x) in [
                    (tnw, za, ya, xa),
                    (tne, za, ya, xb),
                    (tsw, za, yb, xa),
                    (tse, za, yb, xb),
                    (bnw, zb, ya, xa),
                    (bne, zb, ya, xb),
                    (bsw, zb, yb, xa),
                    (bse, zb, yb, xb),
                ] {
                    if let Some(v) = at(z, y, x) {
                        acc += v * w;
                    }
                }
                out.push(acc as f32);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of `torch.linspace(-1, 1, n, dtype=torch.float64)` (PyTorch 2.9.1, CPU) at
    /// indices where the fused and unfused formulas differ.
    #[test]
    fn linspace_matches_pytorch_bits() {
        let l = torch_linspace(320);
        assert_eq!(l[5].to_bits(), (-0.9686520376175548f64).to_bits());
        assert_eq!(l[29].to_bits(), (-0.8181818181818182f64).to_bits());
        assert_eq!(l[156].to_bits(), (-0.021943573667711637f64).to_bits());
        assert_eq!(l[160].to_bits(), (0.003134796238244553f64).to_bits());
        assert_eq!(l[300].to_bits(), (0.8808777429467085f64).to_bits());
        assert_eq!((l[0], l[319]), (-1.0, 1.0));
    }

    #[test]
    fn orientation_of_permuted_flipped_axes() {
        // voxel axis 0 runs posterior->anterior (-y), 1 runs superior (+z), 2 runs right (-x)
        let a: Affine = [[0.0, 0.0, -2.0, 5.0], [-1.0, 0.0, 0.0, 6.0], [0.0, 3.0, 0.0, 7.0], [0.0, 0.0, 0.0, 1.0]];
        let r = orient_to_lps([4, 5, 6], &a).unwrap();
        assert_eq!(r.perm, [2, 0, 1]);
        assert_eq!(r.flip, [true, true, false]);
        assert_eq!(r.out_dims(), [6, 4, 5]);
        let oa = r.out_affine(&a);
        // every output axis now points along +x, +y, +z
        assert_eq!([oa[0][0], oa[1][1], oa[2][2]], [2.0, 1.0, 3.0]);
        // the world position of output voxel (0, 0, 0) is input voxel (3, 0, 5)
        assert_eq!([oa[0][3], oa[1][3], oa[2][3]], [5.0 - 10.0, 6.0 - 3.0, 7.0]);
        let data: Vec<u32> = (0..120).collect();
        let o = r.apply(&data);
        assert_eq!(o[0], (3 * 5) * 6 + 5);
        assert_eq!(r.invert(&o), data);
    }

    /// Axis-aligned input: a corner is the minimum and the output starts at it.
    #[test]
    fn shape_offset_corner_case() {
        let a: Affine = [[0.5, 0.0, 0.0, -10.0], [0.0, 0.5, 0.0, 4.0], [0.0, 0.0, 3.0, 2.0], [0.0, 0.0, 0.0, 1.0]];
        let p = plan_spacing([11, 9, 5], &a, [1.0, 1.0, 7.0]).unwrap();
        // extents 5, 4, 12 mm -> 6, 5, round(12/7 + 1) = 3
        assert_eq!(p.out_dims, [6, 5, 3]);
        assert_eq!([p.out_affine[0][3], p.out_affine[1][3], p.out_affine[2][3]], [-10.0, 4.0, 2.0]);
        assert_eq!([p.out_affine[0][0], p.out_affine[1][1], p.out_affine[2][2]], [1.0, 1.0, 7.0]);
        assert!(p.resampled);
    }

    #[test]
    fn spacing_already_at_target_is_passed_through() {
        let a: Affine = [[1.0, 0.0, 0.0, 3.0], [0.0, 1.0002, 0.0, 0.0], [0.0, 0.0, 7.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
        let p = plan_spacing([10, 10, 4], &a, [1.0, 1.0, 7.0]).unwrap();
        assert!(!p.resampled);
        assert_eq!(p.out_affine, a);
        assert_eq!(p.out_dims, [10, 10, 4]);
    }

    /// Identity-like resampling reproduces the data (nearest and linear).
    #[test]
    fn resampling_on_the_same_grid_is_the_identity() {
        let dims = [4, 3, 5];
        let src: Vec<f32> = (0..60).map(|v| v as f32 * 0.5).collect();
        let mut xf = IDENTITY;
        xf[0][3] = 1e-12; // not exactly the identity: exercise the grid
        let g = SourceGrid::new(&xf, dims, dims).unwrap();
        assert_eq!(sample_nearest(&src, &g), src);
        let lin = sample_linear(&src, &g);
        for (a, b) in lin.iter().zip(&src) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    /// A half-voxel shift samples midpoints; beyond the edge the border value is repeated.
    #[test]
    fn linear_midpoints_and_border() {
        let src: Vec<f32> = vec![0.0, 10.0, 20.0, 30.0]; // dims [4, 1, 1]
        let mut xf = IDENTITY;
        xf[0][3] = 0.5;
        let g = SourceGrid::new(&xf, [4, 1, 1], [4, 1, 1]).unwrap();
        let out = sample_linear(&src, &g);
        for (a, b) in out.iter().zip([5.0, 15.0, 25.0, 30.0]) {
            assert!((a - b).abs() < 1e-9, "{out:?}");
        }
    }
}
