//! 3-D convolution on the CPU: a direct ("implicit GEMM") convolution over a zero-padded
//! channels-last copy of the input.
//!
//! With the input padded to `(H+2ph, W+2pw, D+2pd, Cin)`, every output voxel's window starts at
//! the same padded coordinates as the voxel itself, so tap `(a, b, c)` of a whole run of output
//! rows is the same run of padded rows shifted by one constant. A register-tiled micro-kernel
//! multiplies `MR` consecutive rows by an `NR`-wide panel of packed weights, summing over taps
//! and input channels with no im2col copy. Rows are taken per output plane `h` in padded
//! `(w, d)` order; rows whose `d` falls in the padding are computed and dropped (none for
//! kernels with no extent along D, about 2/D extra otherwise).

use rayon::prelude::*;

use super::scratch::{refill, Scratch};
use crate::backend::ConvSpec;
use crate::tensor::{Dims, HostTensor};

/// Output channels per micro-kernel panel (two AVX2 vectors).
pub const NR: usize = 16;
/// Rows per micro-kernel call (6x16 uses 12 of the 16 AVX2 registers for accumulators).
pub const MR: usize = 6;

/// Convolution weights packed for the micro-kernel: `[cout / NR][tap][cin][NR]`, zero-padded to a
/// whole number of panels; bias likewise.
pub struct PackedConv {
    pub spec: ConvSpec,
    pub w: Vec<f32>,
    pub bias: Vec<f32>,
    pub panels: usize,
    /// For `cout <= NARROW_COUT`: the weights as `[cout][tap][cin]`, for contiguous dot
    /// products (unpacked once here, not per call); empty otherwise.
    narrow: Vec<f32>,
}

impl PackedConv {
    /// `weight` is PyTorch's `(cout, cin, kH, kW, kD)`.
    pub fn new(spec: ConvSpec, weight: &[f32], bias: Option<&[f32]>) -> Self {
        let taps = spec.taps();
        let panels = spec.cout.div_ceil(NR);
        let mut w = vec![0f32; panels * taps * spec.cin * NR];
        // In parallel over panels: the tape packs every layer's weights again each step.
        w.par_chunks_mut(taps * spec.cin * NR).enumerate().for_each(|(p, panel)| {
            for co in p * NR..spec.cout.min(p * NR + NR) {
                for ci in 0..spec.cin {
                    for t in 0..taps {
                        panel[(t * spec.cin + ci) * NR + co % NR] = weight[(co * spec.cin + ci) * taps + t];
                    }
                }
            }
        });
        let mut b = vec![0f32; panels * NR];
        if let Some(bias) = bias {
            b[..spec.cout].copy_from_slice(&bias[..spec.cout]);
        }
        let narrow = if spec.cout <= NARROW_COUT {
            let mut n = vec![0f32; spec.cout * taps * spec.cin];
            for co in 0..spec.cout {
                for t in 0..taps {
                    for ci in 0..spec.cin {
                        n[(co * taps + t) * spec.cin + ci] = weight[(co * spec.cin + ci) * taps + t];
                    }
                }
            }
            n
        } else {
            Vec::new()
        };
        PackedConv { spec, w, bias: b, panels, narrow }
    }

    /// Packs a transposed convolution with kernel = stride as a 1x1 convolution whose output
    /// channels are `(tap, cout)`: `weight` is PyTorch's `(cin, cout, kH, kW, kD)`.
    pub fn from_transposed(cin: usize, cout: usize, k: Dims, weight: &[f32], bias: &[f32]) -> Self {
        let taps = k[0] * k[1] * k[2];
        let wide = taps * cout;
        // As a (wide, cin, 1, 1, 1) convolution weight.
        let mut w = vec![0f32; wide * cin];
        for ci in 0..cin {
            for co in 0..cout {
                for t in 0..taps {
                    w[(t * cout + co) * cin + ci] = weight[(ci * cout + co) * taps + t];
                }
            }
        }
        let b: Vec<f32> = (0..wide).map(|i| bias[i % cout]).collect();
        PackedConv::new(ConvSpec { cin, cout: wide, k: [1, 1, 1], bias: true }, &w, Some(&b))
    }
}

/// Geometry of one convolution over a padded input.
#[derive(Clone, Copy)]
struct Geometry {
    dims: Dims,
    padded: Dims,
    cin: usize,
    cout: usize,
}

/// Copies one sample `(H, W, D, C)` into a zero-padded `(H+2ph, W+2pw, D+2pd, C)` buffer with
/// `slack` extra zero rows at the end (garbage rows of the last plane read up to `kd - 1` rows
/// past the padded volume).
pub fn pad_input(x: &[f32], dims: Dims, c: usize, pad: Dims, out: &mut [f32]) {
    pad_input_with(x, dims, c, pad, out, |dst, src| dst.copy_from_slice(src));
}

/// [`pad_input`] with each row of `dims[2] * c` values written by `copy(dst, src)` instead of
/// copied: the training tape recomputes a saved activation from what it was made of while
/// padding it.
pub fn pad_input_with(
    x: &[f32],
    dims: Dims,
    c: usize,
    pad: Dims,
    out: &mut [f32],
    copy: impl Fn(&mut [f32], &[f32]) + Sync,
) {
    let padded = [dims[0] + 2 * pad[0], dims[1] + 2 * pad[1], dims[2] + 2 * pad[2]];
    let plane = padded[1] * padded[2] * c;
    let (body, tail) = out.split_at_mut(padded[0] * plane);
    tail.fill(0.0);
    body.par_chunks_mut(plane).enumerate().for_each(|(hp, dst)| {
        if hp < pad[0] || hp >= pad[0] + dims[0] {
            dst.fill(0.0);
            return;
        }
        let h = hp - pad[0];
        for (wp, run) in dst.chunks_mut(padded[2] * c).enumerate() {
            if wp < pad[1] || wp >= pad[1] + dims[1] {
                run.fill(0.0);
                continue;
            }
            let w = wp - pad[1];
            let src = &x[(h * dims[1] + w) * dims[2] * c..][..dims[2] * c];
            run[..pad[2] * c].fill(0.0);
            copy(&mut run[pad[2] * c..][..dims[2] * c], src);
            run[(pad[2] + dims[2]) * c..].fill(0.0);
        }
    });
}

/// Number of floats `pad_input` writes for an input of `dims` x `c`.
pub fn padded_len(dims: Dims, c: usize, k: Dims) -> usize {
    let pad = [k[0] / 2, k[1] / 2, k[2] / 2];
    let padded = [dims[0] + 2 * pad[0], dims[1] + 2 * pad[1], dims[2] + 2 * pad[2]];
    (padded[0] * padded[1] * padded[2] + k[2]) * c
}

/// Convolves one sample. `padded` is the output of [`pad_input`] (or the input itself for a
/// kernel with no padding); `out` is `(H, W, D, cout)`. With `sums`, also leaves the output's
/// per-channel `(sum x, sum x^2)` in f64 in `scratch.totals`: the instance norm's statistics,
/// gathered while the output is still in registers.
pub fn conv_sample(padded: &[f32], dims: Dims, conv: &PackedConv, out: &mut [f32], scratch: &mut Scratch, sums: bool) {
    let spec = conv.spec;
    let pad = spec.pad();
    let g = Geometry {
        dims,
        padded: [dims[0] + 2 * pad[0], dims[1] + 2 * pad[1], dims[2] + 2 * pad[2]],
        cin: spec.cin,
        cout: spec.cout,
    };
    let k = spec.k;
    let Scratch { slots, totals, offsets, .. } = scratch;
    // Row offset of each tap relative to the window origin, in floats.
    offsets.clear();
    offsets.extend(
        (0..k[0])
            .flat_map(|a| (0..k[1]).flat_map(move |b| (0..k[2]).map(move |c| (a, b, c))))
            .map(|(a, b, c)| ((a * g.padded[1] + b) * g.padded[2] + c) * g.cin),
    );
    let offsets = &offsets[..];
    let plane_out = dims[1] * dims[2] * g.cout;
    let kernel = select_kernel();
    par_chunks_with_sums(out, plane_out, g.cout, sums.then_some((slots, totals)), |h, out_plane, acc| {
        conv_plane_best(padded, &g, conv, offsets, h, out_plane, kernel, acc)
    });
}

/// One output plane by the kernel that suits the output width: dot products for a few
/// channels, the register-tiled micro-kernel otherwise.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn conv_plane_any(
    padded: &[f32],
    g: &Geometry,
    conv: &PackedConv,
    offsets: &[usize],
    h: usize,
    out_plane: &mut [f32],
    kernel: Kernels,
    sums: Option<&mut [(f64, f64)]>,
) {
    if g.cout > NARROW_COUT {
        return conv_plane(padded, g, conv, offsets, h, out_plane, kernel, sums);
    }
    conv_plane_narrow(padded, g, conv, offsets, h, out_plane);
    if let Some(acc) = sums {
        for v in out_plane.chunks_exact(g.cout) {
            for (a, &x) in acc.iter_mut().zip(v) {
                a.0 += x as f64;
                a.1 += x as f64 * x as f64;
            }
        }
    }
}

/// Adds one output row's values and their squares into per-channel float64 sums, the two kept
/// apart so the loop vectorises (`(sum, sum of squares)` pairs would need shuffles).
#[inline(always)]
pub(crate) fn add_row_stats(sum: &mut [f64], sq: &mut [f64], row: &[f32]) {
    for ((a, b), &v) in sum.iter_mut().zip(sq.iter_mut()).zip(row) {
        *a += v as f64;
        *b += v as f64 * v as f64;
    }
}

/// Adds sums gathered by [`add_row_stats`] into a chunk's `(sum, sum of squares)` slot: into a
/// slot still zero, the very sums, bit for bit.
pub(crate) fn add_into_slot(slot: &mut [(f64, f64)], sum: &[f64], sq: &[f64]) {
    for ((s, &a), &b) in slot.iter_mut().zip(sum).zip(sq) {
        s.0 += a;
        s.1 += b;
    }
}

/// Per-chunk partial sums and their totals (see [`par_chunks_with_sums`]).
pub(crate) type SumsOut<'a> = (&'a mut Vec<(f64, f64)>, &'a mut Vec<(f64, f64)>);

/// Runs `f(index, chunk, sums)` over `out`'s chunks of `chunk` floats in parallel. With `sums`,
/// each chunk adds its output's per-channel `(sum, sum of squares)` into a slot of its own and
/// the slots are totalled in chunk order into `sums.1`: the same statistics to the bit
/// whichever thread ran which chunk (a parallel reduce would add them in the order work was
/// stolen), in vectors reused from call to call.
pub(crate) fn par_chunks_with_sums(
    out: &mut [f32],
    chunk: usize,
    channels: usize,
    sums: Option<SumsOut<'_>>,
    f: impl Fn(usize, &mut [f32], Option<&mut [(f64, f64)]>) + Sync,
) {
    let Some((slots, totals)) = sums else {
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c, None));
        return;
    };
    let slots = refill(slots, out.len().div_ceil(chunk) * channels, (0.0, 0.0));
    out.par_chunks_mut(chunk).zip(slots.par_chunks_mut(channels)).enumerate().for_each(|(i, (c, s))| f(i, c, Some(s)));
    let totals = refill(totals, channels, (0.0, 0.0));
    for s in slots.chunks_exact(channels) {
        for (t, v) in totals.iter_mut().zip(s) {
            t.0 += v.0;
            t.1 += v.1;
        }
    }
}

/// Output channels up to which the dot-product path beats a zero-padded 16-wide panel.
const NARROW_COUT: usize = 4;

/// Convolution to very few output channels (the attention maps' 1, the logits' 2): one dot
/// product per output over `taps x cin`, vectorised over 8 input channels at a time.
#[inline(always)]
fn conv_plane_narrow(
    padded: &[f32],
    g: &Geometry,
    conv: &PackedConv,
    offsets: &[usize],
    h: usize,
    out_plane: &mut [f32],
) {
    let plane_base = h * g.padded[1] * g.padded[2] * g.cin;
    let taps = offsets.len();
    let wt = &conv.narrow;
    let (chunks8, rem) = (g.cin / 8, g.cin % 8);
    for w in 0..g.dims[1] {
        for d in 0..g.dims[2] {
            let a_base = plane_base + (w * g.padded[2] + d) * g.cin;
            let mut lanes = [[0f32; 8]; NARROW_COUT];
            let mut tail = [0f32; NARROW_COUT];
            for (t, &off) in offsets.iter().enumerate() {
                let a = &padded[a_base + off..][..g.cin];
                let (a8, ar) = a.as_chunks::<8>();
                for co in 0..g.cout {
                    let wv = &wt[(co * taps + t) * g.cin..][..g.cin];
                    let (w8, wr) = wv.as_chunks::<8>();
                    for (x, y) in a8[..chunks8].iter().zip(&w8[..chunks8]) {
                        for i in 0..8 {
                            lanes[co][i] += x[i] * y[i];
                        }
                    }
                    for (x, y) in ar[..rem].iter().zip(&wr[..rem]) {
                        tail[co] += x * y;
                    }
                }
            }
            let dst = &mut out_plane[(w * g.dims[2] + d) * g.cout..][..g.cout];
            for (co, o) in dst.iter_mut().enumerate() {
                *o = lanes[co].iter().sum::<f32>() + tail[co] + conv.bias[co];
            }
        }
    }
}

pub(crate) type Kernel =
    unsafe fn(a: *const f32, cin: usize, offsets: &[usize], b: *const f32, acc: &mut [[f32; NR]; MR]);

/// A micro-kernel over two panels at once (`b0`, `b1`: the same `(tap, cin)` walk of panels `p`
/// and `p + 1`), `MR x 2NR` outputs.
pub(crate) type PairKernel = unsafe fn(
    a: *const f32,
    cin: usize,
    offsets: &[usize],
    b0: *const f32,
    b1: *const f32,
    acc: &mut [[f32; 2 * NR]; MR],
);

/// The micro-kernels this CPU runs: one panel, and two at once where the vector unit is wide
/// enough (AVX-512). Every output is the same sum of fused multiply-adds in the same order in
/// both (on AVX2 machines too), so the choice does not change a bit of the result.
#[derive(Clone, Copy)]
pub(crate) struct Kernels {
    pub one: Kernel,
    pub pair: Option<PairKernel>,
}

impl Kernels {
    /// Panels to take at `p` (of `panels`): 2 where the pair kernel runs, else 1.
    pub fn step(&self, p: usize, panels: usize) -> usize {
        if self.pair.is_some() && p + 1 < panels {
            2
        } else {
            1
        }
    }

    /// `MR` rows from `a` against panels `p` (and `p + 1` when `width` is 2 NR) of `wpanels`
    /// (`panel_len` floats each), into `acc`; returns the rows as slices of `width` floats.
    ///
    /// # Safety
    /// As for [`Kernel`]: `a` readable at `r * cin + off + ci` for `r < MR`, every offset,
    /// `ci < cin`; each panel holds `offsets.len() * cin * NR` floats.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run<'a>(
        &self,
        a: *const f32,
        cin: usize,
        offsets: &[usize],
        panel: *const f32,
        panel_len: usize,
        width: usize,
        acc: &'a mut Acc,
    ) -> [&'a [f32]; MR] {
        match (width == 2 * NR, self.pair) {
            (true, Some(k2)) => {
                k2(a, cin, offsets, panel, panel.add(panel_len), &mut acc.pair);
                acc.pair.each_ref().map(|r| &r[..])
            }
            _ => {
                (self.one)(a, cin, offsets, panel, &mut acc.one);
                acc.one.each_ref().map(|r| &r[..])
            }
        }
    }
}

/// Accumulator tiles for [`Kernels::run`].
pub(crate) struct Acc {
    one: [[f32; NR]; MR],
    pair: [[f32; 2 * NR]; MR],
}

impl Default for Acc {
    fn default() -> Self {
        Acc { one: [[0.0; NR]; MR], pair: [[0.0; 2 * NR]; MR] }
    }
}

pub(crate) fn select_kernel() -> Kernels {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            let pair = has_avx512f().then_some(avx512::kernel_6x32 as PairKernel);
            return Kernels { one: avx2::kernel_6x16, pair };
        }
    }
    Kernels { one: kernel_generic, pair: None }
}

/// Whether this CPU runs AVX2 and FMA code (detected once, then a cached load).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Whether this CPU runs AVX-512F code (the training tape's weight-gradient kernel).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512f() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// [`conv_plane_any`] compiled for AVX2: the dot products and the epilogue (bias, stores, f64
/// statistics) vectorise 8 floats / 4 doubles wide instead of SSE's 4 / 2, with the same
/// arithmetic per element.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn conv_plane_avx2(
    padded: &[f32],
    g: &Geometry,
    conv: &PackedConv,
    offsets: &[usize],
    h: usize,
    out_plane: &mut [f32],
    kernel: Kernels,
    sums: Option<&mut [(f64, f64)]>,
) {
    conv_plane_any(padded, g, conv, offsets, h, out_plane, kernel, sums)
}

/// [`conv_plane_any`] on the widest vector code this CPU runs.
#[allow(clippy::too_many_arguments)]
fn conv_plane_best(
    padded: &[f32],
    g: &Geometry,
    conv: &PackedConv,
    offsets: &[usize],
    h: usize,
    out_plane: &mut [f32],
    kernel: Kernels,
    sums: Option<&mut [(f64, f64)]>,
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked at run time).
        return unsafe { conv_plane_avx2(padded, g, conv, offsets, h, out_plane, kernel, sums) };
    }
    conv_plane_any(padded, g, conv, offsets, h, out_plane, kernel, sums)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn conv_plane(
    padded: &[f32],
    g: &Geometry,
    conv: &PackedConv,
    offsets: &[usize],
    h: usize,
    out_plane: &mut [f32],
    kernel: Kernels,
    mut sums: Option<&mut [(f64, f64)]>,
) {
    let rows = g.dims[1] * g.padded[2];
    let plane_base = h * g.padded[1] * g.padded[2] * g.cin;
    let taps = offsets.len();
    let panel_len = taps * g.cin * NR;
    let max_off = offsets.last().copied().unwrap_or(0);
    let mut acc = Acc::default();
    let mut checked = [[0f32; 2 * NR]; MR];
    let mut p = 0;
    while p < conv.panels {
        let step = kernel.step(p, conv.panels);
        let width = step * NR;
        let wpanels = &conv.w[p * panel_len..][..step * panel_len];
        let bias = &conv.bias[p * NR..][..width];
        let cols = width.min(g.cout - p * NR);
        let mut q0 = 0;
        // Rows already counted in the sums (the shifted last block recomputes a few).
        let mut counted = 0;
        // This panel's statistics, (sum, sum of squares) apart so they vectorise; added into
        // `sums` (zero on entry: one call per chunk) after its last row, so the same bits.
        let (mut s1, mut s2) = ([0f64; 2 * NR], [0f64; 2 * NR]);
        while q0 < rows {
            // The last block is shifted back to stay whole; overlapping rows are recomputed identically.
            let start = if q0 + MR <= rows || rows < MR { q0 } else { rows - MR };
            let n_rows = MR.min(rows - start);
            let a_first = plane_base + start * g.cin;
            let rows_out: [&[f32]; MR] = if n_rows == MR && a_first + (MR - 1) * g.cin + max_off + g.cin <= padded.len()
            {
                // SAFETY: every A row read, `a_first + r*cin + off + ci` for r < MR, off <=
                // max_off, ci < cin, is inside `padded` (checked above); `wpanels` holds `step`
                // panels of taps*cin*NR floats.
                unsafe {
                    kernel.run(
                        padded.as_ptr().add(a_first),
                        g.cin,
                        offsets,
                        wpanels.as_ptr(),
                        panel_len,
                        width,
                        &mut acc,
                    )
                }
            } else {
                for (k, wpanel) in wpanels.chunks_exact(panel_len).enumerate() {
                    let mut one = [[0f32; NR]; MR];
                    kernel_checked(padded, a_first, n_rows, g.cin, offsets, wpanel, &mut one);
                    for (dst, src) in checked.iter_mut().zip(&one) {
                        dst[k * NR..][..NR].copy_from_slice(src);
                    }
                }
                checked.each_ref().map(|r| &r[..])
            };
            for (r, acc_row) in rows_out.iter().enumerate().take(n_rows) {
                let q = start + r;
                let (w, d) = (q / g.padded[2], q % g.padded[2]);
                if d >= g.dims[2] {
                    continue;
                }
                let dst = &mut out_plane[(w * g.dims[2] + d) * g.cout + p * NR..][..cols];
                for j in 0..cols {
                    dst[j] = acc_row[j] + bias[j];
                }
                if sums.is_some() && q >= counted {
                    add_row_stats(&mut s1, &mut s2, dst);
                }
            }
            counted = start + n_rows;
            q0 = start + MR;
        }
        if let Some(sums) = sums.as_deref_mut() {
            add_into_slot(&mut sums[p * NR..][..cols], &s1, &s2);
        }
        p += step;
    }
}

/// Portable micro-kernel (any CPU); LLVM vectorises the inner `NR` loop.
///
/// # Safety
/// `a` must be valid for reads at `r*cin + off + ci` for `r < MR`, every `off` in `offsets`,
/// `ci < cin`; `b` for `offsets.len()*cin*NR` floats.
unsafe fn kernel_generic(a: *const f32, cin: usize, offsets: &[usize], b: *const f32, acc: &mut [[f32; NR]; MR]) {
    *acc = [[0.0; NR]; MR];
    let mut bp = b;
    for &off in offsets {
        for ci in 0..cin {
            let brow = std::slice::from_raw_parts(bp, NR);
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let av = *a.add(r * cin + off + ci);
                for j in 0..NR {
                    acc_row[j] += av * brow[j];
                }
            }
            bp = bp.add(NR);
        }
    }
}

/// Bounds-checked kernel for blocks too close to the buffer's end (tiny tensors only).
fn kernel_checked(
    padded: &[f32],
    a_first: usize,
    n_rows: usize,
    cin: usize,
    offsets: &[usize],
    wpanel: &[f32],
    acc: &mut [[f32; NR]; MR],
) {
    *acc = [[0.0; NR]; MR];
    for (t, &off) in offsets.iter().enumerate() {
        for ci in 0..cin {
            let brow = &wpanel[(t * cin + ci) * NR..][..NR];
            for (r, acc_row) in acc.iter_mut().enumerate().take(n_rows) {
                let av = padded.get(a_first + r * cin + off + ci).copied().unwrap_or(0.0);
                for j in 0..NR {
                    acc_row[j] += av * brow[j];
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// 6x16 AVX2/FMA micro-kernel: 12 accumulator registers, two weight vectors and one broadcast.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA; pointers as for `kernel_generic`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel_6x16(a: *const f32, cin: usize, offsets: &[usize], b: *const f32, acc: &mut [[f32; NR]; MR]) {
        let mut c00 = _mm256_setzero_ps();
        let mut c01 = _mm256_setzero_ps();
        let mut c10 = _mm256_setzero_ps();
        let mut c11 = _mm256_setzero_ps();
        let mut c20 = _mm256_setzero_ps();
        let mut c21 = _mm256_setzero_ps();
        let mut c30 = _mm256_setzero_ps();
        let mut c31 = _mm256_setzero_ps();
        let mut c40 = _mm256_setzero_ps();
        let mut c41 = _mm256_setzero_ps();
        let mut c50 = _mm256_setzero_ps();
        let mut c51 = _mm256_setzero_ps();
        let mut bp = b;
        for &off in offsets {
            let a0 = a.add(off);
            let (a1, a2, a3, a4, a5) =
                (a0.add(cin), a0.add(2 * cin), a0.add(3 * cin), a0.add(4 * cin), a0.add(5 * cin));
            for ci in 0..cin {
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                bp = bp.add(NR);
                let x = _mm256_broadcast_ss(&*a0.add(ci));
                c00 = _mm256_fmadd_ps(x, b0, c00);
                c01 = _mm256_fmadd_ps(x, b1, c01);
                let x = _mm256_broadcast_ss(&*a1.add(ci));
                c10 = _mm256_fmadd_ps(x, b0, c10);
                c11 = _mm256_fmadd_ps(x, b1, c11);
                let x = _mm256_broadcast_ss(&*a2.add(ci));
                c20 = _mm256_fmadd_ps(x, b0, c20);
                c21 = _mm256_fmadd_ps(x, b1, c21);
                let x = _mm256_broadcast_ss(&*a3.add(ci));
                c30 = _mm256_fmadd_ps(x, b0, c30);
                c31 = _mm256_fmadd_ps(x, b1, c31);
                let x = _mm256_broadcast_ss(&*a4.add(ci));
                c40 = _mm256_fmadd_ps(x, b0, c40);
                c41 = _mm256_fmadd_ps(x, b1, c41);
                let x = _mm256_broadcast_ss(&*a5.add(ci));
                c50 = _mm256_fmadd_ps(x, b0, c50);
                c51 = _mm256_fmadd_ps(x, b1, c51);
            }
        }
        let o = acc.as_mut_ptr() as *mut f32;
        for (r, (lo, hi)) in
            [(c00, c01), (c10, c11), (c20, c21), (c30, c31), (c40, c41), (c50, c51)].into_iter().enumerate()
        {
            _mm256_storeu_ps(o.add(r * NR), lo);
            _mm256_storeu_ps(o.add(r * NR + 8), hi);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// 6x32 AVX-512 micro-kernel over two panels: 12 accumulator registers of 16 floats, one
    /// weight vector from each panel and one broadcast per row. Each output is the same chain
    /// of fused multiply-adds as in `avx2::kernel_6x16`.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `a` as for `kernel_generic`, `b0` and `b1` each valid for
    /// `offsets.len()*cin*NR` floats.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn kernel_6x32(
        a: *const f32,
        cin: usize,
        offsets: &[usize],
        b0: *const f32,
        b1: *const f32,
        acc: &mut [[f32; 2 * NR]; MR],
    ) {
        let mut c = [_mm512_setzero_ps(); 2 * MR];
        let (mut p0, mut p1) = (b0, b1);
        for &off in offsets {
            let a0 = a.add(off);
            for ci in 0..cin {
                let (w0, w1) = (_mm512_loadu_ps(p0), _mm512_loadu_ps(p1));
                p0 = p0.add(NR);
                p1 = p1.add(NR);
                for r in 0..MR {
                    let x = _mm512_set1_ps(*a0.add(r * cin + ci));
                    c[2 * r] = _mm512_fmadd_ps(x, w0, c[2 * r]);
                    c[2 * r + 1] = _mm512_fmadd_ps(x, w1, c[2 * r + 1]);
                }
            }
        }
        for (r, row) in acc.iter_mut().enumerate() {
            _mm512_storeu_ps(row.as_mut_ptr(), c[2 * r]);
            _mm512_storeu_ps(row.as_mut_ptr().add(NR), c[2 * r + 1]);
        }
    }
}

/// Host-tensor convenience used by tests: PyTorch-layout in and out, one thread pool's worth.
pub fn conv_host(x: &HostTensor, weight: &HostTensor, bias: Option<&[f32]>) -> HostTensor {
    let (n, cin, dims) = x.ncdims().expect("5-D input");
    let spec = ConvSpec {
        cin,
        cout: weight.shape[0],
        k: [weight.shape[2], weight.shape[3], weight.shape[4]],
        bias: bias.is_some(),
    };
    let conv = PackedConv::new(spec, &weight.data, bias);
    let vox = dims[0] * dims[1] * dims[2];
    let mut out = vec![0f32; n * spec.cout * vox];
    for s in 0..n {
        let cl = super::layout::to_channels_last(&x.data[s * cin * vox..][..cin * vox], cin, vox);
        let mut padded = vec![0f32; padded_len(dims, cin, spec.k)];
        pad_input(&cl, dims, cin, spec.pad(), &mut padded);
        let mut o = vec![0f32; vox * spec.cout];
        conv_sample(&padded, dims, &conv, &mut o, &mut Scratch::default(), false);
        out[s * spec.cout * vox..][..spec.cout * vox]
            .copy_from_slice(&super::layout::to_channels_first(&o, spec.cout, vox));
    }
    HostTensor { shape: vec![n, spec.cout, dims[0], dims[1], dims[2]], data: out }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two-panel kernel must give the one-panel kernel's bits (the README's and the tests'
    /// numbers then hold on AVX2 and AVX-512 machines alike). Runs where the CPU has both.
    #[test]
    fn pair_kernel_matches_two_single_panels_bit_for_bit() {
        let k = select_kernel();
        let Some(pair) = k.pair else {
            eprintln!("no two-panel kernel on this CPU: nothing to compare");
            return;
        };
        let (cin, offsets) = (7, [0usize, 7, 70, 77]);
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let a: Vec<f32> = (0..MR * cin + 77 + cin).map(|_| next()).collect();
        let panel_len = offsets.len() * cin * NR;
        let w: Vec<f32> = (0..2 * panel_len).map(|_| next()).collect();
        let mut both = [[0f32; 2 * NR]; MR];
        let (mut p0, mut p1) = ([[0f32; NR]; MR], [[0f32; NR]; MR]);
        // SAFETY: `a` holds MR rows of cin past the largest offset; each panel holds
        // offsets.len() * cin * NR floats.
        unsafe {
            pair(a.as_ptr(), cin, &offsets, w.as_ptr(), w.as_ptr().add(panel_len), &mut both);
            (k.one)(a.as_ptr(), cin, &offsets, w.as_ptr(), &mut p0);
            (k.one)(a.as_ptr(), cin, &offsets, w.as_ptr().add(panel_len), &mut p1);
        }
        for r in 0..MR {
            assert_eq!(both[r][..NR], p0[r], "row {r}, first panel");
            assert_eq!(both[r][NR..], p1[r], "row {r}, second panel");
        }
    }
}
