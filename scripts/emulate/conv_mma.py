#!/usr/bin/env python3
"""Lane-level CPU emulation of kernels/conv_mma.cu, checked against a numpy convolution.

Development tool for machines without a GPU: it re-executes the kernel's index arithmetic
statement by statement (per-thread cp.async rows with the XOR swizzle, the in-place
normalisation, ldmatrix.x4 lane addressing, the m16n8k16 fragment layouts of the PTX ISA,
the epilogue's stores, tile statistics and the transposed variant's scatter with replicate
padding). Copies land either at issue or as late as cp.async.wait_group allows, so reusing a
stage too early shows up as a mismatch. It mirrors the CUDA source by hand: keep the two in step.

    python3 scripts/emulate/conv_mma.py [--seed N]
"""
import argparse
import itertools
import sys

import numpy as np

BM, BK, STAGES, THREADS = 128, 32, 4, 128


def swz(row, chunk):
    return row * BK + ((chunk ^ ((row >> 1) & 3)) << 3)


def ldmatrix_x4(smem, addrs):
    """addrs[lane] = half offset of the 8-half row that lane supplies. Returns regs[lane][j] as
    pairs of halves: matrix j's row r comes from lane 8*j + r; lane t gets row t//4, cols 2*(t%4)..+1."""
    regs = np.zeros((32, 4, 2), dtype=np.float32)
    for j in range(4):
        rows = [smem[addrs[8 * j + r]: addrs[8 * j + r] + 8] for r in range(8)]
        for t in range(32):
            regs[t, j] = rows[t // 4][2 * (t % 4): 2 * (t % 4) + 2]
    return regs


def mma_16816(acc, a, b):
    """acc[lane][4], a[lane][4][2], b[lane][2][2] per the PTX m16n8k16 f16 fragment layouts."""
    A = np.zeros((16, 16), np.float32)
    B = np.zeros((16, 8), np.float32)
    for t in range(32):
        g, q = t >> 2, t & 3
        A[g, 2 * q: 2 * q + 2] = a[t][0]
        A[g + 8, 2 * q: 2 * q + 2] = a[t][1]
        A[g, 2 * q + 8: 2 * q + 10] = a[t][2]
        A[g + 8, 2 * q + 8: 2 * q + 10] = a[t][3]
        B[2 * q: 2 * q + 2, g] = b[t][0]
        B[2 * q + 8: 2 * q + 10, g] = b[t][1]
    C = A.astype(np.float64) @ B.astype(np.float64)
    for t in range(32):
        g, q = t >> 2, t & 3
        acc[t][0] += C[g, 2 * q]
        acc[t][1] += C[g, 2 * q + 1]
        acc[t][2] += C[g + 8, 2 * q]
        acc[t][3] += C[g + 8, 2 * q + 1]


def f16(v):
    return np.float32(np.float16(v))


def run_block(p, BN, convt, bx, by, bz, late_copies):
    NT = BN // 8
    cin, cout = p["cin"], p["cout"]
    H, W, D = p["h"], p["w"], p["d"]
    kh, kw, kd = p["k"]
    vox = H * W * D
    x, stats, relu = p["x"], p["stats"], p["relu"]
    sA = np.full(STAGES * BM * BK, np.nan, np.float32)
    sB = np.full(STAGES * BN * BK, np.nan, np.float32)
    tile, nb = bx, by
    if convt:
        offs = kh * kw * kd
        n, off = bz // offs, bz % offs
    else:
        n, off = bz, 0
    taps = 1 if convt else kh * kw * kd
    cchunks = cin // BK
    ktiles = taps * cchunks
    row0 = tile * BM
    norm = stats is not None or relu
    sNorm = np.zeros((cin, 2), np.float32)
    if norm:
        for c in range(cin):
            mean, rstd = (stats[n, c] if stats is not None else (0.0, 1.0))
            sNorm[c] = (rstd, -mean * rstd)
    # per-thread row coordinates
    th_rows = []
    for tid in range(THREADS):
        v = row0 + tid
        ok = v < vox
        vh = vw = vd = 0
        if ok:
            vd = v % D
            t = v // D
            vw = t % W
            vh = t // W
        th_rows.append((ok, vh, vw, vd))
    xflat = x.reshape(-1)  # (N, H, W, D, Cin) fp16 values as float32
    wflat = p["wt"].reshape(-1)
    wbase = (off * cout * cin if convt else 0) + nb * BN * taps * cin

    def a_src(tid, kt):
        row_ok, vh, vw, vd = th_rows[tid]
        tap = kt // cchunks
        c0 = (kt - tap * cchunks) * BK
        hh, ww, dd = vh, vw, vd
        if not convt:
            tk = tap % kd
            t2 = tap // kd
            tw = t2 % kw
            thh = t2 // kw
            hh += thh - kh // 2
            ww += tw - kw // 2
            dd += tk - kd // 2
        ok = row_ok and 0 <= hh < H and 0 <= ww < W and 0 <= dd < D
        src = n * vox * cin + ((hh * W + ww) * D + dd) * cin + c0 if ok else 0
        return src, ok

    pending = [[] for _ in range(THREADS)]  # per thread: list of groups, each a list of copies
    current = [[] for _ in range(THREADS)]

    def cp_async(tid, dst_arr, dst, src_arr, src, valid):
        data = src_arr[src: src + 8].copy() if valid else np.zeros(8, np.float32)
        if late_copies:
            current[tid].append((dst_arr, dst, data))
        else:
            dst_arr[dst: dst + 8] = data

    def commit(tid):
        pending[tid].append(current[tid])
        current[tid] = []

    def wait(tid, keep):
        while len(pending[tid]) > keep:
            for arr, dst, data in pending[tid].pop(0):
                arr[dst: dst + 8] = data

    def load_tile(kt, stage):
        for tid in range(THREADS):
            src, ok = a_src(tid, kt)
            for j in range(4):
                cp_async(tid, sA, stage * BM * BK + swz(tid, j), xflat, src + j * 8 if ok else src, ok)
        tap = kt // cchunks
        c0 = (kt - tap * cchunks) * BK
        for tid in range(THREADS):
            for i in range(tid, BN * 4, THREADS):
                r, j = i >> 2, i & 3
                cp_async(tid, sB, stage * BN * BK + swz(r, j), wflat, wbase + (r * taps + tap) * cin + c0 + j * 8, True)

    for s in range(STAGES - 1):
        if s < ktiles:
            load_tile(s, s)
        for tid in range(THREADS):
            commit(tid)

    acc = np.zeros((4, 2, NT, 32, 4), np.float64)  # warp, mi, ni, lane, e
    for kt in range(ktiles):
        stage = kt % STAGES
        for tid in range(THREADS):
            wait(tid, STAGES - 2)
            if norm:
                _, ok = a_src(tid, kt)
                if ok:
                    c0 = (kt % cchunks) * BK
                    base = stage * BM * BK
                    for j in range(4):
                        q = base + swz(tid, j)
                        vals = sA[q: q + 8]
                        out = np.empty(8, np.float32)
                        for e in range(8):
                            sc, sh = sNorm[c0 + j * 8 + e]
                            a = np.float32(vals[e] * sc + sh)
                            if relu:
                                a = max(a, np.float32(0))
                            out[e] = f16(a)
                        sA[q: q + 8] = out
        # __syncthreads
        nxt = kt + STAGES - 1
        if nxt < ktiles:
            load_tile(nxt, nxt % STAGES)
        for tid in range(THREADS):
            commit(tid)
        tA = stage * BM * BK
        tB = stage * BN * BK
        for warp in range(4):
            for ks in range(BK // 16):
                a = []
                for mi in range(2):
                    addrs = [tA + swz(warp * 32 + mi * 16 + (lane & 15), ks * 2 + (lane >> 4)) for lane in range(32)]
                    a.append(ldmatrix_x4(sA, addrs))
                b = [None] * NT
                for nj in range(NT // 2):
                    addrs = [tB + swz(nj * 16 + (lane & 7) + ((lane >> 4) << 3), ks * 2 + ((lane >> 3) & 1)) for lane in range(32)]
                    t4 = ldmatrix_x4(sB, addrs)
                    b[2 * nj] = [[t4[l][0], t4[l][1]] for l in range(32)]
                    b[2 * nj + 1] = [[t4[l][2], t4[l][3]] for l in range(32)]
                for mi in range(2):
                    for ni in range(NT):
                        assert not np.isnan(a[mi]).any() and not np.isnan(np.array(b[ni])).any(), "read of an unfilled stage"
                        mma_16816(acc[warp, mi, ni], a[mi], b[ni])
    for tid in range(THREADS):
        wait(tid, 0)

    # epilogue
    bias = p["bias"]
    cbase = nb * BN
    for warp in range(4):
        for lane in range(32):
            t4_ = lane & 3
            for ni in range(NT):
                col = cbase + ni * 8 + 2 * t4_
                b0 = bias[col] if bias is not None else 0.0
                b1 = bias[col + 1] if bias is not None else 0.0
                for mi in range(2):
                    for e in range(4):
                        acc[warp, mi, ni, lane, e] = f16(np.float32(acc[warp, mi, ni, lane, e]) + np.float32(b1 if e & 1 else b0))
    y = p["y"]
    if not convt:
        for warp in range(4):
            for lane in range(32):
                g, t4_ = lane >> 2, lane & 3
                for mi in range(2):
                    for hr in range(2):
                        vv = row0 + warp * 32 + mi * 16 + g + hr * 8
                        if vv < vox:
                            for ni in range(NT):
                                c = cbase + ni * 8 + 2 * t4_
                                y[n, vv, c] = acc[warp, mi, ni, lane, hr * 2]
                                y[n, vv, c + 1] = acc[warp, mi, ni, lane, hr * 2 + 1]
        if p["partial"] is not None:
            count = min(BM, vox - row0)
            sRed = np.zeros(4 * BN, np.float32)
            for pss in range(2):
                for warp in range(4):
                    for ni in range(NT):
                        for e in range(2):
                            for t4_ in range(4):
                                tot = np.float32(0)
                                for g in range(8):
                                    lane = g * 4 + t4_
                                    for mi in range(2):
                                        for hr in range(2):
                                            if row0 + warp * 32 + mi * 16 + g + hr * 8 < vox:
                                                v = acc[warp, mi, ni, lane, hr * 2 + e]
                                                tot += np.float32(v if pss == 0 else (v - sMean[ni * 8 + 2 * t4_ + e]) ** 2)
                                sRed[warp * BN + ni * 8 + 2 * t4_ + e] = tot
                if pss == 0:
                    sMean = np.array([(sRed[i] + sRed[BN + i] + sRed[2 * BN + i] + sRed[3 * BN + i]) / count for i in range(BN)], np.float32)
                else:
                    for i in range(BN):
                        p["partial"][n, tile, cbase + i] = (sMean[i], sRed[i] + sRed[BN + i] + sRed[2 * BN + i] + sRed[3 * BN + i])
    else:
        oa, ob, oc = off // (kw * kd), (off // kd) % kw, off % kd
        uh, uw, ud = H * kh, W * kw, D * kd
        hs, ws, ds = p["sdims"]
        skip = p["skip"]
        for warp in range(4):
            for lane in range(32):
                g, t4_ = lane >> 2, lane & 3
                for mi in range(2):
                    for hr in range(2):
                        vv = row0 + warp * 32 + mi * 16 + g + hr * 8
                        if vv >= vox:
                            continue
                        id_, t = vv % D, vv // D
                        iw, ih = t % W, t // W
                        qh, qw, qd = ih * kh + oa, iw * kw + ob, id_ * kd + oc
                        if qh >= hs or qw >= ws or qd >= ds:
                            continue
                        h1 = hs - 1 if qh == uh - 1 else qh
                        w1 = ws - 1 if qw == uw - 1 else qw
                        d1 = ds - 1 if qd == ud - 1 else qd
                        for ph in range(qh, h1 + 1):
                            for pw in range(qw, w1 + 1):
                                for pd in range(qd, d1 + 1):
                                    o = (ph * ws + pw) * ds + pd
                                    for ni in range(NT):
                                        c = cbase + ni * 8 + 2 * t4_
                                        y[n, o, c] = acc[warp, mi, ni, lane, hr * 2] + skip[n, o, c]
                                        y[n, o, c + 1] = acc[warp, mi, ni, lane, hr * 2 + 1] + skip[n, o, c + 1]


def conv_ref(x, w, b, k):
    """x (N, H, W, D, Cin) float64, w (Cout, Cin, kh, kw, kd)."""
    N, H, W, D, C = x.shape
    pad = [kk // 2 for kk in k]
    xp = np.pad(x, ((0, 0), (pad[0], pad[0]), (pad[1], pad[1]), (pad[2], pad[2]), (0, 0)))
    out = np.zeros((N, H, W, D, w.shape[0]))
    for a, bb, c in itertools.product(range(k[0]), range(k[1]), range(k[2])):
        out += np.einsum("nhwdc,oc->nhwdo", xp[:, a:a + H, bb:bb + W, c:c + D, :], w[:, :, a, bb, c])
    if b is not None:
        out += b
    return out


def check(name, got, want, tol=2e-3):
    assert not np.isnan(got).any(), f"{name}: NaN (unwritten) outputs at {np.argwhere(np.isnan(got))[:3]}"
    e = np.linalg.norm(got - want) / np.linalg.norm(want)
    print(f"{name}: rel L2 {e:.2e}")
    assert e < tol, name


def conv_case(rng, BN, cin, cout, k, dims, n, lazy, late):
    H, W, D = dims
    vox = H * W * D
    raw = np.float16(rng.uniform(-2, 2, (n, H, W, D, cin))).astype(np.float32)
    w = np.float16(rng.uniform(-1, 1, (cout, cin) + tuple(k)) / np.sqrt(cin)).astype(np.float32)
    b = rng.uniform(-0.5, 0.5, cout).astype(np.float32)
    stats = None
    xin = raw.astype(np.float64)
    if lazy:
        mean = raw.mean(axis=(1, 2, 3))
        rstd = 1 / np.sqrt(raw.var(axis=(1, 2, 3)) + 1e-5)
        stats = np.stack([mean, rstd], -1).astype(np.float32)
        xin = np.maximum((raw - mean[:, None, None, None, :]) * rstd[:, None, None, None, :], 0)
        xin = np.float16(xin).astype(np.float64)
    taps = k[0] * k[1] * k[2]
    wt = np.transpose(w.reshape(cout, cin, taps), (0, 2, 1)).copy()  # (cout, taps, cin)
    tiles = (vox + BM - 1) // BM
    p = dict(cin=cin, cout=cout, h=H, w=W, d=D, k=k, x=raw, stats=stats, relu=lazy, wt=wt, bias=b,
             y=np.full((n, vox, cout), np.nan, np.float32), partial=np.zeros((n, tiles, cout, 2), np.float32))
    for bz in range(n):
        for by in range(cout // BN):
            for bx in range(tiles):
                run_block(p, BN, False, bx, by, bz, late)
    want = conv_ref(xin, w.astype(np.float64), b, k).reshape(n, vox, cout)
    check(f"conv BN={BN} {cin}->{cout} k={k} dims={dims} n={n} lazy={lazy} late={late}", p["y"], want)
    # statistics: merge the tile partials (Chan) and compare with the stored values' moments
    y = p["y"].astype(np.float64)
    for s in range(n):
        for c in range(cout):
            cnt, mean, m2 = 0.0, 0.0, 0.0
            for t in range(tiles):
                nb = min(BM, vox - t * BM)
                pm, pq = p["partial"][s, t, c]
                tot = cnt + nb
                d = pm - mean
                mean += d * nb / tot
                m2 += pq + d * d * cnt * nb / tot
                cnt = tot
            assert abs(mean - y[s, :, c].mean()) < 1e-4 * (1 + abs(y[s, :, c].mean())), "tile mean"
            assert abs(m2 / vox - y[s, :, c].var()) < 1e-4 * y[s, :, c].var(), "tile M2"
    print("  statistics partials merge to the exact mean and variance")


def convt_case(rng, BN, cin, cout, k, din, extra, n, late):
    H, W, D = din
    sd = (H * k[0] + extra[0], W * k[1] + extra[1], D * k[2] + extra[2])
    x = np.float16(rng.uniform(-1, 1, (n, H, W, D, cin))).astype(np.float32)
    w = np.float16(rng.uniform(-1, 1, (cin, cout) + tuple(k)) / np.sqrt(cin)).astype(np.float32)
    b = rng.uniform(-0.5, 0.5, cout).astype(np.float32)
    skip = np.float16(rng.uniform(-1, 1, (n, sd[0] * sd[1] * sd[2], cout))).astype(np.float32)
    offs = k[0] * k[1] * k[2]
    wt = np.transpose(w.reshape(cin, cout, offs), (2, 1, 0)).copy()  # (offs, cout, cin)
    vox = H * W * D
    tiles = (vox + BM - 1) // BM
    p = dict(cin=cin, cout=cout, h=H, w=W, d=D, k=k, x=x, stats=None, relu=False, wt=wt, bias=b,
             y=np.full((n, sd[0] * sd[1] * sd[2], cout), np.nan, np.float32), partial=None, skip=skip, sdims=sd)
    for bz in range(n * offs):
        for by in range(cout // BN):
            for bx in range(tiles):
                run_block(p, BN, True, bx, by, bz, late)
    u = np.zeros((n, H * k[0], W * k[1], D * k[2], cout))
    for a, bb, c in itertools.product(range(k[0]), range(k[1]), range(k[2])):
        u[:, a::k[0], bb::k[1], c::k[2], :] = np.einsum("nhwdc,co->nhwdo", x.astype(np.float64), w[:, :, a, bb, c]) + b
    u = np.pad(u, ((0, 0), (0, extra[0]), (0, extra[1]), (0, extra[2]), (0, 0)), mode="edge")
    want = u.reshape(n, -1, cout) + skip
    check(f"convT BN={BN} {cin}->{cout} k={k} {din}->{sd} late={late}", p["y"], want)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else np.random.SeedSequence().entropy % 2**32
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    conv_case(rng, 32, 32, 32, (3, 3, 1), (5, 7, 6), 2, False, True)
    conv_case(rng, 16, 64, 16, (3, 3, 3), (3, 4, 5), 1, True, True)
    conv_case(rng, 64, 32, 64, (1, 1, 3), (4, 3, 11), 1, True, False)
    conv_case(rng, 32, 64, 32, (3, 1, 3), (2, 5, 3), 1, False, False)
    convt_case(rng, 32, 64, 32, (2, 2, 1), (3, 4, 5), (1, 0, 0), 1, True)
    convt_case(rng, 16, 32, 16, (2, 2, 2), (2, 3, 3), (1, 1, 1), 1, False)
    print("conv_mma emulation: all cases match")


if __name__ == "__main__":
    sys.exit(main())
