//! In-plane 3x3 convolutions by Winograd's minimal filtering: F(4x4, 3x3) (36 multiplies per
//! 4x4 output tile and input channel instead of 144) for the high-resolution layers of up to
//! 256 channels in and out, and F(2x2, 3x3) (16 instead of 36) for the small planes and the
//! widest layers, whose larger transformed tiles would not stay in L2. Covers `(3,3,1)` kernels (the network's most common) and `(3,3,3)` ones, the
//! latter as three in-plane kernels over the input shifted along D.
//!
//! Along D the kernel is a plain 1-D correlation, so every `(d, channel)` pair of a tile
//! position is an independent 2-D problem: the input and output transforms run over contiguous
//! `D * C` vectors of the channels-last layout, and the `(m+2)^2` element-wise products become
//! as many small GEMMs (rows = tiles x D, K = kd x cin, N = cout) on the same register-tiled
//! micro-kernel as the direct convolution, with the D taps as row offsets. Each tile's rows carry
//! a zero row above and below when kd = 3 (the D padding). Tiles are processed a few at a time so
//! the transformed data stays in L2. F(2x2)'s transforms use only 0, +-1/2, +-1 (float32 error
//! within a few ulps of direct summation); F(4x4)'s use 1/4, 1/6, 1/24 and +-2, 4, 5, 8, which
//! costs about a decimal digit (relative L2 error up to 2.7e-6 against the float64 oracle in
//! `tests/ops`, F(2x2) 7e-7, inside the convolution tolerance of 1e-5). Zero padding in-plane is applied while
//! gathering: no padded copy is made.

#[cfg(target_arch = "x86_64")]
use super::conv::has_avx2_fma;
use super::conv::{
    add_into_slot, add_row_stats, par_chunks_with_sums, select_kernel, Acc, Kernels, PackedConv, MR, NR,
};
use super::scratch::Scratch;
use crate::backend::ConvSpec;
use crate::tensor::Dims;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Transformed data of one block of tiles (V and M together) should stay within this many bytes
/// (half the 512 KiB L2 of the machines this was tuned on).
const BLOCK_BYTES: usize = 256 << 10;

/// F(4x4, 3x3) for convolutions with at most this many input plus output channels; F(2x2, 3x3)
/// above (a 4x4 tile's 36 transformed rows of 128 + 128 channels would not fit L2).
const F4_MAX_CHANNELS: usize = 256;

/// `G` of F(2x2, 3x3): the weight transform `U = G g G^T`.
pub(crate) const G2: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];

/// `G` of F(4x4, 3x3) (interpolation points 0, +-1, +-2 and infinity).
pub(crate) const G4: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// F(4x4, 3x3) only on planes at least this many voxels on each side (the 192x192 to 24x24
/// levels): below, most 4x4 tiles are cut by an edge (a 12x12 plane is 3x3 of them) and
/// F(2x2, 3x3) is as fast. (The extra float32 error of F(4x4) comes from the high-resolution
/// layers and grows through the network: the reference probes `attention_4` and
/// `context_block_1` are 8e-5 to 9.3e-5 from the fixtures with it, under 2e-5 with F(2x2) only,
/// against the fixtures' tolerance of 1e-4.)
pub(crate) const F4_MIN_EDGE: usize = 24;

/// A Winograd convolution: the transformed weights `U = G g G^T` per D tap, packed
/// `[(m+2)^2][panel][kd][cin][NR]`, made on first use for the tile edge `m` the input's size
/// calls for (a convolution runs at one resolution in the network, so only one is ever made),
/// from the direct convolution's packed weights.
pub struct WinogradConv {
    pub spec: ConvSpec,
    /// Largest output tile edge allowed: 2 or 4.
    max_tile: usize,
    /// U for F(2x2, 3x3) and F(4x4, 3x3).
    u: [OnceLock<Vec<f32>>; 2],
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

    /// The output tile edge this convolution runs with on an input of `dims`: 4 where it pays
    /// (large planes, at most [`F4_MAX_CHANNELS`] channels) and `max_tile` allows, else 2.
    pub fn tile_for(&self, dims: Dims) -> usize {
        let f4 = self.max_tile >= 4
            && self.spec.cin + self.spec.cout <= F4_MAX_CHANNELS
            && dims[0] >= F4_MIN_EDGE
            && dims[1] >= F4_MIN_EDGE;
        if f4 {
            4
        } else {
            2
        }
    }

    /// `max_tile` is 2 or 4.
    pub fn new(spec: ConvSpec, bias: Option<&[f32]>, max_tile: usize) -> Self {
        assert!(Self::handles(&spec), "Winograd for {:?}", spec.k);
        assert!(max_tile == 2 || max_tile == 4, "Winograd tile {max_tile}");
        let mut b = vec![0f32; spec.cout];
        if let Some(bias) = bias {
            b.copy_from_slice(&bias[..spec.cout]);
        }
        WinogradConv { spec, max_tile, u: Default::default(), bias: b, panels: spec.cout.div_ceil(NR) }
    }

    /// U for the tile edge `m`, transformed from `direct` (this convolution's direct packing)
    /// on first use.
    fn u(&self, m: usize, direct: &PackedConv) -> &[f32] {
        self.u[m / 4].get_or_init(|| {
            assert_eq!(direct.spec, self.spec, "Winograd and direct forms of different convolutions");
            transform_weights(self.spec, m, direct)
        })
    }

    /// Convolves one channels-last sample `x` of `dims` into `out`; with `sums`, also returns the
    /// output's per-channel `(sum, sum of squares)`. `direct` is this convolution's direct
    /// packing (the weights the transform is made from on first use).
    pub fn conv_sample(
        &self,
        x: &[f32],
        dims: Dims,
        direct: &PackedConv,
        out: &mut [f32],
        scratch: &mut Scratch,
        sums: bool,
    ) {
        let plane_out = dims[1] * dims[2] * self.spec.cout;
        let m = self.tile_for(dims);
        let job = Job { u: self.u(m, direct), m, kernel: select_kernel() };
        let Scratch { slots, totals, .. } = scratch;
        par_chunks_with_sums(out, m * plane_out, self.spec.cout, sums.then_some((slots, totals)), |th, rows, acc| {
            TILE_SCRATCH.with(|cell| match cell.try_borrow_mut() {
                Ok(mut ws) => self.tile_row(&mut ws, x, dims, th, rows, job, acc),
                // Only if a tile row ever ran inside another on this thread (it does not: the
                // row is serial code), fall back to fresh buffers rather than fail.
                Err(_) => self.tile_row(&mut TileScratch::default(), x, dims, th, rows, job, acc),
            })
        });
    }

    /// One row of tiles: output rows `m*th .. m*th + m` (`m = job.m`) (the last ones may not exist). The
    /// transforms and the epilogue are plain loops that LLVM vectorises: compiled for AVX2 where
    /// the CPU has it (8 lanes instead of SSE's 4), the same arithmetic element by element.
    #[allow(clippy::too_many_arguments)]
    fn tile_row(
        &self,
        ws: &mut TileScratch,
        x: &[f32],
        dims: Dims,
        th: usize,
        out: &mut [f32],
        job: Job<'_>,
        sums: Option<&mut [(f64, f64)]>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA (checked at run time).
            return unsafe { self.tile_row_avx2(ws, x, dims, th, out, job, sums) };
        }
        self.tile_row_any(ws, x, dims, th, out, job, sums)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_row_avx2(
        &self,
        ws: &mut TileScratch,
        x: &[f32],
        dims: Dims,
        th: usize,
        out: &mut [f32],
        job: Job<'_>,
        sums: Option<&mut [(f64, f64)]>,
    ) {
        self.tile_row_any(ws, x, dims, th, out, job, sums)
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn tile_row_any(
        &self,
        ws: &mut TileScratch,
        x: &[f32],
        dims: Dims,
        th: usize,
        out: &mut [f32],
        job: Job<'_>,
        sums: Option<&mut [(f64, f64)]>,
    ) {
        match job.m {
            2 => self.tile_row_body::<2, 4>(ws, x, dims, th, out, job, sums),
            _ => self.tile_row_body::<4, 6>(ws, x, dims, th, out, job, sums),
        }
    }

    /// [`WinogradConv::tile_row`] for F(M x M, 3x3), whose transformed tile is `A = M + 2` wide.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn tile_row_body<const M: usize, const A: usize>(
        &self,
        ws: &mut TileScratch,
        x: &[f32],
        dims: Dims,
        th: usize,
        out: &mut [f32],
        job: Job<'_>,
        sums: Option<&mut [(f64, f64)]>,
    ) {
        debug_assert_eq!(A, M + 2);
        let Job { u, kernel, .. } = job;
        let (cin, cout, d, kd) = (self.spec.cin, self.spec.cout, dims[2], self.spec.k[2]);
        let n_e = A * A;
        let pd = kd / 2;
        // GEMM rows per tile: the D voxels plus a zero row at each end when kd = 3.
        let dr = d + 2 * pd;
        let (lin, lout) = (d * cin, d * cout);
        let tiles_w = dims[1].div_ceil(M);
        let tiles = (BLOCK_BYTES / (n_e * dr * (cin + cout) * 4)).clamp(1, tiles_w);
        let out_rows = out.len() / (dims[1] * lout);
        // V rows per transform e: tiles * dr, plus kd - 1 rows of slack read by the last
        // tile's discarded rows.
        let vstride = (tiles * dr + kd - 1) * cin;
        let mstride = tiles * dr * cout;
        let TileScratch { zeros, v, scratch, ybuf, m, stats } = ws;
        // The statistics (when asked for), gathered apart and added into `sums` (zero on entry:
        // one call per chunk) at the end, so the same bits.
        let nstat = if sums.is_some() { cout } else { 0 };
        stats.clear();
        stats.resize(2 * nstat, 0.0);
        let (s1, s2) = stats.split_at_mut(nstat);
        // `zeros` is never written. V's pad rows (a tile's first and last row when kd = 3) are
        // never written by this call but may hold an earlier layer's values: they are cleared.
        // Its slack rows past the last tile only feed output rows that are discarded. The rest
        // is written before it is read.
        let zeros = grown(zeros, lin);
        let v = grown(v, n_e * vstride);
        if pd > 0 {
            for ve in v.chunks_exact_mut(vstride) {
                for t in 0..tiles {
                    ve[t * dr * cin..][..cin].fill(0.0);
                    ve[(t * dr + dr - 1) * cin..][..cin].fill(0.0);
                }
            }
        }
        let scratch = grown(scratch, n_e * lin);
        let m = grown(m, n_e * mstride);
        if ybuf.len() < M * M {
            ybuf.resize_with(M * M, Vec::new);
        }
        for y in ybuf.iter_mut() {
            grown(y, lout);
        }
        let offsets = [0, cin, 2 * cin];
        let offsets = &offsets[..kd];
        let mut acc = Acc::default();
        let mut tw0 = 0;
        while tw0 < tiles_w {
            let nt = tiles.min(tiles_w - tw0);
            // Input transform V = B^T P B per tile, over contiguous (d, ci) vectors, written
            // after the tile's leading zero row (the pad rows are never written, so stay zero).
            for t in 0..nt {
                let tw = tw0 + t;
                let src = |i: usize, j: usize| -> &[f32] {
                    let (h, w) = ((M * th + i) as isize - 1, (M * tw + j) as isize - 1);
                    if h < 0 || w < 0 || h >= dims[0] as isize || w >= dims[1] as isize {
                        &*zeros
                    } else {
                        &x[(h as usize * dims[1] + w as usize) * lin..][..lin]
                    }
                };
                let p: [[&[f32]; A]; A] = std::array::from_fn(|i| std::array::from_fn(|j| src(i, j)));
                input_transform::<A>(&p, v, (t * dr + pd) * cin, vstride, lin, scratch);
            }
            // A^2 GEMMs: M[e] (rows = nt * dr) = sum over D taps of V[e] shifted by the tap
            // (rows x cin) * U[e][tap] (cin x cout).
            let rows = nt * dr;
            for e in 0..n_e {
                let ve = &v[e * vstride..][..vstride];
                let me = &mut m[e * mstride..][..rows * cout];
                let panel_len = kd * cin * NR;
                let mut p = 0;
                while p < self.panels {
                    let step = kernel.step(p, self.panels);
                    let up = &u[(e * self.panels + p) * panel_len..][..step * panel_len];
                    let cols = (step * NR).min(cout - p * NR);
                    let mut r0 = 0;
                    while r0 < rows {
                        let start = if r0 + MR <= rows { r0 } else { rows - MR };
                        // SAFETY: rows >= dr >= MR (checked by `suits`); a block reads V rows
                        // start .. start + MR + kd - 1 <= rows + kd - 1, all inside `ve`; `up`
                        // holds `step` panels of kd * cin * NR floats.
                        let block = unsafe {
                            kernel.run(
                                ve.as_ptr().add(start * cin),
                                cin,
                                offsets,
                                up.as_ptr(),
                                panel_len,
                                step * NR,
                                &mut acc,
                            )
                        };
                        for (r, a) in block.iter().enumerate() {
                            me[(start + r) * cout + p * NR..][..cols].copy_from_slice(&a[..cols]);
                        }
                        r0 = start + MR;
                    }
                    p += step;
                }
            }
            // Output transform Y = A^T M A (vectorised over (d, co)), bias, stats, store.
            for t in 0..nt {
                let tw = tw0 + t;
                output_transform::<M, A>(m, mstride, t * dr * cout, lout, ybuf);
                let w0 = M * tw;
                for a in 0..out_rows {
                    for b in 0..M.min(dims[1] - w0) {
                        let y = &ybuf[a * M + b][..lout];
                        let dst = &mut out[(a * dims[1] + w0 + b) * lout..][..lout];
                        for (dc, yc) in dst.chunks_exact_mut(cout).zip(y.chunks_exact(cout)) {
                            for ((o, &v), &bv) in dc.iter_mut().zip(yc).zip(&self.bias) {
                                *o = v + bv;
                            }
                        }
                        if sums.is_some() {
                            for dc in dst.chunks_exact(cout) {
                                add_row_stats(s1, s2, dc);
                            }
                        }
                    }
                }
            }
            tw0 += nt;
        }
        if let Some(s) = sums {
            add_into_slot(s, s1, s2);
        }
    }
}

/// What every tile row of one call shares: the transformed weights for tile edge `m` and the
/// micro-kernel.
#[derive(Clone, Copy)]
struct Job<'a> {
    u: &'a [f32],
    m: usize,
    kernel: Kernels,
}

/// `U = G g G^T` for F(m x m, 3x3), packed `[(m+2)^2][panel][kd][cin][NR]`, in float64 and
/// rounded once, from `direct`, the convolution's direct packing `[panel][tap][cin][NR]` with
/// tap `(r * 3 + col) * kd + c`. Made once per weight update (every training step, for the
/// forward and the data gradient's convolution), so it runs in parallel over the `(point,
/// panel)` blocks it writes, each one `kd` runs over contiguous `(ci, j)` lanes of the packing.
fn transform_weights(spec: ConvSpec, m: usize, direct: &PackedConv) -> Vec<f32> {
    let g: &[[f64; 3]] = match m {
        2 => &G2,
        4 => &G4,
        _ => panic!("Winograd F({m}x{m}, 3x3) is not implemented"),
    };
    let a = m + 2;
    let (kd, taps) = (spec.k[2], spec.taps());
    let panels = spec.cout.div_ceil(NR);
    let lanes = spec.cin * NR;
    let mut u = vec![0f32; a * a * panels * kd * lanes];
    u.par_chunks_mut(kd * lanes).enumerate().for_each(|(i, block)| {
        let (e, p) = (i / panels, i % panels);
        let (gx, gn) = (&g[e / a], &g[e % a]);
        for (c, out) in block.chunks_exact_mut(lanes).enumerate() {
            let src: [[&[f32]; 3]; 3] = std::array::from_fn(|r| {
                std::array::from_fn(|col| &direct.w[(p * taps + (r * 3 + col) * kd + c) * lanes..][..lanes])
            });
            for (l, o) in out.iter_mut().enumerate() {
                // (G g)[xi][col], then its product with G[nu]: the same order of float64
                // operations for every element.
                let gw: [f64; 3] = std::array::from_fn(|col| (0..3).map(|r| gx[r] * src[r][col][l] as f64).sum());
                *o = (0..3).map(|col| gw[col] * gn[col]).sum::<f64>() as f32;
            }
        }
    });
    u
}

/// The buffers of one tile row, kept per thread between calls: after every layer size has run
/// once, the convolution's hot loop allocates nothing.
#[derive(Default)]
struct TileScratch {
    zeros: Vec<f32>,
    v: Vec<f32>,
    scratch: Vec<f32>,
    /// One `(d, co)` vector per output position of a tile.
    ybuf: Vec<Vec<f32>>,
    m: Vec<f32>,
    /// Per output channel: sums, then sums of squares.
    stats: Vec<f64>,
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

/// `V[e] = (B^T P B)[xi][nu]` (`e = xi * A + nu`), written at `v[e * stride + offset ..][..len]`;
/// `scratch` holds `A * A * len` floats. Every loop runs over equal-length slices so it
/// compiles to straight vector code.
#[inline(always)]
fn input_transform<const A: usize>(
    p: &[[&[f32]; A]; A],
    v: &mut [f32],
    offset: usize,
    stride: usize,
    len: usize,
    scratch: &mut [f32],
) {
    // Rows first: r[i][j] = (B^T P)[i][j], stored at scratch[(A i + j) * len ..].
    for j in 0..A {
        let col: [&[f32]; A] = std::array::from_fn(|i| &p[i][j][..len]);
        let mut rows = scratch.chunks_exact_mut(len).skip(j).step_by(A);
        let outs: [&mut [f32]; A] = std::array::from_fn(|_| rows.next().unwrap());
        bt::<A>(col, outs);
    }
    let r = &*scratch;
    for i in 0..A {
        let row: [&[f32]; A] = std::array::from_fn(|k| &r[(A * i + k) * len..][..len]);
        let mut outs = v.chunks_exact_mut(stride).skip(A * i);
        let outs: [&mut [f32]; A] = std::array::from_fn(|_| &mut outs.next().unwrap()[offset..][..len]);
        bt::<A>(row, outs);
    }
}

/// One application of `B^T` to `A` equal-length vectors. F(2x2): `B^T = [[1,0,-1,0], [0,1,1,0],
/// [0,-1,1,0], [0,1,0,-1]]`; F(4x4): `B^T = [[4,0,-5,0,1,0], [0,-4,-4,1,1,0], [0,4,-4,-1,1,0],
/// [0,-2,-1,2,1,0], [0,2,-1,-2,1,0], [0,4,0,-5,0,1]]`.
#[inline(always)]
pub(crate) fn bt<const A: usize>(p: [&[f32]; A], mut o: [&mut [f32]; A]) {
    let n = o[0].len();
    if A == 4 {
        let (p0, p1, p2, p3) = (&p[0][..n], &p[1][..n], &p[2][..n], &p[3][..n]);
        let [o0, o1, o2, o3, ..] = &mut o[..] else { unreachable!() };
        let (o0, o1, o2, o3) = (&mut o0[..n], &mut o1[..n], &mut o2[..n], &mut o3[..n]);
        for l in 0..n {
            o0[l] = p0[l] - p2[l];
            o1[l] = p1[l] + p2[l];
            o2[l] = p2[l] - p1[l];
            o3[l] = p1[l] - p3[l];
        }
    } else {
        let (p0, p1, p2, p3, p4, p5) = (&p[0][..n], &p[1][..n], &p[2][..n], &p[3][..n], &p[4][..n], &p[5][..n]);
        let [o0, o1, o2, o3, o4, o5, ..] = &mut o[..] else { unreachable!() };
        let (o0, o1, o2) = (&mut o0[..n], &mut o1[..n], &mut o2[..n]);
        let (o3, o4, o5) = (&mut o3[..n], &mut o4[..n], &mut o5[..n]);
        for l in 0..n {
            let (a1, a2, a3, a4) = (p1[l], p2[l], p3[l], p4[l]);
            o0[l] = (4.0 * p0[l] - 5.0 * a2) + a4;
            o1[l] = (a3 + a4) - 4.0 * (a1 + a2);
            o2[l] = (a4 - a3) + 4.0 * (a1 - a2);
            o3[l] = (a4 - a2) - 2.0 * (a1 - a3);
            o4[l] = (a4 - a2) + 2.0 * (a1 - a3);
            o5[l] = (4.0 * a1 - 5.0 * a3) + p5[l];
        }
    }
}

/// One application of `A^T` to `A` vectors of `W` lanes, giving `M`. F(2x2): `A^T =
/// [[1,1,1,0], [0,1,-1,-1]]`; F(4x4): `A^T = [[1,1,1,1,1,0], [0,1,-1,2,-2,0], [0,1,1,4,4,0],
/// [0,1,-1,8,-8,1]]`.
#[inline(always)]
fn at<const M: usize, const A: usize, const W: usize>(q: &[[f32; W]; A]) -> [[f32; W]; M] {
    let mut r = [[0f32; W]; M];
    for k in 0..W {
        if A == 4 {
            r[0][k] = q[0][k] + q[1][k] + q[2][k];
            r[1][k] = q[1][k] - q[2][k] - q[3][k];
        } else {
            let (d12, s12) = (q[1][k] - q[2][k], q[1][k] + q[2][k]);
            let (d34, s34) = (q[3][k] - q[4][k], q[3][k] + q[4][k]);
            r[0][k] = q[0][k] + s12 + s34;
            r[1][k] = d12 + 2.0 * d34;
            r[2][k] = s12 + 4.0 * s34;
            r[3][k] = (d12 + 8.0 * d34) + q[5][k];
        }
    }
    r
}

/// The `M x M` outputs of one tile, `A^T M A`, from the `A^2` products at `m[e * stride + offset
/// ..][..len]`, into `y[a * M + b][..len]`, over contiguous `(d, co)` vectors 8 lanes at a time.
#[inline(always)]
fn output_transform<const M: usize, const A: usize>(
    m: &[f32],
    stride: usize,
    offset: usize,
    len: usize,
    y: &mut [Vec<f32>],
) {
    let mut l = 0;
    while l + 8 <= len {
        output_lanes::<M, A, 8>(m, stride, offset, l, y);
        l += 8;
    }
    for l in l..len {
        output_lanes::<M, A, 1>(m, stride, offset, l, y);
    }
}

#[inline(always)]
fn output_lanes<const M: usize, const A: usize, const W: usize>(
    m: &[f32],
    stride: usize,
    offset: usize,
    l: usize,
    y: &mut [Vec<f32>],
) {
    // Columns of each row xi, then rows of each output column b.
    let mut cols = [[[0f32; W]; M]; A];
    for (xi, c) in cols.iter_mut().enumerate() {
        let q: [[f32; W]; A] = std::array::from_fn(|nu| {
            let s = &m[(xi * A + nu) * stride + offset + l..][..W];
            std::array::from_fn(|k| s[k])
        });
        *c = at::<M, A, W>(&q);
    }
    for b in 0..M {
        let q: [[f32; W]; A] = std::array::from_fn(|xi| cols[xi][b]);
        for (a, r) in at::<M, A, W>(&q).iter().enumerate() {
            y[a * M + b][l..l + W].copy_from_slice(r);
        }
    }
}
