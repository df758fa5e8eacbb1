//! Backward kernels of the CPU engine's ops, on channels-last samples `(H, W, D, C)`.
//!
//! Each takes the output gradient (and whatever the forward saved) and returns or accumulates
//! the input and parameter gradients, in float32 with float64 sums where a reduction runs over
//! a whole volume. The convolution's data gradient is not here: it is a forward convolution
//! with flipped, transposed weights ([`flip_transpose`]) and runs on the forward kernels.

use rayon::prelude::*;

use crate::backend::cpu::norm::Stats;
use crate::backend::cpu::reference::adaptive_window;
use crate::backend::cpu::resize::{axis_weights, corners};
use crate::tensor::{numel, Dims};

/// Voxels per parallel work item of the elementwise kernels.
const CHUNK_VOX: usize = 4096;

/// Rows per matrix product in [`accumulate_at_b`]: float32 sums stay short (about 1e-6
/// relative error at worst), and the chunk results are added in float64.
const SUM_CHUNK_ROWS: usize = 2048;

/// `acc[t] (m x n) += A_t^T B` for every tap `t`, over `rows` rows, where row `r` of `A_t` is
/// the `m` floats at `a[a_firsts[t] + r * m ..]` (a channels-last volume of `m` channels) and
/// row `r` of `B` the `n` floats at `b[b_first + r * n ..]`; `acc` is `[tap][m][n]`.
///
/// A gradient sums hundreds of thousands of products of both signs, often to a small result,
/// so float32 accumulation over the whole volume loses digits: rows go in chunks of
/// [`SUM_CHUNK_ROWS`] through a float32 product ([`at_b_add`]), and the chunk results are
/// added in float64. Chunks are the outer loop and taps the inner one, so a chunk of `B` stays
/// in cache across the taps (whose `A` rows, a few image rows apart, overlap too). Chunks are
/// split into `parts` contiguous ranges summed in parallel and the partial sums are added in a
/// fixed order, so the result does not depend on scheduling.
#[allow(clippy::too_many_arguments)]
fn accumulate_at_b(
    a: &[f32],
    a_firsts: &[usize],
    m: usize,
    b: &[f32],
    b_first: usize,
    n: usize,
    rows: usize,
    parts: usize,
    acc: &mut [f32],
) {
    let taps = a_firsts.len();
    assert!(acc.len() == taps * m * n, "accumulate_at_b: accumulator of {} for {taps}x{m}x{n}", acc.len());
    if rows == 0 {
        return;
    }
    for &a_first in a_firsts {
        assert!(a_first + rows * m <= a.len(), "accumulate_at_b: A out of bounds");
    }
    assert!(b_first + rows * n <= b.len(), "accumulate_at_b: B out of bounds");
    let chunks = rows.div_ceil(SUM_CHUNK_ROWS);
    let parts = parts.clamp(1, chunks);
    let outer = select_outer(n);
    let partials: Vec<Vec<f64>> = (0..parts)
        .into_par_iter()
        .map(|p| {
            let mut sum = vec![0f64; taps * m * n];
            let mut c = vec![0f32; m * n];
            for chunk in chunks * p / parts..chunks * (p + 1) / parts {
                let r0 = chunk * SUM_CHUNK_ROWS;
                let r1 = (r0 + SUM_CHUNK_ROWS).min(rows);
                let bc = &b[b_first + r0 * n..];
                for (t, &a_first) in a_firsts.iter().enumerate() {
                    c.fill(0.0);
                    at_b_add(&a[a_first + r0 * m..], m, m, bc, n, r1 - r0, &mut c, outer);
                    for (s, &v) in sum[t * m * n..][..m * n].iter_mut().zip(&c) {
                        *s += v as f64;
                    }
                }
            }
            sum
        })
        .collect();
    let mut total = vec![0f64; taps * m * n];
    for part in partials {
        for (t, v) in total.iter_mut().zip(part) {
            *t += v;
        }
    }
    for (d, t) in acc.iter_mut().zip(total) {
        *d = (*d as f64 + t) as f32;
    }
}

/// Rows of one register-tile pass over a chunk: a pass's A and B rows stay in L1/L2 while
/// every (row-block, column-block) tile of the result sweeps them.
const PASS_ROWS: usize = 64;
/// Register tile of the outer-product kernels: 6 rows of the result (A's columns) by 16
/// (AVX2) or 32 (AVX-512) columns (B's).
const OMR: usize = 6;
const ONR_MAX: usize = 32;

type Tile = [[f32; ONR_MAX]; OMR];

/// `acc[i][j] = sum over r < rows of a[r * a_stride + i] * b[r * b_stride + j]` for `i < 6` and
/// `j <` the kernel's width; each sum runs over `r` in order with fused multiply-adds.
type OuterFn = unsafe fn(a: *const f32, a_stride: usize, b: *const f32, b_stride: usize, rows: usize, acc: &mut Tile);

/// An outer-product kernel and its tile width.
#[derive(Clone, Copy)]
pub(crate) struct Outer {
    f: OuterFn,
    nr: usize,
}

/// The widest kernel this CPU runs whose tile fits `n` columns.
pub(crate) fn select_outer(n: usize) -> Outer {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::backend::cpu::conv::{has_avx2_fma, has_avx512f};
        if n >= 32 && has_avx512f() {
            return Outer { f: avx512::outer_6x32, nr: 32 };
        }
        if has_avx2_fma() {
            return Outer { f: avx2::outer_6x16, nr: 16 };
        }
    }
    let _ = n;
    Outer { f: outer_generic, nr: 16 }
}

/// Every kernel this CPU runs (for the tests: they must agree).
#[cfg(test)]
fn available_outers() -> Vec<Outer> {
    let mut v = vec![Outer { f: outer_generic, nr: 16 }];
    #[cfg(target_arch = "x86_64")]
    {
        use crate::backend::cpu::conv::{has_avx2_fma, has_avx512f};
        if has_avx2_fma() {
            v.push(Outer { f: avx2::outer_6x16, nr: 16 });
        }
        if has_avx512f() {
            v.push(Outer { f: avx512::outer_6x32, nr: 32 });
        }
    }
    v
}

/// `c (m x n) += A^T B` over `rows` rows, where row `r` of `A` is the `m` floats at
/// `a[r * a_stride ..]` and row `r` of `B` the `n` floats at `b[r * n ..]`: sums of outer
/// products of rows, register-tiled and read straight from the channels-last volumes (a weight
/// gradient's A and B are its input and output gradient; nothing is packed or copied).
#[allow(clippy::too_many_arguments)]
pub(crate) fn at_b_add(
    a: &[f32],
    a_stride: usize,
    m: usize,
    b: &[f32],
    n: usize,
    rows: usize,
    c: &mut [f32],
    outer: Outer,
) {
    assert!(rows == 0 || ((rows - 1) * a_stride + m <= a.len() && rows * n <= b.len()), "at_b_add: out of bounds");
    assert!(c.len() >= m * n, "at_b_add: result of {} for {m}x{n}", c.len());
    if n < OMR && m > n && a_stride == m {
        // A result a few columns wide (a convolution to one output channel, say) goes through
        // the kernels transposed, `c^T = B^T A`, so they vectorise over A's m columns instead
        // of B's few.
        let mut ct = vec![0f32; n * m];
        at_b_add(b, n, n, a, m, rows, &mut ct, select_outer(m));
        for (i, row) in c[..m * n].chunks_exact_mut(n).enumerate() {
            for (j, d) in row.iter_mut().enumerate() {
                *d += ct[j * m + i];
            }
        }
        return;
    }
    let mut r0 = 0;
    while r0 < rows {
        let nr = PASS_ROWS.min(rows - r0);
        for (i0, skip_i) in blocks(m, OMR) {
            let mi = OMR.min(m - i0);
            for (j0, skip_j) in blocks(n, outer.nr) {
                let nj = outer.nr.min(n - j0);
                let mut acc = [[0f32; ONR_MAX]; OMR];
                let (ap, bp) = (&a[r0 * a_stride + i0..], &b[r0 * n + j0..]);
                if mi == OMR && nj == outer.nr {
                    // SAFETY: the kernel reads ap[r * a_stride + i] for r < nr, i < 6, inside A's
                    // rows (i0 + 6 <= m, asserted above), and bp[r * n + j], j < its width,
                    // inside B's (j0 + width <= n).
                    unsafe { (outer.f)(ap.as_ptr(), a_stride, bp.as_ptr(), n, nr, &mut acc) };
                } else {
                    outer_edge(ap, a_stride, mi, bp, n, nj, nr, &mut acc);
                }
                for (i, row) in acc.iter().enumerate().take(mi).skip(skip_i) {
                    for (d, &v) in c[(i0 + i) * n + j0 + skip_j..][..nj - skip_j].iter_mut().zip(&row[skip_j..]) {
                        *d += v;
                    }
                }
            }
        }
        r0 += nr;
    }
}

/// Blocks of `w` covering `0..len`: `(start, skip)`, where the last block is shifted back to stay
/// whole (when `len >= w`) and its first `skip` entries were covered by the block before.
fn blocks(len: usize, w: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..len.div_ceil(w)).map(move |k| {
        let start = k * w;
        if len >= w && start + w > len {
            (len - w, start - (len - w))
        } else {
            (start, 0)
        }
    })
}

/// A partial tile (`mi <= 6` by `nj <=` the kernel's width) of [`at_b_add`], in plain loops.
#[allow(clippy::too_many_arguments)]
fn outer_edge(
    a: &[f32],
    a_stride: usize,
    mi: usize,
    b: &[f32],
    b_stride: usize,
    nj: usize,
    rows: usize,
    acc: &mut Tile,
) {
    for r in 0..rows {
        let br = &b[r * b_stride..][..nj];
        for (i, row) in acc.iter_mut().enumerate().take(mi) {
            let x = a[r * a_stride + i];
            for (s, &y) in row.iter_mut().zip(br) {
                *s += x * y;
            }
        }
    }
}

/// Portable [`OuterFn`] (any CPU), 16 columns wide.
///
/// # Safety
/// As for [`avx2::outer_6x16`].
unsafe fn outer_generic(a: *const f32, a_stride: usize, b: *const f32, b_stride: usize, rows: usize, acc: &mut Tile) {
    if rows == 0 {
        return;
    }
    // SAFETY: the caller guarantees these extents are readable.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, (rows - 1) * a_stride + OMR),
            std::slice::from_raw_parts(b, (rows - 1) * b_stride + 16),
        )
    };
    outer_edge(a, a_stride, OMR, b, b_stride, 16, rows, acc);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Tile, OMR};
    use std::arch::x86_64::*;

    /// [`super::OuterFn`] for a 6 x 16 tile: 12 accumulator registers, two B vectors and one
    /// broadcast per A element.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA; `a` is readable at `r * a_stride + i` (`i < 6`) and `b` at
    /// `r * b_stride + j` (`j < 16`) for every `r < rows`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn outer_6x16(
        a: *const f32,
        a_stride: usize,
        b: *const f32,
        b_stride: usize,
        rows: usize,
        acc: &mut Tile,
    ) {
        let mut c = [_mm256_setzero_ps(); 2 * OMR];
        for r in 0..rows {
            let (ar, br) = (a.add(r * a_stride), b.add(r * b_stride));
            let (b0, b1) = (_mm256_loadu_ps(br), _mm256_loadu_ps(br.add(8)));
            for i in 0..OMR {
                let x = _mm256_broadcast_ss(&*ar.add(i));
                c[2 * i] = _mm256_fmadd_ps(x, b0, c[2 * i]);
                c[2 * i + 1] = _mm256_fmadd_ps(x, b1, c[2 * i + 1]);
            }
        }
        for (i, row) in acc.iter_mut().enumerate() {
            _mm256_storeu_ps(row.as_mut_ptr(), c[2 * i]);
            _mm256_storeu_ps(row.as_mut_ptr().add(8), c[2 * i + 1]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Tile, OMR};
    use std::arch::x86_64::*;

    /// [`super::OuterFn`] for a 6 x 32 tile: [`super::avx2::outer_6x16`] on 16-float registers,
    /// the same fused multiply-adds in the same order per element.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `a` is readable at `r * a_stride + i` (`i < 6`) and `b` at
    /// `r * b_stride + j` (`j < 32`) for every `r < rows`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn outer_6x32(
        a: *const f32,
        a_stride: usize,
        b: *const f32,
        b_stride: usize,
        rows: usize,
        acc: &mut Tile,
    ) {
        let mut c = [_mm512_setzero_ps(); 2 * OMR];
        for r in 0..rows {
            let (ar, br) = (a.add(r * a_stride), b.add(r * b_stride));
            let (b0, b1) = (_mm512_loadu_ps(br), _mm512_loadu_ps(br.add(16)));
            for i in 0..OMR {
                let x = _mm512_set1_ps(*ar.add(i));
                c[2 * i] = _mm512_fmadd_ps(x, b0, c[2 * i]);
                c[2 * i + 1] = _mm512_fmadd_ps(x, b1, c[2 * i + 1]);
            }
        }
        for (i, row) in acc.iter_mut().enumerate() {
            _mm512_storeu_ps(row.as_mut_ptr(), c[2 * i]);
            _mm512_storeu_ps(row.as_mut_ptr().add(16), c[2 * i + 1]);
        }
    }
}

/// `out (rows x n) = A (rows x k) B (k x n)`, rows split across threads.
fn matmul(a: &[f32], k: usize, b: &[f32], n: usize, out: &mut [f32]) {
    let rows = a.len() / k;
    assert!(b.len() == k * n && out.len() == rows * n, "matmul: shapes");
    const ROWS: usize = 2048;
    out.par_chunks_mut(ROWS * n).enumerate().for_each(|(i, dst)| {
        let r = dst.len() / n;
        // SAFETY: `dst` is r x n, the A rows i*ROWS .. i*ROWS+r exist, B is k x n.
        unsafe {
            matrixmultiply::sgemm(
                r,
                k,
                n,
                1.0,
                a.as_ptr().add(i * ROWS * k),
                k as isize,
                1,
                b.as_ptr(),
                n as isize,
                1,
                0.0,
                dst.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    });
}

/// Weight gradient of a "same" convolution for one sample, accumulated into `acc` laid out
/// `[tap][cin][cout]`. `xpad` and `dypad` are the input (`cin` channels) and the output
/// gradient (`cout`) zero-padded by the conv's padding (`conv::pad_input`).
///
/// In the padded volume the input of tap `t` for the output voxel at linear index `q` sits at
/// `q + off(t)`, one constant per tap. With the output gradient zero outside the interior, the
/// sum over interior voxels is a sum over the contiguous run of padded voxels from the first
/// interior one to the last: one matrix product per tap, rows `q`, no gather.
#[allow(clippy::too_many_arguments)]
pub fn conv_weight_grad(
    xpad: &[f32],
    dypad: &[f32],
    dims: Dims,
    cin: usize,
    cout: usize,
    k: Dims,
    parts: usize,
    acc: &mut [f32],
) {
    let pad = [k[0] / 2, k[1] / 2, k[2] / 2];
    let p = [dims[0] + 2 * pad[0], dims[1] + 2 * pad[1], dims[2] + 2 * pad[2]];
    let lin = |h: usize, w: usize, d: usize| (h * p[1] + w) * p[2] + d;
    let q0 = lin(pad[0], pad[1], pad[2]);
    let q1 = lin(pad[0] + dims[0] - 1, pad[1] + dims[1] - 1, pad[2] + dims[2] - 1);
    let rows = q1 - q0 + 1;
    // Tap t's input row for output row q0 + r sits at voxel lin(tap) + r: q0 is the offset of
    // the farthest tap, so every start is in the volume.
    let a_firsts: Vec<usize> =
        (0..k[0]).flat_map(|a| (0..k[1]).flat_map(move |b| (0..k[2]).map(move |c| lin(a, b, c) * cin))).collect();
    accumulate_at_b(xpad, &a_firsts, cin, dypad, q0 * cout, cout, rows, parts, acc);
}

/// `[tap][cin][cout]` (as [`conv_weight_grad`] accumulates) to PyTorch's `(cout, cin, taps)`.
pub fn tap_major_to_torch(acc: &[f32], cin: usize, cout: usize, taps: usize) -> Vec<f32> {
    let mut w = vec![0f32; acc.len()];
    for t in 0..taps {
        for ci in 0..cin {
            for co in 0..cout {
                w[(co * cin + ci) * taps + t] = acc[(t * cin + ci) * cout + co];
            }
        }
    }
    w
}

/// The weight of the convolution that maps an output gradient to the input gradient:
/// PyTorch `(cout, cin, kH, kW, kD)` to `(cin, cout, kH, kW, kD)` with every axis reversed.
/// (With stride 1 and "same" padding of an odd kernel, the transposed convolution is this
/// convolution.)
pub fn flip_transpose(w: &[f32], cout: usize, cin: usize, k: Dims) -> Vec<f32> {
    let taps = k[0] * k[1] * k[2];
    let mut out = vec![0f32; w.len()];
    for co in 0..cout {
        for ci in 0..cin {
            for t in 0..taps {
                out[(ci * cout + co) * taps + (taps - 1 - t)] = w[(co * cin + ci) * taps + t];
            }
        }
    }
    out
}

/// Per-channel sums over all voxels (bias gradients), in float64.
///
/// Chunk sums are added in chunk order (a rayon `reduce` would pair them as the work was
/// stolen): the same bits however the threads ran.
pub fn channel_sums(x: &[f32], c: usize) -> Vec<f64> {
    let chunks: Vec<Vec<f64>> = x
        .par_chunks(CHUNK_VOX * c)
        .map(|chunk| {
            let mut s = vec![0f64; c];
            for v in chunk.chunks_exact(c) {
                for ch in 0..c {
                    s[ch] += v[ch] as f64;
                }
            }
            s
        })
        .collect();
    let mut total = vec![0f64; c];
    for s in chunks {
        for (t, v) in total.iter_mut().zip(s) {
            *t += v;
        }
    }
    total
}

/// What an instance norm saved for its backward: `xhat = (x - mean) * rstd` is either kept
/// (when a ReLU follows and clipped values are lost) or recovered as `y - residual`.
pub enum NormSaved<'a> {
    Xhat(&'a [f32]),
    FromOutput { y: &'a [f32], residual: Option<&'a [f32]> },
}

/// Backward of `y = relu?(xhat + r)` with `xhat` the instance norm of `x`: turns `dy` into
/// `g = dy * relu'(y)` in place (which is also the residual's gradient) and writes
/// `dx = rstd * (g - mean(g) - xhat * mean(g * xhat))` per channel.
///
/// Two passes over the sample, both memory-bound: the masked gradient and its float64 sums
/// (per chunk into a slot of its own, the slots added in chunk order, so the result does not
/// depend on which thread ran which chunk), then `dx`. xhat is read where it is kept or
/// recomputed in registers (`y - r`), never copied.
pub fn norm_backward(
    dy: &mut [f32],
    y: &[f32],
    saved: NormSaved<'_>,
    stats: &[Stats],
    c: usize,
    relu: bool,
    dx: &mut [f32],
) {
    let vox = dy.len() / c;
    let chunk = CHUNK_VOX * c;
    let xhat_at = |base: usize, len: usize| match saved {
        NormSaved::Xhat(x) => Xhat { a: &x[base..][..len], minus: None },
        NormSaved::FromOutput { y, residual } => {
            Xhat { a: &y[base..][..len], minus: residual.map(|r| &r[base..][..len]) }
        }
    };
    let mut slots = vec![0f64; dy.len().div_ceil(chunk) * 2 * c];
    dy.par_chunks_mut(chunk).zip(slots.par_chunks_mut(2 * c)).enumerate().for_each(|(i, (g, slot))| {
        let base = i * chunk;
        let (sg, sgx) = slot.split_at_mut(c);
        let (x, yv) = (xhat_at(base, g.len()), &y[base..][..g.len()]);
        best!(norm_sums(g, x, yv, relu, sg, sgx))
    });
    let (mut sg, mut sgx) = (vec![0f64; c], vec![0f64; c]);
    for slot in slots.chunks_exact(2 * c) {
        for ch in 0..c {
            sg[ch] += slot[ch];
            sgx[ch] += slot[c + ch];
        }
    }
    let mg: Vec<f32> = sg.iter().map(|s| (s / vox as f64) as f32).collect();
    let mgx: Vec<f32> = sgx.iter().map(|s| (s / vox as f64) as f32).collect();
    let rstd: Vec<f32> = stats.iter().map(|s| s.rstd).collect();
    let dy = &*dy;
    dx.par_chunks_mut(chunk).enumerate().for_each(|(i, d)| {
        let base = i * chunk;
        let (x, g) = (xhat_at(base, d.len()), &dy[base..][..d.len()]);
        best!(norm_dx(d, x, g, &mg, &mgx, &rstd))
    });
}

/// A run of xhat: `a`, or `a - minus` (the output minus the residual).
#[derive(Clone, Copy)]
struct Xhat<'a> {
    a: &'a [f32],
    minus: Option<&'a [f32]>,
}

impl Xhat<'_> {
    #[inline(always)]
    fn voxel(&self, v: usize, c: usize) -> impl Fn(usize) -> f32 + '_ {
        let a = &self.a[v * c..][..c];
        let m = self.minus.map(|m| &m[v * c..][..c]);
        move |ch| match m {
            Some(m) => a[ch] - m[ch],
            None => a[ch],
        }
    }
}

/// Calls `$f` compiled for the widest vector unit this CPU has: the bodies are
/// `#[inline(always)]`, so each wrapper holds its own copy of the loops (the same arithmetic,
/// element by element, whichever runs).
macro_rules! best {
    ($f:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            use crate::backend::cpu::conv::{has_avx2_fma, has_avx512f};
            if has_avx512f() {
                // SAFETY: the CPU has AVX-512F (checked at run time).
                unsafe { isa::avx512::$f($($arg),*) }
            } else if has_avx2_fma() {
                // SAFETY: the CPU has AVX2 and FMA (checked at run time).
                unsafe { isa::avx2::$f($($arg),*) }
            } else {
                isa::$f($($arg),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        isa::$f($($arg),*)
    }};
}
use best;

/// The bodies of [`norm_backward`]'s passes and their per-ISA builds.
mod isa {
    use super::Xhat;

    /// `g = dy` masked by `y > 0` (with `relu`), and per channel `sum g`, `sum g * xhat` in f64.
    #[inline(always)]
    pub fn norm_sums(g: &mut [f32], x: Xhat<'_>, y: &[f32], relu: bool, sg: &mut [f64], sgx: &mut [f64]) {
        let c = sg.len();
        let sgx = &mut sgx[..c];
        for (v, (gv, yv)) in g.chunks_exact_mut(c).zip(y.chunks_exact(c)).enumerate() {
            let xh = x.voxel(v, c);
            for ch in 0..c {
                if relu && yv[ch] <= 0.0 {
                    gv[ch] = 0.0;
                }
                sg[ch] += gv[ch] as f64;
                sgx[ch] += gv[ch] as f64 * xh(ch) as f64;
            }
        }
    }

    /// `dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`.
    #[inline(always)]
    pub fn norm_dx(d: &mut [f32], x: Xhat<'_>, g: &[f32], mg: &[f32], mgx: &[f32], rstd: &[f32]) {
        let c = mg.len();
        let (mgx, rstd) = (&mgx[..c], &rstd[..c]);
        for (v, (dv, gv)) in d.chunks_exact_mut(c).zip(g.chunks_exact(c)).enumerate() {
            let xh = x.voxel(v, c);
            for ch in 0..c {
                dv[ch] = rstd[ch] * (gv[ch] - mg[ch] - xh(ch) * mgx[ch]);
            }
        }
    }

    macro_rules! build {
        ($name:ident, $feature:literal) => {
            #[cfg(target_arch = "x86_64")]
            pub mod $name {
                use super::Xhat;

                /// # Safety
                /// The CPU has the module's target features.
                #[target_feature(enable = $feature)]
                pub unsafe fn norm_sums(
                    g: &mut [f32],
                    x: Xhat<'_>,
                    y: &[f32],
                    relu: bool,
                    sg: &mut [f64],
                    sgx: &mut [f64],
                ) {
                    super::norm_sums(g, x, y, relu, sg, sgx)
                }

                /// # Safety
                /// The CPU has the module's target features.
                #[target_feature(enable = $feature)]
                pub unsafe fn norm_dx(d: &mut [f32], x: Xhat<'_>, g: &[f32], mg: &[f32], mgx: &[f32], rstd: &[f32]) {
                    super::norm_dx(d, x, g, mg, mgx, rstd)
                }
            }
        };
    }
    build!(avx2, "avx2,fma");
    build!(avx512, "avx512f");
}

/// Max pool (kernel = stride) backward: each output's gradient goes to the first maximum of
/// its window in row-major `(h, w, d)` order, as PyTorch's CPU kernel picks it.
pub fn max_pool_backward(x: &[f32], dims: Dims, c: usize, k: Dims, dy: &[f32], dx: &mut [f32]) {
    let od = [dims[0] / k[0], dims[1] / k[1], dims[2] / k[2]];
    dx.fill(0.0);
    let plane_in = dims[1] * dims[2] * c;
    // Input planes oh*k0 .. oh*k0+k0 belong to output plane oh alone.
    dx.par_chunks_mut(k[0] * plane_in).enumerate().take(od[0]).for_each(|(oh, dst)| {
        for ow in 0..od[1] {
            for oz in 0..od[2] {
                for ch in 0..c {
                    let mut best = f32::NEG_INFINITY;
                    let mut at = None;
                    for a in 0..k[0] {
                        for b in 0..k[1] {
                            for cc in 0..k[2] {
                                let (h, w, z) = (oh * k[0] + a, ow * k[1] + b, oz * k[2] + cc);
                                let v = x[((h * dims[1] + w) * dims[2] + z) * c + ch];
                                if at.is_none() || v > best || v.is_nan() && !best.is_nan() {
                                    best = v;
                                    at = Some(((a * dims[1] + w) * dims[2] + z) * c + ch);
                                }
                            }
                        }
                    }
                    if let Some(i) = at {
                        dst[i] += dy[((oh * od[1] + ow) * od[2] + oz) * c + ch];
                    }
                }
            }
        }
    });
}

/// Adaptive average pool backward (windows may overlap for sizes that do not divide).
pub fn adaptive_avg_pool_backward(dims: Dims, c: usize, od: Dims, dy: &[f32], dx: &mut [f32]) {
    dx.fill(0.0);
    for oh in 0..od[0] {
        let (h0, h1) = adaptive_window(oh, dims[0], od[0]);
        for ow in 0..od[1] {
            let (w0, w1) = adaptive_window(ow, dims[1], od[1]);
            for oz in 0..od[2] {
                let (z0, z1) = adaptive_window(oz, dims[2], od[2]);
                let n = ((h1 - h0) * (w1 - w0) * (z1 - z0)) as f32;
                let g = &dy[((oh * od[1] + ow) * od[2] + oz) * c..][..c];
                for h in h0..h1 {
                    for w in w0..w1 {
                        for z in z0..z1 {
                            let d = &mut dx[((h * dims[1] + w) * dims[2] + z) * c..][..c];
                            for ch in 0..c {
                                d[ch] += g[ch] / n;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Trilinear (align_corners) resize backward: each output scatters to its 8 corners with the
/// forward's weights.
pub fn resize_trilinear_backward(dims: Dims, c: usize, od: Dims, dy: &[f32], dx: &mut [f32]) {
    let wh = axis_weights(dims[0], od[0]);
    let ww = axis_weights(dims[1], od[1]);
    let wz = axis_weights(dims[2], od[2]);
    let at = |h: usize, w: usize, z: usize| ((h * dims[1] + w) * dims[2] + z) * c;
    dx.fill(0.0);
    for (oh, &h) in wh.iter().enumerate() {
        for (ow, &w) in ww.iter().enumerate() {
            for (oz, &z) in wz.iter().enumerate() {
                let g = &dy[((oh * od[1] + ow) * od[2] + oz) * c..][..c];
                for (base, wgt) in corners(h, w, z, at) {
                    let d = &mut dx[base..][..c];
                    for ch in 0..c {
                        d[ch] += wgt * g[ch];
                    }
                }
            }
        }
    }
}

/// Backward of the decoder's `skip + replicate_pad(conv_transpose(x) + bias)` for one sample,
/// with the transposed conv's kernel equal to its stride `k`. `dy` is the output gradient
/// (`skip_dims`, `cout`), which is also the skip's gradient. Accumulates the weight gradient
/// (PyTorch `(cin, cout, taps)`) and bias gradient, and writes `dx` (`in_dims`, `cin`).
#[allow(clippy::too_many_arguments)]
pub fn up_add_backward(
    x: &[f32],
    in_dims: Dims,
    cin: usize,
    cout: usize,
    k: Dims,
    weight: &[f32],
    skip_dims: Dims,
    dy: &[f32],
    parts: usize,
    dwide: &mut [f32],
    dw: &mut [f32],
    db: &mut [f64],
    dx: &mut [f32],
) {
    let taps = k[0] * k[1] * k[2];
    let wide = taps * cout;
    let up = [in_dims[0] * k[0], in_dims[1] * k[1], in_dims[2] * k[2]];
    let sd = skip_dims;
    // dwide[v][tap][co]: the gradient of the transposed conv's output, folded through the
    // replicate pad (clamped indices add up) and regrouped by source voxel. The caller's
    // buffer (`up_add_scratch_len` floats, reused across samples and steps: it is as large as a
    // full-resolution activation) is cleared here.
    let dwide = &mut dwide[..numel(in_dims) * wide];
    dwide.par_chunks_mut(CHUNK_VOX * 8).for_each(|c| c.fill(0.0));
    let plane = in_dims[1] * in_dims[2] * wide;
    dwide.par_chunks_mut(plane).enumerate().for_each(|(i, dst)| {
        for h in 0..sd[0] {
            let hu = h.min(up[0] - 1);
            if hu / k[0] != i {
                continue;
            }
            for w in 0..sd[1] {
                let wu = w.min(up[1] - 1);
                for z in 0..sd[2] {
                    let zu = z.min(up[2] - 1);
                    let v = (wu / k[1]) * in_dims[2] + zu / k[2];
                    let tap = ((hu % k[0]) * k[1] + wu % k[1]) * k[2] + zu % k[2];
                    let src = &dy[((h * sd[1] + w) * sd[2] + z) * cout..][..cout];
                    let d = &mut dst[(v * taps + tap) * cout..][..cout];
                    for co in 0..cout {
                        d[co] += src[co];
                    }
                }
            }
        }
    });
    // Bias: every upsampled voxel carries it once.
    let dwide = &*dwide;
    for (co, s) in channel_sums(dwide, cout).into_iter().enumerate() {
        db[co] += s;
    }
    // Weight: dW[ci][(tap, co)] = sum_v x[v][ci] * dwide[v][(tap, co)].
    let mut acc = vec![0f32; cin * wide];
    accumulate_at_b(x, &[0], cin, dwide, 0, wide, numel(in_dims), parts, &mut acc);
    for ci in 0..cin {
        for t in 0..taps {
            for co in 0..cout {
                dw[(ci * cout + co) * taps + t] += acc[ci * wide + t * cout + co];
            }
        }
    }
    // Data: dx[v][ci] = sum_(tap, co) dwide[v][(tap, co)] * W[ci][co][tap].
    let mut wt = vec![0f32; wide * cin];
    for ci in 0..cin {
        for co in 0..cout {
            for t in 0..taps {
                wt[(t * cout + co) * cin + ci] = weight[(ci * cout + co) * taps + t];
            }
        }
    }
    matmul(dwide, wide, &wt, cin, dx);
}

/// Floats of [`up_add_backward`]'s scratch for an input of `in_dims` to `cout` channels.
pub fn up_add_scratch_len(in_dims: Dims, cout: usize, k: Dims) -> usize {
    numel(in_dims) * k[0] * k[1] * k[2] * cout
}

/// `d += s` elementwise.
pub fn add_into(d: &mut [f32], s: &[f32]) {
    d.par_chunks_mut(CHUNK_VOX * 8).zip(s.par_chunks(CHUNK_VOX * 8)).for_each(|(d, s)| {
        for (a, b) in d.iter_mut().zip(s) {
            *a += b;
        }
    });
}

/// `x[s][v][c] *= m[s * C + c]` for channels-last samples (a per-sample channel mask).
pub fn scale_channels(x: &mut [f32], c: usize, m: &[f32]) {
    let n = m.len() / c;
    let per = x.len() / n.max(1);
    x.par_chunks_mut(per).enumerate().for_each(|(s, xs)| {
        let ms = &m[s * c..][..c];
        for v in xs.chunks_exact_mut(c) {
            for (a, &k) in v.iter_mut().zip(ms) {
                *a *= k;
            }
        }
    });
}

/// One sample's `x = xhat = (x - mean) * rstd` in place and `y = relu(xhat + r)`, in one pass:
/// the arithmetic of `norm::apply` followed by `relu(xhat + r)`, element by element.
pub fn normalise_relu(x: &mut [f32], y: &mut [f32], c: usize, stats: &[Stats], r: Option<&[f32]>) {
    let hi: Vec<f32> = stats.iter().map(|s| s.mean_hi).collect();
    let lo: Vec<f32> = stats.iter().map(|s| s.mean_lo).collect();
    let rstd: Vec<f32> = stats.iter().map(|s| s.rstd).collect();
    let chunk = CHUNK_VOX * c;
    x.par_chunks_mut(chunk).zip(y.par_chunks_mut(chunk)).enumerate().for_each(|(i, (xc, yc))| {
        let rc = r.map(|r| &r[i * chunk..][..xc.len()]);
        for (v, (xv, yv)) in xc.chunks_exact_mut(c).zip(yc.chunks_exact_mut(c)).enumerate() {
            let (hi, lo, rstd) = (&hi[..c], &lo[..c], &rstd[..c]);
            let rv = rc.map(|r| &r[v * c..][..c]);
            for ch in 0..c {
                let xh = (xv[ch] - hi[ch] - lo[ch]) * rstd[ch];
                xv[ch] = xh;
                let s = xh + rv.map_or(0.0, |r| r[ch]);
                yv[ch] = if s > 0.0 { s } else { 0.0 };
            }
        }
    });
}

/// `g = dy` where `y > 0`, else 0 (ReLU backward from the output), in place.
pub fn relu_mask(g: &mut [f32], y: &[f32]) {
    g.par_chunks_mut(CHUNK_VOX * 8).zip(y.par_chunks(CHUNK_VOX * 8)).for_each(|(g, y)| {
        for (a, &b) in g.iter_mut().zip(y) {
            if b <= 0.0 {
                *a = 0.0;
            }
        }
    });
}

/// Sigmoid backward from the output `w`: `g = dy * w * (1 - w)`, in place.
pub fn sigmoid_backward(g: &mut [f32], w: &[f32]) {
    g.par_chunks_mut(CHUNK_VOX * 8).zip(w.par_chunks(CHUNK_VOX * 8)).for_each(|(g, w)| {
        for (a, &s) in g.iter_mut().zip(w) {
            *a *= s * (1.0 - s);
        }
    });
}

/// Backward of `out = x * w + x` for one sample (`w` with 1 or `c` channels): writes `dx` and
/// `dw` (same shape as `w`).
pub fn attend_backward(x: &[f32], w: &[f32], c: usize, wc: usize, dy: &[f32], dx: &mut [f32], dw: &mut [f32]) {
    dx.par_chunks_mut(CHUNK_VOX * c).zip(dw.par_chunks_mut(CHUNK_VOX * wc)).enumerate().for_each(|(i, (dxc, dwc))| {
        let base = i * CHUNK_VOX;
        for (j, dxv) in dxc.chunks_exact_mut(c).enumerate() {
            let vox = base + j;
            let xv = &x[vox * c..][..c];
            let gv = &dy[vox * c..][..c];
            if wc == 1 {
                let g = w[vox];
                let mut s = 0f32;
                for ch in 0..c {
                    dxv[ch] = gv[ch] * (1.0 + g);
                    s += gv[ch] * xv[ch];
                }
                dwc[j] = s;
            } else {
                let wv = &w[vox * c..][..c];
                let dwv = &mut dwc[j * c..][..c];
                for ch in 0..c {
                    dxv[ch] = gv[ch] * (1.0 + wv[ch]);
                    dwv[ch] = gv[ch] * xv[ch];
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(seed: &mut u64) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }

    /// The instance norm's backward against float64, the same bits on 1 and 3 threads (its sums
    /// are added in chunk order), and each ISA build of its passes giving the same bits.
    #[test]
    fn norm_backward_is_exact_and_deterministic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let (c, vox) = (5, 3 * CHUNK_VOX + 17);
        let xhat: Vec<f32> = (0..c * vox).map(|_| 2.0 * noise(&mut seed)).collect();
        let r: Vec<f32> = (0..c * vox).map(|_| noise(&mut seed)).collect();
        let y: Vec<f32> = xhat.iter().zip(&r).map(|(x, r)| (x + r).max(0.0)).collect();
        let dy: Vec<f32> = (0..c * vox).map(|_| noise(&mut seed)).collect();
        let stats: Vec<Stats> = (0..c).map(|ch| Stats { mean_hi: 0.0, mean_lo: 0.0, rstd: 0.5 + ch as f32 }).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let (mut g, mut dx) = (dy.clone(), vec![0f32; dy.len()]);
            pool.install(|| norm_backward(&mut g, &y, NormSaved::Xhat(&xhat), &stats, c, true, &mut dx));
            (g, dx)
        };
        let (g1, dx1) = run(1);
        let (g3, dx3) = run(3);
        assert!(g1 == g3 && dx1.iter().zip(&dx3).all(|(a, b)| a.to_bits() == b.to_bits()), "thread count changed bits");
        for ch in 0..c {
            let at = |v: usize| v * c + ch;
            let g = |v: usize| if y[at(v)] > 0.0 { dy[at(v)] as f64 } else { 0.0 };
            let mg = (0..vox).map(g).sum::<f64>() / vox as f64;
            let mgx = (0..vox).map(|v| g(v) * xhat[at(v)] as f64).sum::<f64>() / vox as f64;
            for v in 0..vox {
                let want = stats[ch].rstd as f64 * (g(v) - mg - xhat[at(v)] as f64 * mgx);
                assert!((dx1[at(v)] as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()), "dx[{v}][{ch}]");
                assert_eq!(g1[at(v)] as f64, g(v));
            }
        }
        // Without a ReLU the tape keeps no xhat: recomputed as `y - r`, it agrees with the kept
        // form to float32 rounding.
        let linear: Vec<f32> = xhat.iter().zip(&r).map(|(x, r)| x + r).collect();
        let no_relu = |saved| {
            let (mut g, mut dx) = (dy.clone(), vec![0f32; dy.len()]);
            norm_backward(&mut g, &linear, saved, &stats, c, false, &mut dx);
            dx
        };
        let kept = no_relu(NormSaved::Xhat(&xhat));
        let recomputed = no_relu(NormSaved::FromOutput { y: &linear, residual: Some(&r) });
        for (a, b) in recomputed.iter().zip(&kept) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        #[cfg(target_arch = "x86_64")]
        {
            use crate::backend::cpu::conv::{has_avx2_fma, has_avx512f};
            let x = Xhat { a: &xhat, minus: None };
            type Pass<'a> = &'a dyn Fn(&mut [f32], &mut [f64], &mut [f64]);
            let sums = |f: Pass<'_>| {
                let (mut g, mut sg, mut sgx) = (dy.clone(), vec![0f64; c], vec![0f64; c]);
                f(&mut g, &mut sg, &mut sgx);
                (g, sg, sgx)
            };
            let plain = sums(&|g, sg, sgx| isa::norm_sums(g, x, &y, true, sg, sgx));
            if has_avx2_fma() {
                // SAFETY: checked above.
                let v = sums(&|g, sg, sgx| unsafe { isa::avx2::norm_sums(g, x, &y, true, sg, sgx) });
                assert!(v == plain, "AVX2 build differs");
            }
            if has_avx512f() {
                // SAFETY: checked above.
                let v = sums(&|g, sg, sgx| unsafe { isa::avx512::norm_sums(g, x, &y, true, sg, sgx) });
                assert!(v == plain, "AVX-512 build differs");
            }
        }
    }

    /// `c + A^T B` against float64 for every kernel this CPU runs, on shapes that put partial and
    /// shifted tiles on both edges (m, n not multiples of 6, 16 or 32), rows across passes, and
    /// results one or two columns wide (run transposed).
    #[test]
    fn every_outer_kernel_computes_at_b() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || noise(&mut seed);
        for (m, n, rows, a_stride) in [
            (32, 32, 200, 32),
            (16, 33, 129, 20),
            (7, 48, 64, 7),
            (1, 40, 3, 1),
            (13, 16, 70, 13),
            (16, 1, 150, 16),
            (37, 2, 90, 37),
        ] {
            let a: Vec<f32> = (0..rows * a_stride + m).map(|_| next()).collect();
            let b: Vec<f32> = (0..rows * n).map(|_| next()).collect();
            let want: Vec<f64> = (0..m * n)
                .map(|e| (0..rows).map(|r| a[r * a_stride + e / n] as f64 * b[r * n + e % n] as f64).sum())
                .collect();
            for outer in available_outers() {
                // at_b_add adds to what is there.
                let mut c = vec![0.5f32; m * n];
                at_b_add(&a, a_stride, m, &b, n, rows, &mut c, outer);
                for (e, (&got, &w)) in c.iter().map(|&v| v - 0.5).collect::<Vec<_>>().iter().zip(&want).enumerate() {
                    assert!(
                        (got as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "width {} m {m} n {n} rows {rows}: entry {e} is {got}, float64 {w}",
                        outer.nr
                    );
                }
            }
        }
    }
}
