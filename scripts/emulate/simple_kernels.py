"""Runs every kernel except conv_mma on the CPU (host_shim.h) and compares with numpy:
pools, resize, elementwise, statistics, direct conv (with its statistics partials), window
kernels; lazy (pending-norm) inputs included. Built and run by scripts/emulate/run.sh."""
import ctypes, itertools, os, sys
import numpy as np
L = ctypes.CDLL(os.environ["FMSEG_EMU_LIB"])
P = ctypes.c_void_p
rng = np.random.default_rng(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
def ptr(a): return None if a is None else a.ctypes.data_as(P)
def h16(shape, scale=1.0, off=0.0): return (rng.uniform(-1, 1, shape) * scale + off).astype(np.float16)
def rel(a, b): return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)
def ok(name, got, want, tol=1.5e-3):
    got = np.asarray(got, np.float64); want = np.asarray(want, np.float64)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert np.isfinite(got).all(), f"{name}: non-finite at {np.argwhere(~np.isfinite(got))[:3]}"
    e = rel(got, want); print(f"{name}: rel {e:.2e}"); assert e < tol, name
def lazy(x, relu):  # x (N, H, W, D, C) fp16 -> stats (N, C, 2) and the normalised values
    xf = x.astype(np.float64); m = xf.mean(axis=(1, 2, 3)); v = xf.var(axis=(1, 2, 3)); r = 1 / np.sqrt(v + 1e-5)
    st = np.stack([m, r], -1).astype(np.float32)
    y = (xf - m[:, None, None, None, :]) * r[:, None, None, None, :]
    return st, (np.maximum(y, 0) if relu else y)
I = ctypes.c_int
# ---- pools and resize
for (c, dims, k) in [(8, (7, 9, 5), (2, 2, 1)), (3, (9, 13, 10), (4, 4, 4)), (16, (12, 5, 3), (12, 1, 1)), (1, (4, 3, 17), (1, 1, 8))]:
    n = 2
    x = h16((n,) + dims + (c,)); st, xn = lazy(x, True)
    for use_lazy in (0, 1):
        od = tuple(dims[i] // k[i] for i in range(3))
        y = np.full((n,) + od + (c,), np.nan, np.float16)
        L.pool(0, I(c % 8 == 0), ptr(x), ptr(st) if use_lazy else None, I(use_lazy), ptr(y), n, c, *dims, *od, *k)
        src = xn if use_lazy else x.astype(np.float64)
        want = src[:, :od[0] * k[0], :od[1] * k[1], :od[2] * k[2], :].reshape(n, od[0], k[0], od[1], k[1], od[2], k[2], c).max(axis=(2, 4, 6))
        ok(f"max_pool c={c} {dims} k={k} lazy={use_lazy}", y, want)
    od = tuple(max(1, dd // 2) for dd in dims)
    y = np.full((n,) + od + (c,), np.nan, np.float16)
    L.pool(1, I(c % 8 == 0), ptr(x), ptr(st), I(1), ptr(y), n, c, *dims, *od, 1, 1, 1)
    want = np.zeros((n,) + od + (c,))
    win = lambda i, a, b: (i * a // b, -(-(i + 1) * a // b))
    for a, b2, cc in itertools.product(range(od[0]), range(od[1]), range(od[2])):
        h0, h1 = win(a, dims[0], od[0]); w0, w1 = win(b2, dims[1], od[1]); d0, d1 = win(cc, dims[2], od[2])
        want[:, a, b2, cc] = xn[:, h0:h1, w0:w1, d0:d1].mean(axis=(1, 2, 3))
    ok(f"avg_pool c={c} {dims}->{od}", y, want)
    for od in [(dims[0] * 2 + 1, dims[1] + 3, dims[2] * 2), (1, dims[1] + 1, 3)]:
        y = np.full((n,) + od + (c,), np.nan, np.float16)
        L.pool(2, I(c % 8 == 0), ptr(x), ptr(st), I(1), ptr(y), n, c, *dims, *od, 1, 1, 1)
        def ax(o, i):
            s = np.arange(o) * ((i - 1) / (o - 1)) if o > 1 else np.zeros(1)
            i0 = np.minimum(np.floor(s).astype(int), i - 1); i1 = np.minimum(i0 + 1, i - 1); return i0, i1, s - i0
        (a0, a1, fa), (b0, b1, fb), (c0, c1, fc) = ax(od[0], dims[0]), ax(od[1], dims[1]), ax(od[2], dims[2])
        t = xn[:, a0] * (1 - fa)[None, :, None, None, None] + xn[:, a1] * fa[None, :, None, None, None]
        t = t[:, :, b0] * (1 - fb)[None, None, :, None, None] + t[:, :, b1] * fb[None, None, :, None, None]
        t = t[:, :, :, c0] * (1 - fc)[None, None, None, :, None] + t[:, :, :, c1] * fc[None, None, None, :, None]
        ok(f"resize c={c} {dims}->{od}", y, t)
# ---- elementwise
Arr = ctypes.c_void_p * 4; IArr = ctypes.c_int * 4
def ew(op, v8, ins, sts, relus, cs, count, relu, y, n, c, dims, flip=0):
    ins = list(ins) + [None] * (4 - len(ins)); sts = list(sts) + [None] * (4 - len(sts))
    relus = list(relus) + [0] * (4 - len(relus)); cs = list(cs) + [1] * (4 - len(cs))
    L.ew(op, v8, Arr(*[ptr(a) for a in ins]), Arr(*[ptr(a) for a in sts]), IArr(*relus), IArr(*cs), count, relu, ptr(y), n, c, *dims, flip)
for c, dims in [(32, (5, 7, 3)), (1, (9, 5, 3)), (3, (4, 6, 5))]:
    n = 2; sh = (n,) + dims + (c,)
    a, b, d = h16(sh), h16(sh), h16(sh)
    sa, an = lazy(a, True)
    v8 = int(c % 8 == 0)
    y = np.full(sh, np.nan, np.float16)
    ew(0, v8, [a, b, d], [sa, None, None], [1, 0, 0], [c, c, c], 3, 1, y, n, c, dims)
    ok(f"sum3 c={c}", y, np.maximum(an + b + d.astype(np.float64), 0))
    y = np.full(sh, np.nan, np.float16)
    w1 = h16((n,) + dims + (1,)); sw, wn = lazy(w1, False)
    ew(1, v8, [a, w1], [sa, sw], [1, 0], [c, 1], 0, 0, y, n, c, dims)
    ok(f"attend broadcast c={c}", y, an * wn + an)
    y = np.full(sh, np.nan, np.float16)
    ew(1, v8, [a, b], [None, None], [0, 0], [c, c], 0, 0, y, n, c, dims)
    ok(f"attend full c={c}", y, a.astype(np.float64) * b + a)
    e = h16((n,) + dims + (8,))
    for first, second in [(a, e), (e, a)]:
        cc = first.shape[-1] + second.shape[-1]
        y = np.full((n,) + dims + (cc,), np.nan, np.float16)
        ew(2, int(first.shape[-1] % 8 == 0 and second.shape[-1] % 8 == 0), [first, second], [None, None], [0, 0], [first.shape[-1], second.shape[-1]], 0, 0, y, n, cc, dims)
        ok(f"concat {first.shape[-1]}+{second.shape[-1]}", y, np.concatenate([first, second], -1))
    y = np.full(sh, np.nan, np.float16)
    ew(3, v8, [a], [None], [0], [c], 0, 0, y, n, c, dims, 5)
    ok(f"flip HD c={c}", y, a[:, ::-1, :, ::-1])
    if c == 1:
        y = np.full(sh, np.nan, np.float16)
        ew(4, 0, [a, w1], [sa, sw], [1, 0], [1, 1], 0, 0, y, n, c, dims)
        ok("sigmoid_sum", y, 1 / (1 + np.exp(-(an + wn))))
    y = np.full((n, c) + dims, np.nan, np.float32)
    ew(5, 0, [a], [sa], [1], [c], 0, 0, y, n, c, dims)
    ok(f"to_ncdhw c={c}", y, np.moveaxis(an, -1, 1), 1e-6)
# ---- stats
for c, dims, off in [(8, (17, 13, 9), 60.0), (3, (5, 7, 4), 0.0), (40, (12, 12, 8), -5.0)]:
    n = 2; x = h16((n,) + dims + (c,), 1.0, off); vox = int(np.prod(dims))
    tiles = (vox + 127) // 128
    part = np.zeros((n, tiles, c, 2), np.float32); out = np.full((n, c, 2), np.nan, np.float32)
    L.stats(ptr(x), None, 0, ptr(part), ptr(out), n, c, vox)
    st, _ = lazy(x, False)
    ok(f"stats mean c={c} off={off}", out[..., 0], st[..., 0], 1e-6); ok(f"stats rstd c={c}", out[..., 1], st[..., 1], 1e-5)
# ---- direct conv
def conv_ref(x, w, b, k):
    N, H, W, D, C = x.shape; pad = [kk // 2 for kk in k]
    xp = np.pad(x, ((0, 0), (pad[0], pad[0]), (pad[1], pad[1]), (pad[2], pad[2]), (0, 0))); out = np.zeros((N, H, W, D, w.shape[0]))
    for a, bb, cc in itertools.product(range(k[0]), range(k[1]), range(k[2])):
        out += np.einsum("nhwdc,oc->nhwdo", xp[:, a:a + H, bb:bb + W, cc:cc + D, :], w[:, :, a, bb, cc])
    return out + b
for cin, cout, cob, k, dims, use_lazy, smem in [(1, 32, 32, (3, 3, 1), (7, 9, 5), 0, 1), (16, 1, 1, (3, 1, 1), (13, 11, 3), 1, 1), (32, 2, 2, (1, 1, 1), (5, 6, 7), 1, 0),
                                                (3, 5, 8, (3, 3, 3), (4, 5, 6), 0, 1), (24, 40, 32, (1, 3, 3), (3, 7, 5), 1, 0)]:
    n = 2; x = h16((n,) + dims + (cin,)); st, xn = lazy(x, True)
    taps = int(np.prod(k)); w = (rng.uniform(-1, 1, (cout, cin) + k) / np.sqrt(cin * taps)).astype(np.float16).astype(np.float64)
    b = rng.uniform(-0.5, 0.5, cout).astype(np.float32)
    padded = -(-cout // cob) * cob
    wf = np.zeros((padded, taps, cin), np.float32); wf[:cout] = np.transpose(w.reshape(cout, cin, taps), (0, 2, 1))
    vox = int(np.prod(dims)); tiles = (vox + 127) // 128
    y = np.full((n,) + dims + (cout,), np.nan, np.float16); part = np.full((n, tiles, cout, 2), np.nan, np.float32)
    L.conv_direct(cob, ptr(x), ptr(st) if use_lazy else None, use_lazy, cin, ptr(wf), ptr(b), ptr(y), ptr(part), n, *dims, cout, *k, smem)
    src = xn if use_lazy else x.astype(np.float64)
    want = conv_ref(src, w, b, k)
    ok(f"conv_direct cob={cob} {cin}->{cout} k={k} lazy={use_lazy}", y, want, 2e-3)
    out = np.zeros((n, cout, 2), np.float32)
    yf = y.astype(np.float64).reshape(n, vox, cout)
    for s in range(n):
        for ch in range(cout):
            cnt = mean = m2 = 0.0
            for t in range(tiles):
                nb = min(128, vox - t * 128); pm, pq = part[s, t, ch]; tot = cnt + nb; dl = pm - mean; mean += dl * nb / tot; m2 += pq + dl * dl * cnt * nb / tot; cnt = tot
            assert abs(mean - yf[s, :, ch].mean()) < 1e-5 * (1 + abs(yf[s, :, ch].mean())) and abs(m2 / vox - yf[s, :, ch].var()) < 1e-4 * yf[s, :, ch].var() + 1e-9, ("stats", s, ch)
    print("  partials merge to the stored values' moments")
# ---- window
vol = (37, 29, 11); roi = (16, 12, 8)
img = rng.uniform(-1, 1, (1,) + vol).astype(np.float32)
origins = [((0, 0, 0), 0), ((21, 17, 3), 1), ((10, 5, 2), 6), ((21, 0, 3), 7)]
batch = np.full((len(origins),) + roi + (1,), np.nan, np.float16)
for s, (o, f) in enumerate(origins):
    L.window(0, None, None, 1, None, ptr(img), None, None, ptr(batch), s, *vol, *roi, *o, f)
def fl(a, f):
    if f & 1: a = a[::-1]
    if f & 2: a = a[:, ::-1]
    if f & 4: a = a[:, :, ::-1]
    return a
for s, (o, f) in enumerate(origins):
    win = img[0, o[0]:o[0] + roi[0], o[1]:o[1] + roi[1], o[2]:o[2] + roi[2]]
    ok(f"window_extract {s}", batch[s, ..., 0], fl(win, f).astype(np.float16), 1e-7)
logits = h16((len(origins),) + roi + (2,), 3.0); sl, ln = lazy(logits, False)
imp = (0.001 + np.abs(rng.uniform(-1, 1, roi))).astype(np.float32)
acc = np.zeros((2,) + vol, np.float32); ws = np.zeros(vol, np.float32)
for s, (o, f) in enumerate(origins):
    L.window(1, ptr(logits), ptr(sl), 2, ptr(imp), ptr(acc), ptr(ws), None, None, s, *vol, *roi, *o, f)
wacc = np.zeros((2,) + vol); wws = np.zeros(vol)
for s, (o, f) in enumerate(origins):
    sl_ = (slice(o[0], o[0] + roi[0]), slice(o[1], o[1] + roi[1]), slice(o[2], o[2] + roi[2]))
    for ch in range(2):
        wacc[(ch,) + sl_] += fl(imp * ln[s, ..., ch], f)
    wws[sl_] += fl(imp.astype(np.float64), f)
ok("window_accumulate", acc, wacc, 1e-6); ok("window wsum", ws, wws, 1e-6)
L.window(2, None, None, 2, None, ptr(acc), ptr(ws), None, None, 0, *vol, *vol, 0, 0, 0, 0)
cov = wws > 0
ok("window_normalise", acc[:, cov], (wacc / np.where(cov, wws, 1))[:, cov], 1e-6)
mask = np.full(vol, 255, np.uint8)
L.window(4, None, None, 2, None, ptr(acc), None, mask.ctypes.data_as(P), None, 0, *vol, *vol, 0, 0, 0, 0)
want = (acc[1] > acc[0]).astype(np.uint8); assert (mask == want).all(), "argmax"
before = acc.copy()
L.window(3, None, None, 2, None, ptr(acc), None, None, None, 0, *vol, *vol, 0, 0, 0, 0)
ok("softmax", acc[1][cov], (1 / (1 + np.exp(before[0].astype(np.float64) - before[1])))[cov], 1e-6)
print("host emulation: all simple kernels match")
