#!/usr/bin/env python3
"""fmseg's CPU engine beside the runtimes a CPU user would pick instead: OpenVINO and ONNX
Runtime (from an ONNX export of scripts/torch_unet25d.py) and PyTorch itself, on the same
weights and the same 192x192x16 patch, in one session, alternating rounds.

    python scripts/bench_peers.py --weights W.pth [--fmseg target/release/fmseg] [--threads 2]
        [--rounds 3] [--iters 3] [--out /tmp/fmseg-peers]

Needs torch, numpy, safetensors, onnx, onnxruntime and openvino in the interpreter running it:
`FMSEG_PYTHON=$(scripts/install-torch.sh)` then `"$FMSEG_PYTHON" -m pip install onnx onnxruntime
openvino`. Not part of the tests.

1. Export: the network as ONNX (opset 17). For a 192x192x16 patch every adaptive average pool
   of the channel attention halves even sizes, so it is exported as a 2x average pool
   (asserted, not assumed).
2. Check first: each peer's logits against PyTorch's on one random patch (seed 0), and fmseg's
   (`fmseg forward`); relative L2 printed, the run stops above 1e-4.
3. Time: per round every engine in turn (fmseg's own `fmseg bench`, OpenVINO, ONNX Runtime,
   PyTorch), each a warm-up then --iters timed passes; the table gives each engine's best and
   median over all rounds and its ratio to fmseg. Same threads for all.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_unet25d import Unet25d, load_weights  # noqa: E402


def even_halving_pool(x, out):
    """F.adaptive_avg_pool3d for outputs that divide the input exactly (ONNX exports it)."""
    # int(): the sizes are fixed for a fixed patch, so the exporter may bake them in
    size = [int(i) for i in x.shape[2:]]
    k = []
    for i, o in zip(size, [int(o) for o in out]):
        assert i % o == 0, f"adaptive pool {tuple(size)} -> {out} is not an even pool"
        k.append(i // o)
    return F.avg_pool3d(x, tuple(k))


def rel_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def timed(fn, iters):
    fn()  # warm-up
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--fmseg", default="target/release/fmseg")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--out", default="/tmp/fmseg-peers")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(a.threads)
    import onnxruntime as ort
    import openvino as ov

    model = Unet25d().eval()
    model.load_state_dict(load_weights(a.weights), strict=True)
    x = torch.randn(1, 1, 192, 192, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x).numpy()

    onnx_path = os.path.join(a.out, "unet25d.onnx")
    adaptive = F.adaptive_avg_pool3d
    F.adaptive_avg_pool3d = even_halving_pool
    try:
        with torch.no_grad():
            torch.onnx.export(model, (x,), onnx_path, opset_version=17, input_names=["x"], output_names=["logits"],
                              dynamo=False)
    finally:
        F.adaptive_avg_pool3d = adaptive

    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    xn = x.numpy()
    core = ov.Core()
    compiled = core.compile_model(core.read_model(onnx_path), "CPU", {
        "INFERENCE_NUM_THREADS": a.threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()

    def run_ov():
        request.infer({0: xn})
        return request.get_output_tensor(0).data.copy()

    def run_ort():
        return sess.run(None, {"x": xn})[0]

    def run_torch():
        with torch.no_grad():
            return model(x).numpy()

    x_npy = os.path.join(a.out, "x.npy")
    y_npy = os.path.join(a.out, "y_fmseg.npy")
    np.save(x_npy, xn)
    subprocess.run([a.fmseg, "forward", "--weights", a.weights, "--input", x_npy, "--output", y_npy,
                    "--threads", str(a.threads)], check=True, capture_output=True)
    checks = {"fmseg": rel_l2(np.load(y_npy), ref), "openvino": rel_l2(run_ov(), ref), "onnxruntime": rel_l2(run_ort(), ref)}
    for k, v in checks.items():
        print(f"logits vs PyTorch fp32: {k} rel L2 {v:.2e}", flush=True)
    bad = {k: v for k, v in checks.items() if not v < 1e-4}
    if bad:
        sys.exit(f"parity failed (tolerance 1e-4): {bad}")

    def run_fmseg_round():
        p = subprocess.run([a.fmseg, "bench", "--weights", a.weights, "--threads", str(a.threads), "--iters",
                            str(a.iters), "--json"], check=True, capture_output=True, text=True)
        r = json.loads(p.stdout)["results"][0]
        # the bench reports the median and the best of its timed passes
        return [r["best_ms_per_patch"], r["ms_per_patch"]]

    times = {"fmseg": [], "openvino": [], "onnxruntime": [], "pytorch": []}
    for rnd in range(a.rounds):
        times["fmseg"] += run_fmseg_round()
        times["openvino"] += timed(run_ov, a.iters)
        times["onnxruntime"] += timed(run_ort, a.iters)
        times["pytorch"] += timed(run_torch, a.iters)
        print(f"round {rnd + 1}: " + ", ".join(f"{k} {min(v):.0f} ms" for k, v in times.items()), flush=True)

    best_f = min(times["fmseg"])
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                machine = f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
                break
    except OSError:
        pass
    versions = {"torch": torch.__version__, "onnxruntime": ort.__version__, "openvino": ov.__version__}
    print(f"\n{machine}; {a.threads} threads; one 192x192x16 patch; {a.rounds} alternating rounds; {versions}")
    print("| engine | best ms | median ms | best vs fmseg |")
    print("| --- | --- | --- | --- |")
    summary = {"machine": machine, "threads": a.threads, "versions": versions, "parity": checks, "engines": {}}
    for k, v in times.items():
        b, m = min(v), statistics.median(v)
        summary["engines"][k] = {"best_ms": b, "median_ms": m, "all_ms": v}
        print(f"| {k} | {b:,.0f} | {m:,.0f} | {b / best_f:.2f}x |")
    with open(os.path.join(a.out, "peers.json"), "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
