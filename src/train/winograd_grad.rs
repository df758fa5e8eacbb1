//! Weight gradients of the in-plane 3x3 convolutions (`(3,3,1)` and `(3,3,3)` kernels) by
//! Winograd's F(2x2, 3x3), the forward's transform run backwards.
//!
//! The forward computes each 2x2 output tile as `Y = A^T [U (.) V] A` with `U = G g G^T` and
//! `V = B^T P B` (P the tile's 4x4 input patch). `Y` is linear in `U`, so the gradient of the
//! loss with respect to `U` is `(A dY A^T) (.) V`, summed over tiles, and with respect to `g` it
//! is `G^T [sum over tiles of (A dY A^T) (.) V] G`. Per transformed point `e` that sum is one
//! matrix product `V_e^T Z_e` (rows = tiles x D, `cin` by `cout`), on the outer-product kernels
//! of the direct weight gradient: 16 products over a quarter of the rows instead of 9 over all
//! of them, 2.25x fewer multiply-adds. The transforms use only 0 and +-1; G's halves are
//! applied once at the end, in float64.
//!
//! Along D the kernel is a plain correlation: as in the forward, each tile's rows carry a zero
//! row above and below when kd = 3, and a D tap is a row offset between `V` and `Z`.
//!
//! Work goes slab by slab (a run of tiles whose transforms fit [`SLAB_BYTES`]): the transforms
//! split over (row of the transformed tile, run of tiles), the products over (point, D tap).
//! Each (point, tap) owns its sums, float32 over about [`FLUSH_ROWS`] rows and then float64,
//! added slab after slab in order: no per-thread copies of the (up to 16 x 3 x 256 x 256)
//! accumulators, and the same bits on any number of threads.

use std::ops::Range;

use rayon::prelude::*;

use super::grad_ops::{at_b_add, select_outer};
use crate::backend::cpu::winograd::G2;
use crate::tensor::Dims;

/// The four planes `V[xi][nu]` (or `Z[xi][nu]`), `nu < 4`, of one row of transformed points.
type Quad<'a> = [&'a mut [f32]; 4];

/// Transformed points of a 4x4 tile.
const E: usize = 16;

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
        Self::with_slab_bytes(dims, cin, cout, kd, SLAB_BYTES)
    }

    /// With slabs of at most `slab_bytes` (the tests use small ones to cross slab boundaries).
    fn with_slab_bytes(dims: Dims, cin: usize, cout: usize, kd: usize, slab_bytes: usize) -> Self {
        assert!(kd == 1 || kd == 3, "Winograd weight gradient for kd {kd}");
        let dr = dims[2] + 2 * (kd / 2);
        let tiles = dims[0].div_ceil(2) * dims[1].div_ceil(2);
        let slab = (slab_bytes / (E * dr * (cin + cout) * 4)).clamp(1, tiles);
        let len = E * kd * cin * cout;
        WeightGrad {
            dims,
            cin,
            cout,
            kd,
            c: vec![0f32; len],
            sum: vec![0f64; len],
            pending: 0,
            v: vec![0f32; E * slab * dr * cin],
            z: vec![0f32; E * slab * dr * cout],
            slab,
            zeros: vec![0f32; dims[2] * cin.max(cout)],
        }
    }

    fn dr(&self) -> usize {
        self.dims[2] + 2 * (self.kd / 2)
    }

    /// Adds one sample: `x` the input (`cin` channels) and `dy` the output gradient (`cout`),
    /// channels-last and unpadded.
    pub fn add_sample(&mut self, x: &[f32], dy: &[f32]) {
        let vox = self.dims[0] * self.dims[1] * self.dims[2];
        assert!(x.len() == vox * self.cin && dy.len() == vox * self.cout, "Winograd weight gradient: shapes");
        let tiles = self.dims[0].div_ceil(2) * self.dims[1].div_ceil(2);
        let mut g0 = 0;
        while g0 < tiles {
            let nt = self.slab.min(tiles - g0);
            self.transform_slab(x, dy, g0, nt);
            self.multiply_slab(nt);
            g0 += nt;
        }
    }

    /// `V` and `Z` of tiles `g0 .. g0 + nt` (row-major over the tile grid), split over (row `xi`
    /// of the transformed tile, run of tiles).
    fn transform_slab(&mut self, x: &[f32], dy: &[f32], g0: usize, nt: usize) {
        let (dr, pd) = (self.dr(), self.kd / 2);
        let (cin, cout) = (self.cin, self.cout);
        let runs = (2 * rayon::current_num_threads()).div_ceil(4).clamp(1, nt);
        let bounds: Vec<usize> = (0..=runs).map(|k| nt * k / runs).collect();
        let mut vp = planes(&mut self.v, self.slab * dr * cin, &bounds, dr * cin);
        let mut zp = planes(&mut self.z, self.slab * dr * cout, &bounds, dr * cout);
        let mut items = Vec::with_capacity(4 * runs);
        for xi in 0..4 {
            for k in 0..runs {
                let v4: Quad<'_> = std::array::from_fn(|nu| vp[xi * 4 + nu][k].take().unwrap());
                let z4: Quad<'_> = std::array::from_fn(|nu| zp[xi * 4 + nu][k].take().unwrap());
                items.push((xi, bounds[k], bounds[k + 1], v4, z4));
            }
        }
        let src = Sources { dims: self.dims, cin, cout, dr, pd, x, dy, zeros: &self.zeros };
        items.into_par_iter().for_each(|(xi, t0, t1, mut v4, mut z4)| {
            src.transform(g0, t0..t1, xi, &mut v4, &mut z4);
        });
    }

    /// The 16 x kd products of the slab's `nt` tiles, added into each (point, tap)'s sums.
    fn multiply_slab(&mut self, nt: usize) {
        let (cin, cout, kd, dr, pd) = (self.cin, self.cout, self.kd, self.dr(), self.kd / 2);
        let (vstride, zstride) = (self.slab * dr * cin, self.slab * dr * cout);
        // Z's rows pd .. nt * dr - pd against V's rows shifted by the D tap.
        let rows = nt * dr - 2 * pd;
        let flush_now = self.pending + rows >= FLUSH_ROWS;
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
            let (mut mg, mut w) = (vec![0f64; 12 * n], vec![0f64; n]);
            for xi in 0..4 {
                for col in 0..3 {
                    let dst = &mut mg[(xi * 3 + col) * n..][..n];
                    for (nu, gn) in G2.iter().enumerate() {
                        if gn[col] != 0.0 {
                            for (d, &s) in dst.iter_mut().zip(m(xi * 4 + nu)) {
                                *d += gn[col] * s;
                            }
                        }
                    }
                }
            }
            for r in 0..3 {
                for col in 0..3 {
                    w.fill(0.0);
                    for (xi, gx) in G2.iter().enumerate() {
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

/// Splits each of the 16 planes of `buf` (`stride` floats apart) at the tile `bounds` (`unit`
/// floats per tile): `[e][run]`, each `Some` until taken.
fn planes<'a>(buf: &'a mut [f32], stride: usize, bounds: &[usize], unit: usize) -> Vec<Vec<Option<&'a mut [f32]>>> {
    buf.chunks_exact_mut(stride)
        .take(E)
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
    x: &'a [f32],
    dy: &'a [f32],
    zeros: &'a [f32],
}

impl Sources<'_> {
    /// Row `xi` of the transforms of tiles `g0 + t` for `t` in `tiles`: `V[xi][nu]` into `v4[nu]`
    /// and `Z[xi][nu]` into `z4[nu]`, tile `t`'s `D` rows starting at row `(t - tiles.start) *
    /// dr + pd`.
    fn transform(&self, g0: usize, tiles: Range<usize>, xi: usize, v4: &mut Quad<'_>, z4: &mut Quad<'_>) {
        #[cfg(target_arch = "x86_64")]
        if crate::backend::cpu::conv::has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA (checked at run time).
            return unsafe { self.transform_avx2(g0, tiles, xi, v4, z4) };
        }
        self.transform_any(g0, tiles, xi, v4, z4)
    }

    /// [`Sources::transform`] compiled for AVX2 (the same additions, 8 lanes at a time).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn transform_avx2(&self, g0: usize, tiles: Range<usize>, xi: usize, v4: &mut Quad<'_>, z4: &mut Quad<'_>) {
        self.transform_any(g0, tiles, xi, v4, z4)
    }

    #[inline(always)]
    fn transform_any(&self, g0: usize, tiles: Range<usize>, xi: usize, v4: &mut Quad<'_>, z4: &mut Quad<'_>) {
        let t0 = tiles.start;
        for t in tiles {
            self.transform_tile(g0 + t, xi, v4, z4, (t - t0) * self.dr + self.pd);
        }
    }

    /// Row `xi` of tile `g`'s transforms, `D` rows starting at row `row` of each plane. (Not
    /// the forward's `winograd::input_transform`, which writes all 16 points of a tile: here the
    /// parts split by `xi`, each writing only its own four planes.)
    #[inline(always)]
    fn transform_tile(&self, g: usize, xi: usize, v4: &mut Quad<'_>, z4: &mut Quad<'_>, row: usize) {
        let Sources { dims, cin, cout, x, dy, zeros, .. } = *self;
        let tiles_w = dims[1].div_ceil(2);
        let (th, tw) = (g / tiles_w, g % tiles_w);
        let d = dims[2];
        let (lin, lout) = (d * cin, d * cout);
        // The voxels of (h - 1, w - 1) in a volume of `len` floats per voxel, or zeros outside.
        fn voxels<'a>(vol: &'a [f32], zeros: &'a [f32], dims: Dims, h: usize, w: usize, len: usize) -> &'a [f32] {
            match (h.checked_sub(1), w.checked_sub(1)) {
                (Some(h), Some(w)) if h < dims[0] && w < dims[1] => &vol[(h * dims[1] + w) * len..][..len],
                _ => &zeros[..len],
            }
        }
        let at = |vol, h, w, len| voxels(vol, zeros, dims, h, w, len);
        // V[xi][nu] = B^T[nu] . (B^T[xi] . P) over the 4x4 input patch one voxel up and left of
        // the tile (`bt_row`; the second application written out).
        let (i0, i1, sign) = bt_row(xi);
        let p = |i: usize, j: usize| at(x, 2 * th + i, 2 * tw + j, lin);
        let cols: [[&[f32]; 2]; 4] = std::array::from_fn(|j| [p(i0, j), p(i1, j)]);
        {
            let [o0, o1, o2, o3] = v4;
            let (o0, o1, o2, o3) = (
                &mut o0[row * cin..][..lin],
                &mut o1[row * cin..][..lin],
                &mut o2[row * cin..][..lin],
                &mut o3[row * cin..][..lin],
            );
            let c: [[&[f32]; 2]; 4] = std::array::from_fn(|j| [&cols[j][0][..lin], &cols[j][1][..lin]]);
            for l in 0..lin {
                let s: [f32; 4] = std::array::from_fn(|j| c[j][0][l] + sign * c[j][1][l]);
                o0[l] = s[0] - s[2];
                o1[l] = s[1] + s[2];
                o2[l] = s[2] - s[1];
                o3[l] = s[1] - s[3];
            }
        }
        // Z[xi][nu] = A[nu] . (A[xi] . dY) over the 2x2 output-gradient tile,
        // A = [[1,0], [1,1], [1,-1], [0,-1]].
        let q = |i: usize, j: usize| at(dy, 2 * th + i + 1, 2 * tw + j + 1, lout);
        let [o0, o1, o2, o3] = z4;
        let (o0, o1, o2, o3) = (
            &mut o0[row * cout..][..lout],
            &mut o1[row * cout..][..lout],
            &mut o2[row * cout..][..lout],
            &mut o3[row * cout..][..lout],
        );
        let (a0, a1, b0, b1) = (&q(0, 0)[..lout], &q(0, 1)[..lout], &q(1, 0)[..lout], &q(1, 1)[..lout]);
        let (wa, wb) = A_ROWS[xi];
        for l in 0..lout {
            let (u0, u1) = (wa * a0[l] + wb * b0[l], wa * a1[l] + wb * b1[l]);
            o0[l] = u0;
            o1[l] = u0 + u1;
            o2[l] = u0 - u1;
            o3[l] = -u1;
        }
    }
}

/// The rows of `A` (4 x 2) as weights of the tile's two rows (exact: 0 and +-1).
const A_ROWS: [(f32, f32); 4] = [(1.0, 0.0), (1.0, 1.0), (1.0, -1.0), (0.0, -1.0)];

/// Row `xi` of `B^T` of F(2x2, 3x3) (`[[1,0,-1,0], [0,1,1,0], [0,-1,1,0], [0,1,0,-1]]`) as
/// `P[i0] + sign * P[i1]`.
fn bt_row(xi: usize) -> (usize, usize, f32) {
    match xi {
        0 => (0, 2, -1.0),
        1 => (1, 2, 1.0),
        2 => (2, 1, -1.0),
        _ => (1, 3, -1.0),
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
        for (dims, cin, cout, kd, parts, slab_bytes) in [
            ([9, 11, 5], 7, 9, 1, 3, SLAB_BYTES),
            ([8, 8, 4], 6, 33, 3, 2, 1),
            ([13, 10, 3], 16, 16, 3, 4, 7 * 16 * 5 * 32 * 4),
            ([10, 9, 2], 8, 8, 1, 1, 3 * 16 * 2 * 16 * 4),
            ([40, 38, 4], 8, 8, 3, 2, 50 * 16 * 6 * 16 * 4),
        ] {
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
                    let mut wg = WeightGrad::with_slab_bytes(dims, cin, cout, kd, slab_bytes);
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
            // Measured: 3.3e-6 to 1.3e-5, 1.5x to 2.9x the direct gradient's error on the same
            // data (the transformed terms are up to 4x larger than the entries they sum to).
            assert!(
                worst < 2e-5 && worst < 4.0 * worst_direct,
                "{dims:?} {cin}->{cout} kd {kd}: worst relative error {worst:e} (direct {worst_direct:e})"
            );
        }
    }
}
