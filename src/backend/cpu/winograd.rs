//! In-plane 3x3 convolutions by Winograd's F(2x2, 3x3): 16 multiplies per 2x2 output tile and
//! input channel instead of 36. Covers `(3,3,1)` kernels (the network's most common) and
//! `(3,3,3)` ones, the latter as three in-plane kernels over the input shifted along D.
//!
//! Along D the kernel is a plain 1-D correlation, so every `(d, channel)` pair of a tile
//! position is an independent 2-D problem: the input and output transforms run over contiguous
//! `D * C` vectors of the channels-last layout, and the 16 element-wise products become 16 small
//! GEMMs (rows = tiles x D, K = kd x cin, N = cout) on the same register-tiled micro-kernel as
//! the direct convolution, with the D taps as row offsets. Each tile's rows carry a zero row
//! above and below when kd = 3 (the D padding). Tiles are processed a few at a time so the
//! transformed data stays in L2. The transforms use only 0, +-1/2, +-1, so float32 error stays
//! within a few ulps of direct summation. Zero padding in-plane is applied while gathering: no
//! padded copy is made.

use super::conv::{par_chunks_with_sums, select_kernel, Kernel, MR, NR};
use super::scratch::Scratch;
use crate::backend::ConvSpec;
use crate::tensor::Dims;

/// Transformed data of one block of tiles (V and M together) should stay within this many bytes
/// (half the 512 KiB L2 of the machines this was tuned on).
const BLOCK_BYTES: usize = 256 << 10;

/// Transformed weights `U = G g G^T` per D tap, packed `[16][panel][kd][cin][NR]`.
pub struct WinogradConv {
    pub spec: ConvSpec,
    u: Vec<f32>,
    bias: Vec<f32>,
    panels: usize,
}

impl WinogradConv {
    /// Kernels this handles.
    pub fn handles(spec: &ConvSpec) -> bool {
        (spec.k == [3, 3, 1] || spec.k == [3, 3, 3]) && spec.cin >= 8 && spec.cout > 4
    }

    /// Whether a tensor of `dims` suits it (a tile's padded rows must fill one micro-kernel block).
    pub fn suits(&self, dims: Dims) -> bool {
        dims[2] + 2 * (self.spec.k[2] / 2) >= MR && dims[0] >= 2 && dims[1] >= 2
    }

    /// `weight` is PyTorch's `(cout, cin, 3, 3, kd)`.
    pub fn new(spec: ConvSpec, weight: &[f32], bias: Option<&[f32]>) -> Self {
        assert!(Self::handles(&spec), "Winograd for {:?}", spec.k);
        let kd = spec.k[2];
        let panels = spec.cout.div_ceil(NR);
        let mut u = vec![0f32; 16 * panels * kd * spec.cin * NR];
        for co in 0..spec.cout {
            for ci in 0..spec.cin {
                for c in 0..kd {
                    let gm = |r: usize, col: usize| weight[((co * spec.cin + ci) * 9 + r * 3 + col) * kd + c] as f64;
                    // G g G^T with G = [[1,0,0],[1/2,1/2,1/2],[1/2,-1/2,1/2],[0,0,1]], in f64.
                    let mut t = [[0f64; 3]; 4]; // G g
                    for col in 0..3 {
                        t[0][col] = gm(0, col);
                        t[1][col] = 0.5 * (gm(0, col) + gm(1, col) + gm(2, col));
                        t[2][col] = 0.5 * (gm(0, col) - gm(1, col) + gm(2, col));
                        t[3][col] = gm(2, col);
                    }
                    for (xi, row) in t.iter().enumerate() {
                        let v = [row[0], 0.5 * (row[0] + row[1] + row[2]), 0.5 * (row[0] - row[1] + row[2]), row[2]];
                        for (nu, &val) in v.iter().enumerate() {
                            let e = xi * 4 + nu;
                            u[(((e * panels + co / NR) * kd + c) * spec.cin + ci) * NR + co % NR] = val as f32;
                        }
                    }
                }
            }
        }
        let mut b = vec![0f32; spec.cout];
        if let Some(bias) = bias {
            b.copy_from_slice(&bias[..spec.cout]);
        }
        WinogradConv { spec, u, bias: b, panels }
    }

    /// Convolves one channels-last sample `x` of `dims` into `out`; with `sums`, also returns the
    /// output's per-channel `(sum, sum of squares)`.
    pub fn conv_sample(&self, x: &[f32], dims: Dims, out: &mut [f32], scratch: &mut Scratch, sums: bool) {
        let plane_out = dims[1] * dims[2] * self.spec.cout;
        let kernel = select_kernel();
        let Scratch { slots, totals, .. } = scratch;
        par_chunks_with_sums(out, 2 * plane_out, self.spec.cout, sums.then_some((slots, totals)), |th, pair, acc| {
            TILE_SCRATCH.with(|cell| match cell.try_borrow_mut() {
                Ok(mut ws) => self.tile_row(&mut ws, x, dims, th, pair, kernel, acc),
                // Only if a tile row ever ran inside another on this thread (it does not: the
                // row is serial code), fall back to fresh buffers rather than fail.
                Err(_) => self.tile_row(&mut TileScratch::default(), x, dims, th, pair, kernel, acc),
            })
        });
    }

    /// One row of tiles: output rows `2*th` and `2*th + 1` (the second may not exist).
    #[allow(clippy::too_many_arguments)]
    fn tile_row(
        &self,
        ws: &mut TileScratch,
        x: &[f32],
        dims: Dims,
        th: usize,
        out: &mut [f32],
        kernel: Kernel,
        mut sums: Option<&mut [(f64, f64)]>,
    ) {
        let (cin, cout, d, kd) = (self.spec.cin, self.spec.cout, dims[2], self.spec.k[2]);
        let pd = kd / 2;
        // GEMM rows per tile: the D voxels plus a zero row at each end when kd = 3.
        let dr = d + 2 * pd;
        let (lin, lout) = (d * cin, d * cout);
        let tiles_w = dims[1].div_ceil(2);
        let tiles = (BLOCK_BYTES / (16 * dr * (cin + cout) * 4)).clamp(1, tiles_w);
        let out_rows = out.len() / (dims[1] * lout);
        // V rows per transform e: tiles * dr, plus kd - 1 rows of slack read by the last
        // tile's discarded rows.
        let vstride = (tiles * dr + kd - 1) * cin;
        let mstride = tiles * dr * cout;
        let TileScratch { zeros, v, scratch, ybuf, m } = ws;
        // `zeros` is never written. V's pad rows (a tile's first and last row when kd = 3) are
        // never written by this call but may hold an earlier layer's values: they are cleared.
        // Its slack rows past the last tile only feed output rows that are discarded. The rest
        // is written before it is read.
        let zeros = grown(zeros, lin);
        let v = grown(v, 16 * vstride);
        if pd > 0 {
            for ve in v.chunks_exact_mut(vstride) {
                for t in 0..tiles {
                    ve[t * dr * cin..][..cin].fill(0.0);
                    ve[(t * dr + dr - 1) * cin..][..cin].fill(0.0);
                }
            }
        }
        let scratch = grown(scratch, 16 * lin);
        let m = grown(m, 16 * mstride);
        let [y00, y01, y10, y11] = ybuf;
        let (y00, y01, y10, y11) = (grown(y00, lout), grown(y01, lout), grown(y10, lout), grown(y11, lout));
        let offsets = [0, cin, 2 * cin];
        let offsets = &offsets[..kd];
        let mut acc = [[0f32; NR]; MR];
        let mut tw0 = 0;
        while tw0 < tiles_w {
            let nt = tiles.min(tiles_w - tw0);
            // Input transform V = B^T P B per tile, over contiguous (d, ci) vectors, written
            // after the tile's leading zero row (the pad rows are never written, so stay zero).
            for t in 0..nt {
                let tw = tw0 + t;
                let src = |i: usize, j: usize| -> &[f32] {
                    let (h, w) = ((2 * th + i) as isize - 1, (2 * tw + j) as isize - 1);
                    if h < 0 || w < 0 || h >= dims[0] as isize || w >= dims[1] as isize {
                        &*zeros
                    } else {
                        &x[(h as usize * dims[1] + w as usize) * lin..][..lin]
                    }
                };
                let p: [[&[f32]; 4]; 4] = std::array::from_fn(|i| std::array::from_fn(|j| src(i, j)));
                input_transform(&p, v, (t * dr + pd) * cin, vstride, lin, scratch);
            }
            // 16 GEMMs: M[e] (rows = nt * dr) = sum over D taps of V[e] shifted by the tap (rows x
            // cin) * U[e][tap] (cin x cout).
            let rows = nt * dr;
            for e in 0..16 {
                let ve = &v[e * vstride..][..vstride];
                let me = &mut m[e * mstride..][..rows * cout];
                for p in 0..self.panels {
                    let up = &self.u[((e * self.panels + p) * kd * cin) * NR..][..kd * cin * NR];
                    let cols = NR.min(cout - p * NR);
                    let mut r0 = 0;
                    while r0 < rows {
                        let start = if r0 + MR <= rows { r0 } else { rows - MR };
                        // SAFETY: rows >= dr >= MR (checked by `suits`); a block reads V rows
                        // start .. start + MR + kd - 1 <= rows + kd - 1, all inside `ve`; `up`
                        // holds kd * cin * NR floats.
                        unsafe { kernel(ve.as_ptr().add(start * cin), cin, offsets, up.as_ptr(), &mut acc) };
                        for (r, a) in acc.iter().enumerate() {
                            me[(start + r) * cout + p * NR..][..cols].copy_from_slice(&a[..cols]);
                        }
                        r0 = start + MR;
                    }
                }
            }
            // Output transform Y = A^T M A (one vectorised pass over (d, co)), bias, stats, store.
            for t in 0..nt {
                let tw = tw0 + t;
                let mt: [&[f32]; 16] = std::array::from_fn(|e| &m[e * mstride + t * dr * cout..][..lout]);
                output_transform(&mt, y00, y01, y10, y11);
                let w0 = 2 * tw;
                let targets = [(0, 0, &*y00), (0, 1, &*y01), (1, 0, &*y10), (1, 1, &*y11)];
                for (a, b, y) in targets {
                    if a >= out_rows || w0 + b >= dims[1] {
                        continue;
                    }
                    let dst = &mut out[(a * dims[1] + w0 + b) * lout..][..lout];
                    for (dc, yc) in dst.chunks_exact_mut(cout).zip(y.chunks_exact(cout)) {
                        for ((o, &v), &bv) in dc.iter_mut().zip(yc).zip(&self.bias) {
                            *o = v + bv;
                        }
                    }
                    if let Some(s) = sums.as_deref_mut() {
                        for dc in dst.chunks_exact(cout) {
                            for (acc, &v) in s.iter_mut().zip(dc) {
                                acc.0 += v as f64;
                                acc.1 += v as f64 * v as f64;
                            }
                        }
                    }
                }
            }
            tw0 += nt;
        }
    }
}

/// The buffers of one tile row, kept per thread between calls: after every layer size has run
/// once, the convolution's hot loop allocates nothing.
#[derive(Default)]
struct TileScratch {
    zeros: Vec<f32>,
    v: Vec<f32>,
    scratch: Vec<f32>,
    ybuf: [Vec<f32>; 4],
    m: Vec<f32>,
}

thread_local! {
    static TILE_SCRATCH: std::cell::RefCell<TileScratch> = std::cell::RefCell::new(TileScratch::default());
}

/// The first `n` floats of `v`, grown (zero-filled) when shorter.
fn grown(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// `V[e] = (B^T P B)[xi][nu]` with `B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]`,
/// written at `v[e * stride + offset ..][..len]`; `scratch` holds `16 * len` floats. Every loop
/// is a zip over equal-length slices so it compiles to straight vector code.
fn input_transform(p: &[[&[f32]; 4]; 4], v: &mut [f32], offset: usize, stride: usize, len: usize, scratch: &mut [f32]) {
    // Rows first: r[i][j] = (B^T P)[i][j], stored at scratch[(4i + j) * len ..].
    for j in 0..4 {
        let (p0, p1, p2, p3) = (&p[0][j][..len], &p[1][j][..len], &p[2][j][..len], &p[3][j][..len]);
        let mut rows = scratch.chunks_exact_mut(len).skip(j).step_by(4);
        let (r0, r1, r2, r3) = (rows.next().unwrap(), rows.next().unwrap(), rows.next().unwrap(), rows.next().unwrap());
        bt_rows(p0, p1, p2, p3, r0, r1, r2, r3);
    }
    let r = &*scratch;
    for i in 0..4 {
        let row = |k: usize| &r[(4 * i + k) * len..][..len];
        let (q0, q1, q2, q3) = (row(0), row(1), row(2), row(3));
        let mut outs = v.chunks_exact_mut(stride).skip(4 * i);
        let mut next = || &mut outs.next().unwrap()[offset..][..len];
        let (o0, o1, o2, o3) = (next(), next(), next(), next());
        bt_rows(q0, q1, q2, q3, o0, o1, o2, o3);
    }
}

/// One application of `B^T` to four equal-length vectors.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn bt_rows(
    p0: &[f32],
    p1: &[f32],
    p2: &[f32],
    p3: &[f32],
    o0: &mut [f32],
    o1: &mut [f32],
    o2: &mut [f32],
    o3: &mut [f32],
) {
    for ((o, a), b) in o0.iter_mut().zip(p0).zip(p2) {
        *o = a - b;
    }
    for ((o, a), b) in o1.iter_mut().zip(p1).zip(p2) {
        *o = a + b;
    }
    for ((o, a), b) in o2.iter_mut().zip(p2).zip(p1) {
        *o = a - b;
    }
    for ((o, a), b) in o3.iter_mut().zip(p1).zip(p3) {
        *o = a - b;
    }
}

/// The four outputs of a tile, `A^T M A` with `A^T = [[1,1,1,0],[0,1,-1,-1]]`, over
/// contiguous `(d, co)` vectors.
fn output_transform(m: &[&[f32]; 16], y00: &mut [f32], y01: &mut [f32], y10: &mut [f32], y11: &mut [f32]) {
    let n = y00.len();
    let m: [&[f32]; 16] = std::array::from_fn(|e| &m[e][..n]);
    let (y01, y10, y11) = (&mut y01[..n], &mut y10[..n], &mut y11[..n]);
    // Columns of each row xi: s = m0 + m1 + m2, t = m1 - m2 - m3; then rows the same way.
    let mut s = [[0f32; 8]; 4];
    let mut t = [[0f32; 8]; 4];
    let mut l = 0;
    while l + 8 <= n {
        for xi in 0..4 {
            let (a, b, c, d) =
                (&m[4 * xi][l..l + 8], &m[4 * xi + 1][l..l + 8], &m[4 * xi + 2][l..l + 8], &m[4 * xi + 3][l..l + 8]);
            for k in 0..8 {
                s[xi][k] = a[k] + b[k] + c[k];
                t[xi][k] = b[k] - c[k] - d[k];
            }
        }
        for k in 0..8 {
            y00[l + k] = s[0][k] + s[1][k] + s[2][k];
            y01[l + k] = t[0][k] + t[1][k] + t[2][k];
            y10[l + k] = s[1][k] - s[2][k] - s[3][k];
            y11[l + k] = t[1][k] - t[2][k] - t[3][k];
        }
        l += 8;
    }
    for l in l..n {
        let g = |e: usize| m[e][l];
        let sx = |xi: usize| g(4 * xi) + g(4 * xi + 1) + g(4 * xi + 2);
        let tx = |xi: usize| g(4 * xi + 1) - g(4 * xi + 2) - g(4 * xi + 3);
        y00[l] = sx(0) + sx(1) + sx(2);
        y01[l] = tx(0) + tx(1) + tx(2);
        y10[l] = sx(1) - sx(2) - sx(3);
        y11[l] = tx(1) - tx(2) - tx(3);
    }
}
