#!/usr/bin/env python3
"""PyTorch baselines for the GPU benchmark table (run by scripts/gpu-check.sh --run on the GPU
machine): the same network (scripts/torch_unet25d.py) on 192x192x16 patches, FP16 autocast,
channels_last_3d, eager and torch.compile, at batch 1, 4, 8. Times with CUDA events after
warm-up, median of repeated passes; prints one 'TORCH BENCH' line per configuration.

    python3 scripts/gpu_bench_torch.py [--weights W.safetensors] [--compile-batches 1,8]
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights")
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--compile-batches", default="1,8")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    model = Unet25d().eval()
    if a.weights and os.path.exists(a.weights):
        model.load_state_dict({k: v.float() for k, v in load_weights(a.weights).items()}, strict=True)
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

    for n in [int(v) for v in a.batches.split(",") if v]:
        run(model, n, "fp16 eager channels_last_3d", 20 if n == 1 else 10)
    cm = torch.compile(model)
    for n in [int(v) for v in a.compile_batches.split(",") if v]:
        run(cm, n, "fp16 torch.compile", 20 if n == 1 else 10)


if __name__ == "__main__":
    main()
