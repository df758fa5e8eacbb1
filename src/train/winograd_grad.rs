//! Weight gradients of the in-plane 3x3 convolutions (`(3,3,1)` and `(3,3,3)` kernels) by
//! Winograd's F(m x m, 3x3), the forward's transform run backwards.
//!
//! The forward computes each m x m output tile as `Y = A^T [U (.) V] A` with `U = G g G^T` and
//! `V = B^T P B` (P the tile's (m+2)^2 input patch). `Y` is linear in `U`, so the gradient of
//! the loss with respect to `U` is `(A dY A^T) (.) V`, summed over tiles, and with respect to `g`
//! it is `G^T [sum over tiles of (A dY A^T) (.) V] G`. Per transformed point `e` that sum is one
//! matrix product `V_e^T Z_e` (rows = tiles x D, `cin` by `cout`), on the outer-product kernels
//! of the direct weight gradient: F(2x2) makes 16 products over a quarter of the rows instead of
//! 9 over all of them (2.25x fewer multiply-adds), F(4x4) 36 over a sixteenth (4x fewer). G is
//! applied once at the end, in float64.
//!
//! F(4x4) runs on planes of at least `F4_MIN_EDGE` a side (as the forward), F(2x2) on the small
//! ones. Its transforms carry larger factors (B^T's 4 and 5, A's 2, 4 and 8), which costs some
//! float32 accuracy (see the unit test), but a weight gradient's error stays in that gradient:
//! nothing downstream of it amplifies it, unlike the forward's.
//!
//! Along D the kernel is a plain correlation: as in the forward, each tile's rows carry a zero
//! row above and below when kd = 3, and a D tap is a row offset between `V` and `Z`.
//!
//! Work goes slab by slab (a run of tiles whose transforms fit [`SLAB_BYTES`]): the transforms
//! split over (row of the transformed tile, run of tiles), the products over (point, D tap).
//! Each (point, tap) owns its sums, float32 over about [`FLUSH_ROWS`] rows (a quarter of that
//! with F(4x4)) and then float64, added slab after slab in order: no per-thread copies of the
//! accumulators (16 x 3 x 256 x 256 floats on the widest layer), and the same bits on any
//! number of threads.

use std::ops::Range;

use rayon::prelude::*;

use super::grad_ops::{at_b_add, select_outer};
use crate::backend::cpu::winograd::{bt, F4_MIN_EDGE, G2, G4};
use crate::tensor::Dims;

/// The float32 sums go into float64 after at least this many rows: a quarter of the direct
/// gradient's `grad_ops::SUM_CHUNK_ROWS`, since the transformed terms are larger than the
/// entries they cancel down to (the flush costs one pass over the sums per slab or so).
const FLUSH_ROWS: usize = 512;

/// A slab's transformed input and output gradient (all 16 points) stay within this many bytes
/// (in L3 between the transforms and the products).
const SLAB_BYTES: usize = 4 << 20;

/// Whether the Winograd weight gradient covers a convolution: 3x3 in-plane (1 or 3 along D)
/// with at least a register tile of input channels, on planes where most tiles are whole.
pub fn handles(k: Dims, cin: usize, cout: usize, dims: Dims) -> bool {
    (k == [3, 3, 1] || k == [3, 3, 3]) && cin >= 6 && cout >= 8 && dims[0] >= 8 && dims[1] >= 8 && dims[2] >= 2
}

/// The weight gradient of one `(3,3,kd)` "same" convolution over a batch, sample by sample.
pub struct WeightGrad {
    dims: Dims,
    cin: usize,
    cout: usize,
    kd: usize,
    /// The output tile edge m: 2 or 4.
    m: usize,
    /// Per (point, tap): float32 sums since the last flush and float64 totals, `[e][tap][cin][cout]`.
    c: Vec<f32>,
    sum: Vec<f64>,
    /// Rows in `c` since the last flush.
    pending: usize,
    /// A slab's `V` (`[e][tile, d row][cin]`) and `Z = A dY A^T` (`[e][tile, d row][cout]`);
    /// each tile's pad rows are zero and stay so.
    v: Vec<f32>,
    z: Vec<f32>,
    /// Tiles per slab.
    slab: usize,
    /// What the transforms read outside the volume (one voxel's `D` vectors).
    zeros: Vec<f32>,
}

impl WeightGrad {
    pub fn new(dims: Dims, cin: usize, cout: usize, kd: usize) -> Self {
        let m = if dims[0] >= F4_MIN_EDGE && dims[1] >= F4_MIN_EDGE { 4 } else { 2 };
        Self::with(dims, cin, cout, kd, m, SLAB_BYTES)
    }

    /// With tile edge `m` and slabs of at most `slab_bytes` (the tests force both: each tile
    /// on every shape, small slabs to cross slab boundaries).
    fn with(dims: Dims, cin: usize, cout: usize, kd: usize, m: usize, slab_bytes: usize) -> Self {
        assert!(kd == 1 || kd == 3, "Winograd weight gradient for kd {kd}");
        assert!(m == 2 || m == 4, "Winograd weight gradient F({m}x{m}, 3x3)");
        let e = (m + 2) * (m + 2);
        let dr = dims[2] + 2 * (kd / 2);
        let tiles = dims[0].div_ceil(m) * dims[1].div_ceil(m);
        let slab = (slab_bytes / (e * dr * (cin + cout) * 4)).clamp(1, tiles);
        let len = e * kd * cin * cout;
        WeightGrad {
            dims,
            cin,
            cout,
            kd,
            m,
            c: vec![0f32; len],
            sum: vec![0f64; len],
            pending: 0,
            v: vec![0f32; e * slab * dr * cin],
            z: vec![0f32; e * slab * dr * cout],
            slab,
            zeros: vec![0f32; dims[2] * cin.max(cout)],
        }
    }

    /// Transformed points per tile, `(m + 2)^2`.
    fn points(&self) -> usize {
        (self.m + 2) * (self.m + 2)
    }

    fn tiles(&self) -> usize {
        self.dims[0].div_ceil(self.m) * self.dims[1].div_ceil(self.m)
    }

    fn dr(&self) -> usize {
        self.dims[2] + 2 * (self.kd / 2)
    }

    /// Adds one sample: `x` the input (`cin` channels) and `dy` the output gradient (`cout`),
    /// channels-last and unpadded.
    pub fn add_sample(&mut self, x: &[f32], dy: &[f32]) {
        let vox = self.dims[0] * self.dims[1] * self.dims[2];
        assert!(x.len() == vox * self.cin && dy.len() == vox * self.cout, "Winograd weight gradient: shapes");
        let tiles = self.tiles();
        let mut g0 = 0;
        while g0 < tiles {
            let nt = self.slab.min(tiles - g0);
            self.transform_slab(x, dy, g0, nt);
            self.multiply_slab(nt);
            g0 += nt;
        }
    }

    /// `V` and `Z` of tiles `g0 .. g0 + nt` (row-major over the tile grid), split over (row `xi`
    /// of the transformed tile, run of tiles): each part writes the `m + 2` planes of its row
    /// (all of a tile's points at once would write `2 (m + 2)^2` far-apart streams per tile).
    fn transform_slab(&mut self, x: &[f32], dy: &[f32], g0: usize, nt: usize) {
        let (dr, pd, e, a) = (self.dr(), self.kd / 2, self.points(), self.m + 2);
        let (cin, cout) = (self.cin, self.cout);
        let runs = (2 * rayon::current_num_threads()).div_ceil(a).clamp(1, nt);
        let bounds: Vec<usize> = (0..=runs).map(|k| nt * k / runs).collect();
        let mut vp = planes(&mut self.v, self.slab * dr * cin, e, &bounds, dr * cin);
        let mut zp = planes(&mut self.z, self.slab * dr * cout, e, &bounds, dr * cout);
        let mut items = Vec::with_capacity(a * runs);
        for xi in 0..a {
            for k in 0..runs {
                let v: Planes<'_> = (0..a).map(|nu| vp[xi * a + nu][k].take().unwrap()).collect();
                let z: Planes<'_> = (0..a).map(|nu| zp[xi * a + nu][k].take().unwrap()).collect();
                items.push((xi, bounds[k]..bounds[k + 1], v, z));
            }
        }
        let src = Sources { dims: self.dims, cin, cout, dr, pd, m: self.m, x, dy, zeros: &self.zeros };
        items.into_par_iter().for_each(|(xi, tiles, mut v, mut z)| src.transform(g0, tiles, xi, &mut v, &mut z));
    }

    /// The points x kd products of the slab's `nt` tiles, added into each (point, tap)'s sums.
    fn multiply_slab(&mut self, nt: usize) {
        let (cin, cout, kd, dr, pd) = (self.cin, self.cout, self.kd, self.dr(), self.kd / 2);
        let (vstride, zstride) = (self.slab * dr * cin, self.slab * dr * cout);
        // Z's rows pd .. nt * dr - pd against V's rows shifted by the D tap.
        let rows = nt * dr - 2 * pd;
        // F(4x4)'s terms are larger still (B^T's and A's factors up to 5 and 8): a quarter.
        let flush_rows = if self.m == 4 { FLUSH_ROWS / 4 } else { FLUSH_ROWS };
        let flush_now = self.pending + rows >= flush_rows;
        let outer = select_outer(cout);
        let (v, z) = (&self.v, &self.z);
        let plane = cin * cout;
        self.c.par_chunks_mut(plane).zip(self.sum.par_chunks_mut(plane)).enumerate().for_each(|(i, (ce, se))| {
            let (e, t) = (i / kd, i % kd);
            at_b_add(&v[e * vstride + t * cin..], cin, cin, &z[e * zstride + pd * cout..], cout, rows, ce, outer);
            if flush_now {
                flush(ce, se);
            }
        });
        self.pending = if flush_now { 0 } else { self.pending + rows };
    }

    /// Adds the gradient, `G^T M G` per (tap, ci, co) in float64, into `acc` laid out
    /// `[tap][cin][cout]` with tap `(r * 3 + col) * kd + c` (as `grad_ops::conv_weight_grad`).
    pub fn finish(mut self, acc: &mut [f32]) {
        let (kd, plane) = (self.kd, self.cin * self.cout);
        assert!(acc.len() == 9 * kd * plane, "Winograd weight gradient: accumulator of {}", acc.len());
        if self.pending > 0 {
            self.c.par_chunks_mut(plane).zip(self.sum.par_chunks_mut(plane)).for_each(|(ce, se)| flush(ce, se));
        }
        let sum = &self.sum;
        let g: &[[f64; 3]] = if self.m == 4 { &G4 } else { &G2 };
        let a = g.len();
        const Q: usize = 1024;
        let mut by_tap: Vec<&mut [f32]> = Vec::with_capacity(9 * kd);
        let mut rest = acc;
        for _ in 0..9 * kd {
            let (head, tail) = rest.split_at_mut(plane);
            by_tap.push(head);
            rest = tail;
        }
        // Work items: (D tap, run of Q (ci, co) entries); each writes its entries of all 9 taps.
        let mut items: Vec<(usize, usize, Vec<&mut [f32]>)> = Vec::new();
        let mut by_tap: Vec<std::slice::ChunksMut<'_, f32>> = by_tap.into_iter().map(|s| s.chunks_mut(Q)).collect();
        for t in 0..kd {
            for q0 in (0..plane).step_by(Q) {
                let outs = (0..9).map(|rc| by_tap[rc * kd + t].next().unwrap()).collect();
                items.push((t, q0, outs));
            }
        }
        items.into_par_iter().for_each(|(t, q0, mut outs)| {
            let n = outs[0].len();
            let m = |e: usize| &sum[(e * kd + t) * plane + q0..][..n];
            // (M G)[xi][col] then G^T of that, vectorised over the entries.
            let (mut mg, mut w) = (vec![0f64; 3 * a * n], vec![0f64; n]);
            for xi in 0..a {
                for col in 0..3 {
                    let dst = &mut mg[(xi * 3 + col) * n..][..n];
                    for (nu, gn) in g.iter().enumerate() {
                        if gn[col] != 0.0 {
                            for (d, &s) in dst.iter_mut().zip(m(xi * a + nu)) {
                                *d += gn[col] * s;
                            }
                        }
                    }
                }
            }
            for r in 0..3 {
                for col in 0..3 {
                    w.fill(0.0);
                    for (xi, gx) in g.iter().enumerate() {
                        if gx[r] != 0.0 {
                            for (d, &s) in w.iter_mut().zip(&mg[(xi * 3 + col) * n..][..n]) {
                                *d += gx[r] * s;
                            }
                        }
                    }
                    for (o, &w) in outs[r * 3 + col].iter_mut().zip(&w) {
                        *o = (*o as f64 + w) as f32;
                    }
                }
            }
        });
    }
}

/// One run of tiles' slices of every transformed point's plane, `[e]`.
type Planes<'a> = Vec<&'a mut [f32]>;

/// Splits each of the first `points` planes of `buf` (`stride` floats apart) at the tile
/// `bounds` (`unit` floats per tile): `[e][run]`, each `Some` until taken.
fn planes<'a>(
    buf: &'a mut [f32],
    stride: usize,
    points: usize,
    bounds: &[usize],
    unit: usize,
) -> Vec<Vec<Option<&'a mut [f32]>>> {
    buf.chunks_exact_mut(stride)
        .take(points)
        .map(|mut plane| {
            let mut runs = Vec::with_capacity(bounds.len() - 1);
            for w in bounds.windows(2) {
                let (head, tail) = std::mem::take(&mut plane).split_at_mut((w[1] - w[0]) * unit);
                runs.push(Some(head));
                plane = tail;
            }
            runs
        })
        .collect()
}

/// Adds the float32 sums into the float64 ones and clears them.
fn flush(c: &mut [f32], sum: &mut [f64]) {
    for (s, v) in sum.iter_mut().zip(c.iter_mut()) {
        *s += *v as f64;
        *v = 0.0;
    }
}

/// What the transforms read: the sample's input and output gradient, and zeros for the voxels
/// outside the volume (one voxel's `D` vectors).
struct Sources<'a> {
    dims: Dims,
    cin: usize,
    cout: usize,
    /// Rows per tile in the planes, and the first one a tile's voxels go to.
    dr: usize,
    pd: usize,
    /// The output tile edge.
    m: usize,
    x: &'a [f32],
    dy: &'a [f32],
    zeros: &'a [f32],
}

impl Sources<'_> {
    /// Row `xi` of the transforms of tiles `g0 + t` for `t` in `tiles`: `V[xi][nu]` into `v[nu]`
    /// and `Z[xi][nu]` into `z[nu]`, tile `t`'s `D` rows starting at row `(t - tiles.start) *
    /// dr + pd`.
    fn transform(&self, g0: usize, tiles: Range<usize>, xi: usize, v: &mut Planes<'_>, z: &mut Planes<'_>) {
        #[cfg(target_arch = "x86_64")]
        if crate::backend::cpu::conv::has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA (checked at run time).
            return unsafe { self.transform_avx2(g0, tiles, xi, v, z) };
        }
        self.transform_any(g0, tiles, xi, v, z)
    }

    /// [`Sources::transform`] compiled for AVX2 (the same arithmetic, 8 lanes at a time).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn transform_avx2(&self, g0: usize, tiles: Range<usize>, xi: usize, v: &mut Planes<'_>, z: &mut Planes<'_>) {
        self.transform_any(g0, tiles, xi, v, z)
    }

    #[inline(always)]
    fn transform_any(&self, g0: usize, tiles: Range<usize>, xi: usize, v: &mut Planes<'_>, z: &mut Planes<'_>) {
        match self.m {
            2 => self.transform_run::<2, 4>(g0, tiles, &BT2[xi], &AR2[xi], v, z),
            _ => self.transform_run::<4, 6>(g0, tiles, &BT4[xi], &AR4[xi], v, z),
        }
    }

    /// One row of the transforms: `bt_row` the row `xi` of `B^T` and `a_row` that of `A`.
    #[inline(always)]
    fn transform_run<const M: usize, const A: usize>(
        &self,
        g0: usize,
        tiles: Range<usize>,
        bt_row: &[f32; A],
        a_row: &[f32; M],
        v: &mut Planes<'_>,
        z: &mut Planes<'_>,
    ) {
        let Sources { dims, cin, cout, x, dy, zeros, .. } = *self;
        let d = dims[2];
        let (lin, lout) = (d * cin, d * cout);
        let tiles_w = dims[1].div_ceil(M);
        // Row xi of B^T P (A vectors) and of A dY (M vectors).
        let mut rv = vec![0f32; A * lin];
        let mut rz = vec![0f32; M * lout];
        // The voxels of (h - 1, w - 1) in a volume of `len` floats per voxel, or zeros outside.
        fn voxels<'a>(vol: &'a [f32], zeros: &'a [f32], dims: Dims, h: usize, w: usize, len: usize) -> &'a [f32] {
            match (h.checked_sub(1), w.checked_sub(1)) {
                (Some(h), Some(w)) if h < dims[0] && w < dims[1] => &vol[(h * dims[1] + w) * len..][..len],
                _ => &zeros[..len],
            }
        }
        let at = |vol, h, w, len| voxels(vol, zeros, dims, h, w, len);
        let t0 = tiles.start;
        for t in tiles {
            let (th, tw) = ((g0 + t) / tiles_w, (g0 + t) % tiles_w);
            let row = (t - t0) * self.dr + self.pd;
            // V[xi][nu] = B^T[nu] . (B^T[xi] . P) over the A x A input patch one voxel up and
            // left of the tile.
            for (j, r) in rv.chunks_exact_mut(lin).enumerate() {
                combine(r, bt_row, |i| at(x, M * th + i, M * tw + j, lin));
            }
            let r: [&[f32]; A] = std::array::from_fn(|j| &rv[j * lin..][..lin]);
            let mut outs = v.iter_mut();
            bt::<A>(r, std::array::from_fn(|_| &mut outs.next().unwrap()[row * cin..][..lin]));
            // Z[xi][nu] = A[nu] . (A[xi] . dY) over the M x M output-gradient tile.
            for (b, r) in rz.chunks_exact_mut(lout).enumerate() {
                combine(r, a_row, |a| at(dy, M * th + a + 1, M * tw + b + 1, lout));
            }
            let r: [&[f32]; M] = std::array::from_fn(|b| &rz[b * lout..][..lout]);
            let mut outs = z.iter_mut();
            a_expand::<M, A>(r, std::array::from_fn(|_| &mut outs.next().unwrap()[row * cout..][..lout]));
        }
    }
}

/// `dst = sum over k of coef[k] * src(k)`, the terms with a zero coefficient skipped, added in
/// order (every coefficient is a small integer, so `c * p` is exact but for B^T's 5).
#[inline(always)]
fn combine<'a, const N: usize>(dst: &mut [f32], coef: &[f32; N], src: impl Fn(usize) -> &'a [f32]) {
    let mut first = true;
    for (k, &c) in coef.iter().enumerate() {
        if c == 0.0 {
            continue;
        }
        let p = &src(k)[..dst.len()];
        if first {
            dst.iter_mut().zip(p).for_each(|(d, &p)| *d = c * p);
        } else {
            dst.iter_mut().zip(p).for_each(|(d, &p)| *d += c * p);
        }
        first = false;
    }
}

/// `B^T` of F(2x2, 3x3) and of F(4x4, 3x3) by rows, as `winograd::bt` applies them.
const BT2: [[f32; 4]; 4] = [[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, -1.0, 1.0, 0.0], [0.0, 1.0, 0.0, -1.0]];
const BT4: [[f32; 6]; 6] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];

/// `A` (the transpose of the forward's `A^T`) of F(2x2) and of F(4x4) by rows, as [`a_expand`]
/// applies them.
const AR2: [[f32; 2]; 4] = [[1.0, 0.0], [1.0, 1.0], [1.0, -1.0], [0.0, -1.0]];
const AR4: [[f32; 4]; 6] = [
    [1.0, 0.0, 0.0, 0.0],
    [1.0, 1.0, 1.0, 1.0],
    [1.0, -1.0, 1.0, -1.0],
    [1.0, 2.0, 4.0, 8.0],
    [1.0, -2.0, 4.0, -8.0],
    [0.0, 0.0, 0.0, 1.0],
];

/// One application of `A` (`A x M`, the transpose of the forward's `A^T`) to `M` equal-length
/// vectors, giving `A`. F(2x2): `A = [[1,0], [1,1], [1,-1], [0,-1]]`; F(4x4): `A = [[1,0,0,0],
/// [1,1,1,1], [1,-1,1,-1], [1,2,4,8], [1,-2,4,-8], [0,0,0,1]]`.
#[inline(always)]
fn a_expand<const M: usize, const A: usize>(q: [&[f32]; M], mut o: [&mut [f32]; A]) {
    let n = o[0].len();
    if M == 2 {
        let (q0, q1) = (&q[0][..n], &q[1][..n]);
        let [o0, o1, o2, o3, ..] = &mut o[..] else { unreachable!() };
        let (o0, o1, o2, o3) = (&mut o0[..n], &mut o1[..n], &mut o2[..n], &mut o3[..n]);
        for l in 0..n {
            o0[l] = q0[l];
            o1[l] = q0[l] + q1[l];
            o2[l] = q0[l] - q1[l];
            o3[l] = -q1[l];
        }
    } else {
        let (q0, q1, q2, q3) = (&q[0][..n], &q[1][..n], &q[2][..n], &q[3][..n]);
        let [o0, o1, o2, o3, o4, o5, ..] = &mut o[..] else { unreachable!() };
        let (o0, o1, o2) = (&mut o0[..n], &mut o1[..n], &mut o2[..n]);
        let (o3, o4, o5) = (&mut o3[..n], &mut o4[..n], &mut o5[..n]);
        for l in 0..n {
            let (e, f) = (q0[l] + 4.0 * q2[l], q1[l] + 4.0 * q3[l]);
            let (s, d) = (q0[l] + q2[l], q1[l] + q3[l]);
            o0[l] = q0[l];
            o1[l] = s + d;
            o2[l] = s - d;
            o3[l] = e + 2.0 * f;
            o4[l] = e - 2.0 * f;
            o5[l] = q3[l];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry against the float64 direct sum, on planes with partial tiles on both edges
    /// (odd H and W), channel counts that leave partial register tiles, kd 1 and 3, slabs of
    /// one tile to all of them, and a volume whose rows cross the float32 flush.
    #[test]
    fn winograd_weight_grad_matches_float64_direct_sum() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        for (case, m) in [
            ([9, 11, 5], 7, 9, 1, 3, SLAB_BYTES),
            ([8, 8, 4], 6, 33, 3, 2, 1),
            ([13, 10, 3], 16, 16, 3, 4, 7 * 16 * 5 * 32 * 4),
            ([10, 9, 2], 8, 8, 1, 1, 3 * 16 * 2 * 16 * 4),
            ([40, 38, 4], 8, 8, 3, 2, 50 * 16 * 6 * 16 * 4),
        ]
        .into_iter()
        .flat_map(|case| [2, 4].map(|m| (case, m)))
        {
            let (dims, cin, cout, kd, parts, slab_bytes) = case;
            let vox = dims[0] * dims[1] * dims[2];
            let x: Vec<f32> = (0..vox * cin).map(|_| next()).collect();
            let dy: Vec<f32> = (0..vox * cout).map(|_| next()).collect();
            let taps = 9 * kd;
            // Two samples (the same output gradient) so the sums run across samples; a nonzero
            // start, since the gradient is added to what `acc` holds; the same bits on 1 and
            // `parts` threads.
            let x2: Vec<f32> = (0..vox * cin).map(|_| next()).collect();
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    let mut acc = vec![0.25f32; taps * cin * cout];
                    let mut wg = WeightGrad::with(dims, cin, cout, kd, m, slab_bytes);
                    wg.add_sample(&x, &dy);
                    wg.add_sample(&x2, &dy);
                    wg.finish(&mut acc);
                    acc
                })
            };
            let acc = run(parts);
            assert!(acc.iter().zip(&run(1)).all(|(a, b)| a.to_bits() == b.to_bits()), "depends on threads");
            // The direct weight gradient on the same data, for scale.
            let pad = [1, 1, kd / 2];
            let plen = (dims[0] + 2) * (dims[1] + 2) * (dims[2] + 2 * pad[2]);
            let (mut xp, mut dyp) = (vec![0f32; plen * cin], vec![0f32; plen * cout]);
            crate::backend::cpu::conv::pad_input(&dy, dims, cout, pad, &mut dyp);
            let mut direct = vec![0.25f32; taps * cin * cout];
            for xs in [&x, &x2] {
                crate::backend::cpu::conv::pad_input(xs, dims, cin, pad, &mut xp);
                crate::train::grad_ops::conv_weight_grad(&xp, &dyp, dims, cin, cout, [3, 3, kd], parts, &mut direct);
            }
            let (pd, idx) = (kd as isize / 2, |h: usize, w: usize, d: usize| (h * dims[1] + w) * dims[2] + d);
            let (mut worst, mut worst_direct) = (0f64, 0f64);
            for r in 0..3 {
                for col in 0..3 {
                    for c in 0..kd {
                        for ci in 0..cin {
                            for co in 0..cout {
                                let mut want = 0f64;
                                for h in 0..dims[0] {
                                    for w in 0..dims[1] {
                                        for d in 0..dims[2] {
                                            let (hh, ww) = (h as isize + r as isize - 1, w as isize + col as isize - 1);
                                            let dd = d as isize + c as isize - pd;
                                            if hh < 0 || ww < 0 || dd < 0 {
                                                continue;
                                            }
                                            let (hh, ww, dd) = (hh as usize, ww as usize, dd as usize);
                                            if hh >= dims[0] || ww >= dims[1] || dd >= dims[2] {
                                                continue;
                                            }
                                            let i = idx(hh, ww, dd) * cin + ci;
                                            want += (x[i] as f64 + x2[i] as f64) * dy[idx(h, w, d) * cout + co] as f64;
                                        }
                                    }
                                }
                                let i = (((r * 3 + col) * kd + c) * cin + ci) * cout + co;
                                let err = |v: f32| (v as f64 - 0.25 - want).abs() / (1.0 + want.abs());
                                worst = worst.max(err(acc[i]));
                                worst_direct = worst_direct.max(err(direct[i]));
                            }
                        }
                    }
                }
            }
            // Measured: F(2x2) 2.9e-6 to 1.4e-5, 1.3x to 2.3x the direct gradient's error on
            // the same data (the transformed terms are up to 4x larger than the entries they sum
            // to); F(4x4) 1.1e-5 to 7.8e-5, 7x to 20x (up to about 100x larger terms). Either is
            // far inside the step's float32 noise (tests/ops/train_grad: 1.7e-3 median on the
            // sampled entries); a wrong transform is off by O(1).
            eprintln!("F({m}x{m}) {dims:?} {cin}->{cout} kd {kd}: worst {worst:.2e}, direct {worst_direct:.2e}");
            let (bound, ratio) = if m == 2 { (2e-5, 4.0) } else { (1.5e-4, 30.0) };
            assert!(
                worst < bound && worst < ratio * worst_direct,
                "F({m}x{m}) {dims:?} {cin}->{cout} kd {kd}: worst relative error {worst:e} (direct {worst_direct:e})"
            );
        }
    }
}
