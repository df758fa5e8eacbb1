#!/usr/bin/env python3
"""PyTorch baselines for the GPU benchmark table (run by scripts/gpu-check.sh --run on the GPU
machine): the same network (scripts/torch_unet25d.py) on 192x192x16 patches, FP16 autocast,
channels_last_3d, eager and torch.compile, at batch 1, 4, 8. Times with CUDA events after
warm-up, median of repeated passes; prints one 'TORCH BENCH' line per configuration.

    python3 scripts/gpu_bench_torch.py [--weights W.safetensors] [--compile-batches 1,8]

--study times the reference's inference on one preprocessed volume instead (scripts/torch_study.py:
MONAI's sliding window, roi 192x192x16, overlap 0.5, Gaussian blending; the reference's TTA +
fold ensemble), as two variants: `plain` (one fold, one pass) and `full` (--folds x (1 + 3
--tta-rounds) passes: 4 x 13 = 52 by default). Timed from the host volume to the host logits
(upload, every window, blending, noise, flips, the mean, download), with CUDA events on cuda
(FP16 autocast, channels_last_3d) and the wall clock on cpu (float32); one 'TORCH STUDY' line
of key=value fields per (mode, variant).

    python3 scripts/gpu_bench_torch.py --study [--study-dims 288,288,16] [--folds 4] [--tta-rounds 4]
        [--sw-batch 2] [--modes eager,compile] [--device cuda|cpu] [--iters 3] [--warmup 1]

The folds are copies of the same weights (--weights, else PyTorch's seeded default init) and the
volume is seeded normal noise: the time does not depend on the values.
"""
import argparse
import copy
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_study  # noqa: E402
from torch_unet25d import Unet25d, load_weights  # noqa: E402


def time_it(fn, iters):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts), min(ts)


def ints(text, name, count=None):
    try:
        v = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        v = []
    if not v or min(v) < 1 or (count and len(v) != count):
        raise SystemExit(f"{name}: expected {count or 'one or more'} positive integers separated by commas, got {text!r}")
    return v


def study(model, a):
    """Time the study variants; one 'TORCH STUDY' line each."""
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    dims = tuple(ints(a.study_dims, "--study-dims", 3))
    roi = tuple(ints(a.roi, "--roi", 3))
    if roi[0] < 192 or roi[1] < 192 or roi[2] < 16:
        # The context block max-pools by 12 along H and W at 1/16 scale and by 8 along D at 1/2.
        raise SystemExit(f"--roi {a.roi}: the network needs windows of at least 192x192x16")
    if a.folds < 1 or a.tta_rounds < 0 or a.sw_batch < 1 or a.iters < 1 or a.warmup < 0:
        raise SystemExit("--folds, --sw-batch, --iters must be >= 1; --tta-rounds, --warmup >= 0")
    variants = [v for v in a.variants.split(",") if v]
    if not variants or set(variants) - {"plain", "full"}:
        raise SystemExit(f"--variants: plain and/or full, got {a.variants!r}")
    modes = [m for m in a.modes.split(",") if m]
    if not modes or set(modes) - {"eager", "compile"}:
        raise SystemExit(f"--modes: eager and/or compile, got {a.modes!r}")
    # FP16 autocast + channels_last_3d is PyTorch's fast path on a GPU; on the CPU float32 in the
    # default layout is (channels_last_3d is slower there).
    precision = "fp16-autocast" if cuda else "fp32"
    layout = "channels_last_3d" if cuda else "contiguous"
    base = model.to(dev)
    if cuda:
        base = base.to(memory_format=torch.channels_last_3d)
    folds = [base] + [copy.deepcopy(base) for _ in range(a.folds - 1)]
    host = torch.randn(dims, generator=torch.Generator().manual_seed(0))
    if cuda:
        print(f"TORCH STUDY torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    else:
        print(f"TORCH STUDY torch {torch.__version__}, cpu, {torch.get_num_threads()} threads", flush=True)
    wins = len(torch_study.windows(tuple(max(s, r) for s, r in zip(dims, roi)), roi, torch_study.OVERLAP))

    def predictor(m):
        def predict(x):
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            with torch.autocast(dev.type, dtype=torch.float16, enabled=cuda):
                return m(x)
        return predict

    for mode in modes:
        nets = folds if mode == "eager" else [torch.compile(m) for m in folds]
        for variant in variants:
            preds = [predictor(m) for m in (nets if variant == "full" else nets[:1])]
            rounds = a.tta_rounds if variant == "full" else 0
            gen = torch.Generator(device=dev).manual_seed(1)
            passes = len(preds) * (1 + 3 * rounds)

            def once():
                with torch.inference_mode():
                    image = host.to(dev)
                    mean, n = torch_study.tta_ensemble(image, preds, rounds=rounds, generator=gen, roi=roi,
                                                       sw_batch=a.sw_batch)
                    out = mean.cpu()
                assert n == passes and tuple(out.shape[2:]) == dims
                return out

            t0 = time.perf_counter()
            for _ in range(a.warmup):
                once()
            warm_s = time.perf_counter() - t0
            ms = []
            for _ in range(a.iters):
                if cuda:
                    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
                    ev[0].record()
                    once()
                    ev[1].record()
                    ev[1].synchronize()
                    ms.append(ev[0].elapsed_time(ev[1]))
                else:
                    t = time.perf_counter()
                    once()
                    ms.append((time.perf_counter() - t) * 1e3)
            med = statistics.median(ms)
            fields = {
                "mode": f"{precision}-{mode}-{layout}", "device": dev.type, "variant": variant,
                "dims": "x".join(map(str, dims)), "roi": "x".join(map(str, roi)), "folds": len(preds),
                "tta_rounds": rounds, "passes": passes, "windows": passes * wins, "sw_batch": a.sw_batch,
                "ms": f"{med:.1f}", "best_ms": f"{min(ms):.1f}", "ms_per_pass": f"{med / passes:.2f}",
                "patches_per_s": f"{1e3 * passes * wins / med:.1f}", "iters": a.iters, "warmup_s": f"{warm_s:.1f}",
            }
            print("TORCH STUDY " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights")
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--compile-batches", default="1,8")
    ap.add_argument("--study", action="store_true", help="time the sliding-window TTA + fold-ensemble study")
    ap.add_argument("--study-dims", default="288,288,16", help="preprocessed volume H,W,D")
    ap.add_argument("--roi", default=",".join(map(str, torch_study.ROI)))
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--tta-rounds", type=int, default=torch_study.TTA_ROUNDS)
    ap.add_argument("--sw-batch", type=int, default=torch_study.SW_BATCH)
    ap.add_argument("--variants", default="plain,full")
    ap.add_argument("--modes", default="eager", help="eager and/or compile")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = Unet25d().eval()
    if a.weights:
        if not os.path.isfile(a.weights):
            raise SystemExit(f"--weights {a.weights}: no such file")
        model.load_state_dict({k: v.float() for k, v in load_weights(a.weights).items()}, strict=True)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: PyTorch sees no CUDA device (use --study --device cpu on a CPU)")
    torch.backends.cudnn.benchmark = True
    if a.study:
        study(model, a)
        return
    if a.device != "cuda":
        raise SystemExit("the patch benchmark runs on cuda only (scripts/bench_pytorch.py times the CPU)")
    model = model.cuda().to(memory_format=torch.channels_last_3d)
    print(f"TORCH BENCH torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)

    def run(m, n, label, iters):
        x = torch.randn(n, 1, 192, 192, 16, device="cuda").to(memory_format=torch.channels_last_3d)

        def once():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
                return m(x)

        t0 = time.perf_counter()
        med, best = time_it(once, iters)
        print(f"TORCH BENCH {label:<28} batch {n}: {med / n:8.3f} ms/patch (best {best / n:.3f}), "
              f"{1000 * n / med:8.1f} patches/s   [{time.perf_counter() - t0:.0f} s incl. warm-up]", flush=True)

    for n in ints(a.batches, "--batches"):
        run(model, n, "fp16 eager channels_last_3d", 20 if n == 1 else 10)
    cm = torch.compile(model)
    for n in [int(v) for v in a.compile_batches.split(",") if v]:
        run(cm, n, "fp16 torch.compile", 20 if n == 1 else 10)


if __name__ == "__main__":
    main()
