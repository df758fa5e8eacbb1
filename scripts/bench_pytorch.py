#!/usr/bin/env python3
"""PyTorch side of the CPU/GPU comparison: the same network (scripts/torch_unet25d.py), the same
weights, the same 192x192x16 patch, timed like `fmseg bench`.

    python3 scripts/bench_pytorch.py --weights W.pth [--device cpu|cuda] [--threads N] [--iters K]

Without --weights it uses PyTorch's default initialisation (the time does not depend on values).
--check FIXTURE.safetensors compares the logits against a reference case first.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_unet25d import Unet25d, load_weights  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--dims", default="192,192,16")
    ap.add_argument("--mode", default="fp32", help="fp32 | channels_last | bf16 (cpu) | fp16 | compile (cuda)")
    ap.add_argument("--check", help="case fixture (.safetensors) to compare logits against first")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--train", type=int, metavar="BATCH",
                    help="time a training step (eval() mode, Dice+CE+attention loss, backward) at this batch size")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Unet25d().eval()
    if a.weights:
        model.load_state_dict(load_weights(a.weights), strict=True)
    dev = torch.device(a.device)
    model = model.to(dev)
    dims = [int(v) for v in a.dims.split(",")]
    x = torch.randn(1, 1, *dims, device=dev)
    if a.check:
        from safetensors.torch import load_file
        case = load_file(a.check)
        with torch.no_grad():
            y = model(case["input"].to(dev)).float().cpu()
        ref = case["logits"]
        err = float((y - ref).norm() / ref.norm())
        print(f"parity vs {os.path.basename(a.check)}: logits relative L2 {err:.3e}", file=sys.stderr)
    if a.mode == "channels_last":
        model = model.to(memory_format=torch.channels_last_3d)
        x = x.to(memory_format=torch.channels_last_3d)
    run = model
    if a.mode == "compile":
        run = torch.compile(model)

    if a.train:
        import torch.nn.functional as F
        xb = torch.randn(a.train, 1, *dims, device=dev)
        yb = (xb > 1.5).float()

        def dice(p, g, s=1e-5):
            ax = (2, 3, 4)
            return (1 - (2 * (p * g).sum(ax) + s) / (p.sum(ax) + g.sum(ax) + s)).mean()

        def step():
            model.zero_grad(set_to_none=True)
            logits, w0, w1, w2 = model(xb, maps=True)
            loss = dice(torch.softmax(logits, 1), torch.cat([1 - yb, yb], 1)) + F.cross_entropy(logits, yb[:, 0].long())
            loss = loss + 0.2 * sum(dice(w, F.adaptive_avg_pool3d(yb, w.shape[2:])) for w in (w0, w1, w2))
            loss.backward()
            if dev.type == "cuda":
                torch.cuda.synchronize()

        step()
        times = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(f"PyTorch {torch.__version__} training step, batch {a.train}, {torch.get_num_threads()} threads: "
              f"{statistics.median(times):.2f} s per step (median of {a.iters}), peak RSS {peak / 2**20:.0f} MiB")
        return

    def once():
        with torch.no_grad():
            if a.mode in ("bf16", "fp16"):
                dt = torch.bfloat16 if a.mode == "bf16" else torch.float16
                with torch.autocast(device_type=dev.type, dtype=dt):
                    y = run(x)
            else:
                y = run(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return y

    once()
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    res = {"torch": torch.__version__, "device": a.device, "mode": a.mode, "threads": torch.get_num_threads(),
           "ms_per_patch": med * 1e3, "best_ms_per_patch": min(times) * 1e3, "peak_rss_bytes": peak}
    if a.json:
        print(json.dumps(res))
    else:
        print(f"pytorch {torch.__version__} {a.device} {a.mode} threads={res['threads']}: "
              f"{med*1e3:.1f} ms/patch (best {min(times)*1e3:.1f}), peak RSS {peak/2**20:.0f} MiB")


if __name__ == "__main__":
    main()
