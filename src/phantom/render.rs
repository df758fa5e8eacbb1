//! Rasterises a [`Scene`] onto the oblique image grid with partial-volume anti-aliasing.
//!
//! Each layer's distance is evaluated once per voxel centre (on the layer's box only), on the
//! slice planes and one plane beyond each side. A voxel's coverage is then the average over
//! its slice profile (`k ± half_thickness`) of an in-plane ramp: in-plane, a box-shaped pixel
//! sees an edge as a linear ramp whose width is the projection of the pixel onto the edge
//! normal, which is `|dd/di| + |dd/dj|` measured from the neighbouring centres; across the
//! slice, the distance is taken as piecewise linear between the planes and the ramp is
//! integrated exactly along it. This is exact for planar edges at any angle, handles
//! structures thinner than a slice (a 2 mm plate in a 4 mm slice covers half of it), costs one
//! evaluation per voxel, and does not depend on the distance being exactly Euclidean. Layers are
//! composited front over back with their coverage as alpha.
//!
//! The lesion set is drawn last; its sharp (un-blurred) coverage thresholded at 0.5 is the
//! ground-truth mask, with each voxel attributed to the nearest lesion.

use super::scene::Scene;
use super::sdf::{Aabb, V3};
use rayon::prelude::*;

/// Layers are evaluated on their bounds grown by this much (mm), wider than any ramp, band
/// offset or blurred margin, so that coverage outside the box is zero.
const MARGIN: f32 = 8.0;

/// Blocks of this many voxels a side are evaluated voxel by voxel (see `PlaneFill`).
const BLOCK: usize = 4;
const _: () = assert!(BLOCK >= 2 && BLOCK.is_power_of_two() && (TOP as usize).is_multiple_of(BLOCK));

/// Half the widest in-plane ramp (0.64 mm at 0.9 mm pixels for a distance of slope 1), with
/// room for steeper approximate distances and the error of interpolated neighbours. With this
/// margin (and the slope allowance of 1.5 below) the interpolation changes no voxel of the test
/// cases at all (`phantom::tests`); 1.2 and 1.3 would save a fifth of the evaluations at
/// differences of about 1e-3.
const RAMP: f32 = 2.0;

/// Largest second difference (mm) along the rows and columns of a leaf block's lattice of
/// every second voxel for which the block is interpolated from that lattice anywhere (see
/// `PlaneFill::lattice_ok`).
const FLAT: f32 = 0.2;

/// Largest second difference for which a leaf block far from its bands' edges is still
/// interpolated (see `PlaneFill::lattice_ok`).
const CREASE: f32 = 2.0;

/// Largest block (voxels a side) filled from its 3 x 3 lattice when that is flat enough.
const COARSE_MAX: i64 = 16;

/// The image grid in the pelvis frame: voxel `(i, j, k)` sits at `m * (i, j, k) + t`.
#[derive(Clone, Debug)]
pub struct Grid {
    pub dims: [usize; 3],
    pub m: [[f32; 3]; 3],
    pub t: V3,
    /// Half the slice thickness in units of the slice spacing (0.5 without a gap).
    pub half_thickness: f32,
}

impl Grid {
    #[inline]
    pub fn pos(&self, i: f32, j: f32, k: f32) -> V3 {
        let m = &self.m;
        [
            m[0][0] * i + m[0][1] * j + m[0][2] * k + self.t[0],
            m[1][0] * i + m[1][1] * j + m[1][2] * k + self.t[1],
            m[2][0] * i + m[2][1] * j + m[2][2] * k + self.t[2],
        ]
    }

    /// The grid that starts at voxel `shift` of this one, with `dims` voxels (a part of it, or
    /// a strip beyond the field of view for wrap-around).
    pub fn shifted(&self, shift: [f32; 3], dims: [usize; 3]) -> Grid {
        let t = self.pos(shift[0], shift[1], shift[2]);
        Grid { dims, m: self.m, t, half_thickness: self.half_thickness }
    }

    fn inverse(&self) -> [[f64; 3]; 3] {
        let a = self.m.map(|r| r.map(|v| v as f64));
        let det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
        let c = |r0: usize, c0: usize, r1: usize, c1: usize| a[r0][c0] * a[r1][c1] - a[r0][c1] * a[r1][c0];
        [
            [c(1, 1, 2, 2) / det, -c(0, 1, 2, 2) / det, c(0, 1, 1, 2) / det],
            [-c(1, 0, 2, 2) / det, c(0, 0, 2, 2) / det, -c(0, 0, 1, 2) / det],
            [c(1, 0, 2, 1) / det, -c(0, 0, 2, 1) / det, c(0, 0, 1, 1) / det],
        ]
    }

    /// Continuous voxel coordinates of a pelvis-frame point.
    pub fn to_index(&self, p: V3) -> [f64; 3] {
        let inv = self.inverse();
        let d = [0, 1, 2].map(|r| (p[r] - self.t[r]) as f64);
        [0, 1, 2].map(|r| inv[r][0] * d[0] + inv[r][1] * d[1] + inv[r][2] * d[2])
    }

    /// The pelvis-frame box of the whole grid (one voxel beyond each face).
    pub fn local_box(&self) -> Aabb {
        let [n0, n1, n2] = self.dims.map(|n| n as f32);
        let mut lo = [f32::MAX; 3];
        let mut hi = [f32::MIN; 3];
        for i in [-1.0, n0] {
            for j in [-1.0, n1] {
                for k in [-1.0, n2] {
                    let p = self.pos(i, j, k);
                    for a in 0..3 {
                        lo[a] = lo[a].min(p[a]);
                        hi[a] = hi[a].max(p[a]);
                    }
                }
            }
        }
        Aabb::new(lo, hi)
    }

    /// The voxel index box (inclusive) that holds `b`, clipped to the grid; `None` if empty.
    pub fn index_box(&self, b: &Aabb) -> Option<[[usize; 2]; 3]> {
        if b.is_empty() {
            return None;
        }
        let inv = self.inverse();
        let mut lo = [f64::MAX; 3];
        let mut hi = [f64::MIN; 3];
        for c in b.corners() {
            let d = [0, 1, 2].map(|r| (c[r] - self.t[r]) as f64);
            for r in 0..3 {
                let v = inv[r][0] * d[0] + inv[r][1] * d[1] + inv[r][2] * d[2];
                lo[r] = lo[r].min(v);
                hi[r] = hi[r].max(v);
            }
        }
        let mut out = [[0usize; 2]; 3];
        for r in 0..3 {
            let a = lo[r].floor().max(0.0);
            let z = hi[r].ceil().min(self.dims[r] as f64 - 1.0);
            if a > z {
                return None;
            }
            out[r] = [a as usize, z as usize];
        }
        Some(out)
    }
}

/// Antiderivative of the ramp `clamp(0.5 - x / w, 0, 1)`.
#[inline]
fn ramp_integral(x: f32, w: f32) -> f32 {
    let h = 0.5 * w;
    if x <= -h {
        x
    } else if x >= h {
        0.0
    } else {
        0.5 * x - x * x / (2.0 * w) - w * 0.125
    }
}

/// Mean of the ramp over a segment along which the distance goes linearly from `u` to `v`.
#[inline]
fn ramp_mean(u: f32, v: f32, w: f32) -> f32 {
    if (v - u).abs() < 1e-4 {
        let x = 0.5 * (u + v);
        return (0.5 - x / w).clamp(0.0, 1.0);
    }
    ((ramp_integral(v, w) - ramp_integral(u, w)) / (v - u)).clamp(0.0, 1.0)
}

/// Coverage of a voxel from the distances on the previous, own and next slice planes, the
/// in-plane ramp width `w` and the half thickness `a` (in slice spacings).
#[inline]
pub fn coverage(dm: f32, d0: f32, dp: f32, w: f32, a: f32) -> f32 {
    let w = w.max(1e-4);
    let lo = d0 + (dm - d0) * a;
    let hi = d0 + (dp - d0) * a;
    let h = 0.5 * w;
    if d0 >= h && lo >= h && hi >= h {
        return 0.0;
    }
    if d0 <= -h && lo <= -h && hi <= -h {
        return 1.0;
    }
    0.5 * (ramp_mean(lo, d0, w) + ramp_mean(d0, hi, w))
}

/// The rendered slices: intensities and, per voxel, `1 + index` of the lesion that covers at
/// least half of it (0 elsewhere). Both are slice-major, `i`-major within a slice.
pub struct Rendered {
    pub image: Vec<f32>,
    pub label: Vec<u16>,
}

/// Renders the whole grid (chunks of slices in parallel; the result does not depend on the
/// chunking or the thread count).
pub fn render(scene: &Scene, grid: &Grid) -> Rendered {
    render_with(scene, grid, true)
}

/// [`render`], with the shortcuts (`cull`: far blocks interpolated, flat leaf blocks
/// interpolated from every second voxel) or with every needed value evaluated exactly (the
/// reference the shortcuts are checked against).
pub fn render_with(scene: &Scene, grid: &Grid, cull: bool) -> Rendered {
    let [n0, n1, n2] = grid.dims;
    let plane = n0 * n1;
    // Each chunk evaluates two planes beyond its slices: larger chunks waste less, smaller
    // ones spread over more threads (the result is the same either way).
    let chunk = n2.div_ceil(rayon::current_num_threads()).clamp(2, 32);
    let chunks: Vec<(usize, usize)> = (0..n2.div_ceil(chunk)).map(|c| (c * chunk, ((c + 1) * chunk).min(n2))).collect();
    let parts: Vec<(Vec<f32>, Vec<u16>)> =
        chunks.par_iter().map(|&(k0, k1)| render_chunk(scene, grid, k0, k1, cull)).collect();
    let mut image = Vec::with_capacity(plane * n2);
    let mut label = Vec::with_capacity(plane * n2);
    for (im, lb) in parts {
        image.extend_from_slice(&im);
        label.extend_from_slice(&lb);
    }
    Rendered { image, label }
}

/// A box of distance samples: planes `k0 - 1 ..= k1 + 1`, rows `i0 - 1 ..= i1 + 1`, columns
/// `j0 - 1 ..= j1 + 1`.
struct Samples {
    k0: usize,
    i0: usize,
    j0: usize,
    ni: usize,
    nj: usize,
    d: Vec<f32>,
    /// Per plane, the `BLOCK`-aligned blocks found to lie wholly outside the shape by more than
    /// the layer's reach (nothing of the layer shows there): `[plane][bi][bj]`, blocks counted
    /// from `blo`.
    outside: Vec<bool>,
    blo: [i64; 2],
    nb: [usize; 2],
}

impl Samples {
    /// Whether voxels `(i, j)` of block `(bi, bj)` lie outside the shape on plane `k` and both
    /// neighbouring planes.
    #[inline]
    fn block_outside(&self, bi: i64, bj: i64, k: usize) -> bool {
        let (a, b) = ((bi - self.blo[0]) as usize, (bj - self.blo[1]) as usize);
        let per = self.nb[0] * self.nb[1];
        let kk = k + 1 - self.k0;
        let at = |p: usize| self.outside[p * per + a * self.nb[1] + b];
        at(kk - 1) && at(kk) && at(kk + 1)
    }
}

/// Evaluation of one plane of a box by recursive subdivision of blocks aligned to the grid
/// (so that every value depends only on the voxel's position, not on the box or the chunk: the
/// result is the same on any number of threads). A block whose corners all lie farther from
/// the surface than `base + 0.75 * diagonal` (on the same side) is filled by bilinear
/// interpolation, because every voxel in it is then more than `base` from the surface
/// (allowing the approximate distances a slope of 1.5) and its coverage saturates at 0 or 1
/// whatever the exact value. Blocks of `BLOCK` voxels a side are evaluated per voxel.
struct PlaneFill<'a, F: FnMut(V3) -> f32> {
    grid: &'a Grid,
    f: &'a mut F,
    plane: &'a mut [f32],
    /// This plane's part of [`Samples::outside`].
    outside: &'a mut [bool],
    blo: [i64; 2],
    nb: [usize; 2],
    /// Which voxels will read this plane's values: see [`Visible`].
    vis: Option<Visible<'a>>,
    /// Absolute index range held by `plane` (inclusive), rows `i`, columns `j`.
    lo: [i64; 2],
    hi: [i64; 2],
    nj: usize,
    k: f32,
    base: f32,
    px: [f32; 2],
    /// Evaluate leaf blocks on a lattice of every second voxel and interpolate where that
    /// is safe (see [`PlaneFill::lattice_ok`]): the layer's band offsets, or `None` to
    /// evaluate leaf blocks per voxel.
    coarse: Option<&'a [f32]>,
}

impl<F: FnMut(V3) -> f32> PlaneFill<'_, F> {
    #[inline]
    fn eval(&mut self, i: i64, j: i64) -> f32 {
        (self.f)(self.grid.pos(i as f32, j as f32, self.k))
    }

    /// Whether a block may be filled bilinearly from the 3 x 3 lattice `l` of its corners,
    /// edge midpoints and centre: either every second difference along the lattice's rows and
    /// columns is below [`FLAT`] (no crease, thin plate or tight curve inside: interpolation
    /// then errs by at most that much at a crease, by about an eighth of it on a smooth
    /// curve), or the differences are moderate and every lattice value lies beyond each band's
    /// edge (`offsets`) by more than the widest in-plane ramp plus that error (the crease lies
    /// deep inside or far outside, where the in-plane coverage saturates either way).
    #[inline]
    fn lattice_ok(&self, l: &[[f32; 3]; 3], offsets: &[f32]) -> bool {
        let sd = |a: f32, b: f32, c: f32| (a - 2.0 * b + c).abs();
        let mut worst = 0.0f32;
        for n in 0..3 {
            worst = worst.max(sd(l[n][0], l[n][1], l[n][2])).max(sd(l[0][n], l[1][n], l[2][n]));
        }
        if worst <= FLAT {
            return true;
        }
        if worst > CREASE {
            return false;
        }
        // Half the widest in-plane ramp for distances of slope up to 1.5.
        let h = 0.75 * (self.px[0] * self.px[0] + self.px[1] * self.px[1]).sqrt() + worst;
        offsets.iter().all(|&o| l.iter().flatten().all(|&v| v + o > h) || l.iter().flatten().all(|&v| v + o < -h))
    }

    /// Fills the voxels of block `[ia, ib) x [ja, jb)` in rows and columns `r` bilinearly
    /// from its 3 x 3 lattice `l`.
    #[inline]
    fn fill_lattice(&mut self, ia: i64, ib: i64, ja: i64, l: &[[f32; 3]; 3], r: [i64; 4]) {
        let half = (ib - ia) / 2;
        let inv = 1.0 / half as f32;
        let [r0, r1, s0, s1] = r;
        for i in r0..=r1 {
            let (a, u) = (((i - ia) / half) as usize, ((i - ia) % half) as f32 * inv);
            let row = (i - self.lo[0]) as usize * self.nj;
            for j in s0..=s1 {
                let (b, v) = (((j - ja) / half) as usize, ((j - ja) % half) as f32 * inv);
                let top = l[a][b] + (l[a][b + 1] - l[a][b]) * v;
                let bot = l[a + 1][b] + (l[a + 1][b + 1] - l[a + 1][b]) * v;
                self.plane[row + (j - self.lo[1]) as usize] = top + (bot - top) * u;
            }
        }
    }

    /// Fills the voxels of block `[ia, ib) x [ja, jb)` that lie in the plane's range; `c` are
    /// the values at the corners `(ia, ja), (ia, jb), (ib, ja), (ib, jb)`.
    fn fill(&mut self, ia: i64, ib: i64, ja: i64, jb: i64, c: [f32; 4]) {
        let (r0, r1) = (ia.max(self.lo[0]), (ib - 1).min(self.hi[0]));
        let (s0, s1) = (ja.max(self.lo[1]), (jb - 1).min(self.hi[1]));
        if r0 > r1 || s0 > s1 {
            return;
        }
        let (di, dj) = ((ib - ia) as f32, (jb - ja) as f32);
        let diag = ((di * self.px[0]).powi(2) + (dj * self.px[1]).powi(2)).sqrt();
        let far = self.base + 0.75 * diag;
        let out = c.iter().all(|&v| v > far);
        if out || c.iter().all(|&v| v < -far) {
            if out {
                let bs = BLOCK as i64;
                for bi in ia.div_euclid(bs)..ib.div_euclid(bs) {
                    for bj in ja.div_euclid(bs)..jb.div_euclid(bs) {
                        let (a, b) = (bi - self.blo[0], bj - self.blo[1]);
                        if a >= 0 && b >= 0 && (a as usize) < self.nb[0] && (b as usize) < self.nb[1] {
                            self.outside[a as usize * self.nb[1] + b as usize] = true;
                        }
                    }
                }
            }
            for i in r0..=r1 {
                let u = (i - ia) as f32 / di;
                let (l, r) = (c[0] + (c[2] - c[0]) * u, c[1] + (c[3] - c[1]) * u);
                let row = (i - self.lo[0]) as usize * self.nj;
                for j in s0..=s1 {
                    let v = (j - ja) as f32 / dj;
                    self.plane[row + (j - self.lo[1]) as usize] = l + (r - l) * v;
                }
            }
            return;
        }
        if ib - ia <= BLOCK as i64 {
            if let Some(v) = &self.vis {
                if !v.needed(ia, ja) {
                    return;
                }
            }
            let mut known = None;
            if let Some(offsets) = self.coarse {
                let (im, jm) = ((ia + ib) / 2, (ja + jb) / 2);
                let l = [
                    [c[0], self.eval(ia, jm), c[1]],
                    [self.eval(im, ja), self.eval(im, jm), self.eval(im, jb)],
                    [c[2], self.eval(ib, jm), c[3]],
                ];
                if self.lattice_ok(&l, offsets) {
                    self.fill_lattice(ia, ib, ja, &l, [r0, r1, s0, s1]);
                    return;
                }
                known = Some(l);
            }
            let step = [self.grid.m[0][1], self.grid.m[1][1], self.grid.m[2][1]];
            for i in r0..=r1 {
                let mut p = self.grid.pos(i as f32, s0 as f32, self.k);
                let row = (i - self.lo[0]) as usize * self.nj;
                for j in s0..=s1 {
                    // Lattice points already evaluated are not evaluated again.
                    let (a, b) = (i - ia, j - ja);
                    self.plane[row + (j - self.lo[1]) as usize] = match known {
                        Some(l) if a % 2 == 0 && b % 2 == 0 => l[a as usize / 2][b as usize / 2],
                        _ => (self.f)(p),
                    };
                    p = [p[0] + step[0], p[1] + step[1], p[2] + step[2]];
                }
            }
            return;
        }
        let (im, jm) = ((ia + ib) / 2, (ja + jb) / 2);
        let e_top = self.eval(ia, jm);
        let e_left = self.eval(im, ja);
        let mid = self.eval(im, jm);
        let e_right = self.eval(im, jb);
        let e_bot = self.eval(ib, jm);
        if let Some(offsets) = self.coarse {
            let l = [[c[0], e_top, c[1]], [e_left, mid, e_right], [c[2], e_bot, c[3]]];
            if ib - ia <= COARSE_MAX && self.lattice_ok(&l, offsets) {
                self.fill_lattice(ia, ib, ja, &l, [r0, r1, s0, s1]);
                return;
            }
        }
        self.fill(ia, im, ja, jm, [c[0], e_top, e_left, mid]);
        self.fill(ia, im, jm, jb, [e_top, c[1], mid, e_right]);
        self.fill(im, ib, ja, jm, [e_left, mid, c[2], e_bot]);
        self.fill(im, ib, jm, jb, [mid, e_right, e_bot, c[3]]);
    }
}

/// Which of a chunk's `BLOCK`-aligned blocks are finished (every voxel opaque after the
/// layers in front): a plane's values in a block are needed only where that block or one of
/// its in-plane neighbours (whose voxels read it as a neighbour) is open on that plane, or the
/// block is open on the next planes. Planes outside the chunk are only read as neighbours.
#[derive(Clone, Copy)]
struct Visible<'a> {
    done: &'a [bool],
    /// The chunk's first slice and slice count, blocks per plane along `i` and `j`.
    k0: usize,
    nk: usize,
    nb: [usize; 2],
    /// The grid plane this fill is for.
    k: i64,
}

impl Visible<'_> {
    #[inline]
    fn open(&self, bi: i64, bj: i64, k: i64) -> bool {
        if k < self.k0 as i64 || k >= (self.k0 + self.nk) as i64 || bi < 0 || bj < 0 {
            return false;
        }
        let (bi, bj) = (bi as usize, bj as usize);
        if bi >= self.nb[0] || bj >= self.nb[1] {
            return false;
        }
        !self.done[((k as usize - self.k0) * self.nb[0] + bi) * self.nb[1] + bj]
    }

    /// Whether any value of the aligned block whose first voxel is `(ia, ja)` will be read.
    #[inline]
    fn needed(&self, ia: i64, ja: i64) -> bool {
        let (bi, bj) = (ia.div_euclid(BLOCK as i64), ja.div_euclid(BLOCK as i64));
        if self.open(bi, bj, self.k - 1) || self.open(bi, bj, self.k + 1) {
            return true;
        }
        for a in bi - 1..=bi + 1 {
            for b in bj - 1..=bj + 1 {
                if self.open(a, b, self.k) {
                    return true;
                }
            }
        }
        false
    }
}

/// Side of the top-level aligned blocks (a power of two times `BLOCK`).
const TOP: i64 = 64;

impl Samples {
    /// Evaluates `f` on the box (planes `k0-1 ..= k1+1`, one voxel beyond in `i` and `j`).
    /// `base` is how far from the surface (mm) the layer's coverage is known to saturate: its
    /// largest band offset plus half the widest ramp.
    #[inline(never)]
    fn eval(
        grid: &Grid,
        b: [[usize; 2]; 3],
        base: f32,
        vis: Option<Visible>,
        coarse: Option<&[f32]>,
        mut d: Vec<f32>,
        mut f: impl FnMut(V3) -> f32,
    ) -> Samples {
        let (k0, k1) = (b[2][0], b[2][1]);
        let (i0, i1) = (b[0][0], b[0][1]);
        let (j0, j1) = (b[1][0], b[1][1]);
        let (ni, nj, nk) = (i1 - i0 + 3, j1 - j0 + 3, k1 - k0 + 3);
        // `d` is a previous layer's buffer: every value that will be read is written below
        // (leaf blocks skipped as not visible are never read), so it is not cleared.
        let n = ni * nj * nk;
        if d.len() < n {
            d.resize(n, 0.0);
        }
        d.truncate(n);
        let bs = BLOCK as i64;
        let blo = [(i0 as i64 - 1).div_euclid(bs), (j0 as i64 - 1).div_euclid(bs)];
        let nb = [
            ((i1 as i64 + 1).div_euclid(bs) - blo[0] + 1) as usize,
            ((j1 as i64 + 1).div_euclid(bs) - blo[1] + 1) as usize,
        ];
        let mut outside = vec![false; nb[0] * nb[1] * nk];
        let col = |c: usize| (grid.m[0][c].powi(2) + grid.m[1][c].powi(2) + grid.m[2][c].powi(2)).sqrt();
        let px = [col(0), col(1)];
        let lo = [i0 as i64 - 1, j0 as i64 - 1];
        let hi = [i1 as i64 + 1, j1 as i64 + 1];
        for (kk, (plane, outside)) in d.chunks_mut(ni * nj).zip(outside.chunks_mut(nb[0] * nb[1])).enumerate() {
            let k = (k0 + kk) as f32 - 1.0;
            let vis = vis.map(|v| Visible { k: k as i64, ..v });
            let mut pf = PlaneFill { grid, f: &mut f, plane, outside, blo, nb, vis, lo, hi, nj, k, base, px, coarse };
            for bi in lo[0].div_euclid(TOP)..=hi[0].div_euclid(TOP) {
                for bj in lo[1].div_euclid(TOP)..=hi[1].div_euclid(TOP) {
                    let (ia, ja) = (bi * TOP, bj * TOP);
                    let (ib, jb) = (ia + TOP, ja + TOP);
                    let c = [pf.eval(ia, ja), pf.eval(ia, jb), pf.eval(ib, ja), pf.eval(ib, jb)];
                    pf.fill(ia, ib, ja, jb, c);
                }
            }
        }
        Samples { k0, i0, j0, ni, nj, d, outside, blo, nb }
    }

    /// Index of voxel `(i, j, k)` (grid indices inside the box).
    #[inline]
    fn at(&self, i: usize, j: usize, k: usize) -> usize {
        ((k + 1 - self.k0) * self.ni + (i + 1 - self.i0)) * self.nj + (j + 1 - self.j0)
    }
}

struct Local {
    dm: f32,
    d0: f32,
    dp: f32,
    w: f32,
}

#[inline]
fn local(s: &Samples, i: usize, j: usize, k: usize) -> Local {
    let c = s.at(i, j, k);
    let pk = s.ni * s.nj;
    let gi = 0.5 * (s.d[c + s.nj] - s.d[c - s.nj]);
    let gj = 0.5 * (s.d[c + 1] - s.d[c - 1]);
    Local { dm: s.d[c - pk], d0: s.d[c], dp: s.d[c + pk], w: gi.abs() + gj.abs() }
}

/// Voxels whose remaining transmittance is below this are finished.
const OPAQUE: f32 = 1e-3;

/// Renders slices `k0..k1`. Layers are composited front to back (the lesions first, then the
/// layers in reverse order), keeping each voxel's remaining transmittance, so nothing is
/// evaluated or shaded under voxels already covered; the result equals painting back to front.
#[inline(never)]
fn render_chunk(scene: &Scene, grid: &Grid, k0: usize, k1: usize, cull: bool) -> (Vec<f32>, Vec<u16>) {
    let slack = if cull { 0.0 } else { f32::INFINITY };
    let [n0, n1, _] = grid.dims;
    let plane = n0 * n1;
    let nk = k1 - k0;
    // Per voxel: the intensity so far and the transmittance left (together: one stream).
    let mut px = vec![[0.0f32, 1.0]; nk * plane];
    let mut buf = Vec::new();
    let mut lab = vec![0u16; nk * plane];
    // Per plane, the aligned blocks whose voxels are all opaque (see `Visible`).
    let nbk = [n0.div_ceil(BLOCK), n1.div_ceil(BLOCK)];
    let mut done = vec![false; nk * nbk[0] * nbk[1]];
    let a = grid.half_thickness;
    // This chunk's planes (and one beyond each side) in the pelvis frame: layer boxes are cut
    // to it before they are projected onto the grid.
    let slab = grid.shifted([0.0, 0.0, k0 as f32], [n0, n1, nk]).local_box();
    let clip = |b: [[usize; 2]; 3]| -> Option<[[usize; 2]; 3]> {
        let lo = b[2][0].max(k0);
        let hi = b[2][1].min(k1 - 1);
        (lo <= hi).then_some([b[0], b[1], [lo, hi]])
    };

    let fm = &scene.fm;
    if let Some(b) = fm.bounds().and_then(|bb| grid.index_box(&bb.grow(MARGIN).intersect(&slab))).and_then(clip) {
        let blur_max = fm.lesions.iter().map(|l| l.blur).fold(0.0, f32::max);
        let reach = RAMP + 0.5 * blur_max;
        // The lesions (small, and the mask comes from them) are always evaluated per voxel.
        let s = Samples::eval(grid, b, reach + slack, None, None, Vec::new(), |p| fm.dist_id(p).0);
        for k in b[2][0]..=b[2][1] {
            for i in b[0][0]..=b[0][1] {
                let row = (k - k0) * plane + i * n1;
                for j in b[1][0]..=b[1][1] {
                    let l = local(&s, i, j, k);
                    if l.d0.min(l.dm).min(l.dp) > reach {
                        continue;
                    }
                    let (_, id) = fm.dist_id(grid.pos(i as f32, j as f32, k as f32));
                    if id == u16::MAX {
                        continue;
                    }
                    let lesion = &fm.lesions[id as usize];
                    let c = coverage(l.dm, l.d0, l.dp, l.w + lesion.blur, a);
                    if c > 0.0 {
                        let v = lesion.shade.at(grid.pos(i as f32, j as f32, k as f32));
                        px[row + j] = [px[row + j][0] + c * v, 1.0 - c];
                    }
                    if coverage(l.dm, l.d0, l.dp, l.w, a) >= 0.5 {
                        lab[row + j] = id + 1;
                    }
                }
            }
        }
    }

    for layer in scene.layers.iter().rev() {
        let Some(b) = grid.index_box(&layer.field.bounds().grow(MARGIN).intersect(&slab)).and_then(clip) else {
            continue;
        };
        #[cfg(test)]
        let t_layer = std::time::Instant::now();
        let base = layer.bands.iter().map(|b| b.offset).fold(0.0, f32::max) + RAMP;
        let offsets: Vec<f32> = layer.bands.iter().map(|b| b.offset).collect();
        let vis = Visible { done: &done, k0, nk, nb: nbk, k: 0 };
        #[cfg(test)]
        let mut n_eval = 0usize;
        let s = Samples::eval(
            grid,
            b,
            base + slack,
            Some(vis),
            cull.then_some(&offsets[..]),
            std::mem::take(&mut buf),
            |p| {
                #[cfg(test)]
                {
                    n_eval += 1;
                }
                layer.field.dist(p)
            },
        );
        #[cfg(test)]
        {
            prof::add("(eval)", t_layer.elapsed().as_secs_f64() * 1e3);
            prof::add("(kevals)", n_eval as f64 / 1e3);
            prof::add_evals(layer.name, n_eval as f64 / 1e3);
            prof::add("(kbox)", s.d.len() as f64 / 1e3);
        }
        let bs = BLOCK as i64;
        for k in b[2][0]..=b[2][1] {
            for bi in (b[0][0] as i64).div_euclid(bs)..=(b[0][1] as i64).div_euclid(bs) {
                for bj in (b[1][0] as i64).div_euclid(bs)..=(b[1][1] as i64).div_euclid(bs) {
                    let di = ((k - k0) * nbk[0] + bi as usize) * nbk[1] + bj as usize;
                    if done[di] || s.block_outside(bi, bj, k) {
                        continue;
                    }
                    let (i_lo, i_hi) =
                        ((bi * bs).max(b[0][0] as i64) as usize, ((bi + 1) * bs - 1).min(b[0][1] as i64) as usize);
                    let (j_lo, j_hi) =
                        ((bj * bs).max(b[1][0] as i64) as usize, ((bj + 1) * bs - 1).min(b[1][1] as i64) as usize);
                    for i in i_lo..=i_hi {
                        let row = (k - k0) * plane + i * n1;
                        for j in j_lo..=j_hi {
                            let [acc0, t] = px[row + j];
                            if t <= OPAQUE {
                                continue;
                            }
                            let c = s.at(i, j, k);
                            let pk = s.ni * s.nj;
                            if s.d[c].min(s.d[c - pk]).min(s.d[c + pk]) > RAMP {
                                continue;
                            }
                            let l = local(&s, i, j, k);
                            let mut t = t;
                            let mut add = 0.0;
                            for band in layer.bands.iter().rev() {
                                let o = band.offset;
                                let c = coverage(l.dm + o, l.d0 + o, l.dp + o, l.w, a);
                                if c <= 0.0 {
                                    continue;
                                }
                                add += t * c * band.shade.at(grid.pos(i as f32, j as f32, k as f32));
                                t *= 1.0 - c;
                                if t <= OPAQUE {
                                    break;
                                }
                            }
                            px[row + j] = [acc0 + add, t];
                        }
                    }
                    // The whole block (not only its part in this layer's box) finished?
                    let (bi, bj) = (bi as usize * BLOCK, bj as usize * BLOCK);
                    done[di] = (bi..(bi + BLOCK).min(n0)).all(|i| {
                        let row = (k - k0) * plane + i * n1;
                        px[row + bj..row + (bj + BLOCK).min(n1)].iter().all(|v| v[1] <= OPAQUE)
                    });
                }
            }
        }
        buf = s.d;
        #[cfg(test)]
        prof::add(layer.name, t_layer.elapsed().as_secs_f64() * 1e3);
    }
    (px.iter().map(|v| v[0]).collect(), lab)
}

/// Time per layer name in the real render, on this thread (development aid).
#[cfg(test)]
pub(crate) mod prof {
    use std::cell::RefCell;
    thread_local!(static T: RefCell<Option<Vec<(&'static str, f64)>>> = const { RefCell::new(None) });
    thread_local!(static E: RefCell<Vec<(&'static str, f64)>> = const { RefCell::new(Vec::new()) });
    pub fn add_evals(name: &'static str, n: f64) {
        E.with(|t| {
            let mut v = t.borrow_mut();
            match v.iter_mut().find(|e| e.0 == name) {
                Some(e) => e.1 += n,
                None => v.push((name, n)),
            }
        });
    }
    pub fn take_evals() -> Vec<(&'static str, f64)> {
        E.with(|t| std::mem::take(&mut *t.borrow_mut()))
    }
    pub fn start() {
        T.with(|t| *t.borrow_mut() = Some(Vec::new()));
    }
    pub fn add(name: &'static str, ms: f64) {
        T.with(|t| {
            if let Some(v) = t.borrow_mut().as_mut() {
                match v.iter_mut().find(|e| e.0 == name) {
                    Some(e) => e.1 += ms,
                    None => v.push((name, ms)),
                }
            }
        });
    }
    pub fn take() -> Vec<(&'static str, f64)> {
        T.with(|t| t.borrow_mut().take().unwrap_or_default())
    }
}

/// Per layer: name, voxels in its box, exact evaluations, milliseconds (development aid).
#[cfg(test)]
pub(crate) fn profile_layers(scene: &Scene, grid: &Grid) -> Vec<(&'static str, usize, usize, f64)> {
    let slab = grid.local_box();
    let mut out = Vec::new();
    for layer in &scene.layers {
        let Some(b) = grid.index_box(&layer.field.bounds().grow(MARGIN).intersect(&slab)) else { continue };
        let t = std::time::Instant::now();
        let mut n = 0usize;
        let base = layer.bands.iter().map(|b| b.offset).fold(0.0, f32::max) + RAMP;
        let s = Samples::eval(grid, b, base, None, Some(&[0.0]), Vec::new(), |p| {
            n += 1;
            layer.field.dist(p)
        });
        let ms = t.elapsed().as_secs_f64() * 1e3;
        out.push((layer.name, s.d.len(), n, ms));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(d: impl Fn(f32, f32) -> f32, w_i: f32, t: f32) -> f32 {
        // Voxel [-w_i/2, w_i/2] x [-t/2, t/2], fine sampling.
        let n = 400;
        let mut inside = 0;
        for a in 0..n {
            for b in 0..n {
                let x = ((a as f32 + 0.5) / n as f32 - 0.5) * w_i;
                let z = ((b as f32 + 0.5) / n as f32 - 0.5) * t;
                if d(x, z) < 0.0 {
                    inside += 1;
                }
            }
        }
        inside as f32 / (n * n) as f32
    }

    #[test]
    fn coverage_matches_brute_force_for_planar_edges() {
        // Voxel 0.8 mm in-plane, slices 4 mm apart, 4 mm thick; planar edge at angle th.
        for &th in &[0.0f32, 0.3, 0.8, 1.2, std::f32::consts::FRAC_PI_2] {
            for &off in &[-2.0f32, -0.7, -0.2, 0.0, 0.3, 1.1, 2.5] {
                let (s, c) = th.sin_cos();
                let d = |x: f32, z: f32| c * x + s * z - off;
                let (dx, dz) = (0.8, 4.0);
                let got = coverage(d(0.0, -dz), d(0.0, 0.0), d(0.0, dz), (c * dx).abs(), 0.5);
                let want = brute(d, dx, dz);
                assert!((got - want).abs() < 0.02, "th {th} off {off}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn coverage_of_a_thin_plate_is_its_thickness_fraction() {
        for &t in &[0.5f32, 1.0, 2.0, 3.0] {
            // A plate |z| < t/2 parallel to the slices (4 mm apart).
            let d = |z: f32| z.abs() - t / 2.0;
            let got = coverage(d(-4.0), d(0.0), d(4.0), 0.0, 0.5);
            assert!((got - t / 4.0).abs() < 1e-3, "t {t}: {got}");
        }
        // With a gap (3 mm thick slices 4 mm apart) a 1.5 mm plate covers half the slice.
        let d = |z: f32| z.abs() - 0.75;
        assert!((coverage(d(-4.0), d(0.0), d(4.0), 0.0, 0.375) - 0.5).abs() < 1e-3);
    }

    #[test]
    fn index_box_round_trips() {
        let g = Grid {
            dims: [100, 80, 20],
            m: [[0.7, 0.0, 0.0], [0.0, 0.68, -1.2], [0.0, 0.35, 3.8]],
            t: [-35.0, -20.0, -30.0],
            half_thickness: 0.5,
        };
        let p = g.pos(40.0, 30.0, 7.0);
        let ijk = g.to_index(p);
        assert!((ijk[0] - 40.0).abs() < 1e-3 && (ijk[1] - 30.0).abs() < 1e-3 && (ijk[2] - 7.0).abs() < 1e-3);
        let b = g.index_box(&Aabb::around(p, [1.0; 3])).unwrap();
        assert!(b[0][0] <= 40 && b[0][1] >= 40 && b[1][0] <= 30 && b[1][1] >= 30 && b[2][0] <= 7 && b[2][1] >= 7);
        assert!(g.index_box(&Aabb::around([1e4, 0.0, 0.0], [1.0; 3])).is_none());
    }
}
