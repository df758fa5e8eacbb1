#!/usr/bin/env python3
"""Parity of the PyTorch baseline (scripts/torch_unet25d.py, scripts/torch_study.py) with the
reference fixtures, on the CPU in float32, with the tolerances of the fixtures' README:

- every case_seed0_*.safetensors: logits and the attention maps w0, w1, w2 within relative L2
  1e-4, and every stage probe (sampled values, per-channel mean and std) within 1e-4;
- pipeline_case1: the sliding window of scripts/torch_study.py (roi 192x192x16, overlap 0.5,
  Gaussian, sw_batch 2) on the MONAI-preprocessed volume within 1e-4 of MONAI's logits;
- the sliding window against MONAI 1.6's own numbers on a mock predictor (replicate padding,
  blending), and the TTA + fold ensemble against a direct computation with mock predictors.

    python3 scripts/torch_parity.py [--fixtures DIR] [--weights W.pth|W.safetensors]

Loads the reference checkpoint (weights_seed0.pth) unless --weights names another copy of it
(e.g. the .safetensors that scripts/pack_gpu_fixtures.py writes). Prints one line per check and
'TORCH PARITY ok: N checks' last; the exit status is 0 when every check passes, 1 when one fails,
2 when the fixtures cannot be read.
"""
import argparse
import glob
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_study  # noqa: E402
from torch_unet25d import Unet25d, load_weights  # noqa: E402

TOL = 1e-4
# Stages probed by the fixture; for these modules the probe is the first output of a tuple.
PROBED = ["conv_0", "down_1", "down_2", "down_3", "down_4", "context_block_1", "attention_4", "up_4", "up_3",
          "up_2", "up_1", "final_conv"]


def rel_l2(got, want):
    """Relative L2 error in float64; infinite when the shapes differ."""
    got = torch.as_tensor(got, dtype=torch.float64)
    want = torch.as_tensor(want, dtype=torch.float64)
    if got.shape != want.shape:
        return float("inf")
    return float((got - want).norm() / want.norm().clamp(min=1e-30))


class Checks:
    def __init__(self):
        self.n = 0
        self.failed = []

    def rel(self, name, got, want, tol=TOL):
        err = rel_l2(got, want)
        got, want = torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(want, dtype=torch.float64)
        self.record(name, err <= tol, f"rel L2 {err:.3e} (tol {tol:.0e}), max abs {float((got - want).abs().max()):.3e}")

    def record(self, name, ok, what):
        self.n += 1
        print(f"PARITY {name:<44} {what}  {'ok' if ok else 'FAIL'}", flush=True)
        if not ok:
            self.failed.append(name)


def check_case(model, path, checks):
    from safetensors.torch import load_file
    case = load_file(path)
    tag = os.path.basename(path).removesuffix(".safetensors")
    outputs = {}
    hooks = [getattr(model, n).register_forward_hook(
        lambda m, i, o, n=n: outputs.__setitem__(n, (o[0] if isinstance(o, tuple) else o)[0].detach()))
        for n in PROBED]
    t0 = time.perf_counter()
    with torch.no_grad():
        logits, w0, w1, w2 = model(case["input"], maps=True)
    dt = time.perf_counter() - t0
    for h in hooks:
        h.remove()
    print(f"{tag}: forward {tuple(case['input'].shape)} in {dt:.1f} s", flush=True)
    for key, got in [("logits", logits), ("w0", w0), ("w1", w1), ("w2", w2)]:
        checks.rel(f"{tag} {key}", got, case[key])
    # Every stage: the sampled values, the per-channel mean and std; one line, the worst named.
    errs = []
    for n in PROBED:
        g = outputs[n].double()
        if tuple(g.shape) != tuple(int(v) for v in case[f"probe.{n}.shape"]):
            errs.append((float("inf"), f"{n} shape {tuple(g.shape)}"))
            continue
        errs.append((rel_l2(g.flatten()[case[f"probe.{n}.idx"]], case[f"probe.{n}.val"]), f"{n} values"))
        errs.append((rel_l2(g.mean((1, 2, 3)), case[f"probe.{n}.channel_mean"]), f"{n} channel mean"))
        errs.append((rel_l2(g.std((1, 2, 3), correction=0), case[f"probe.{n}.channel_std"]), f"{n} channel std"))
    worst, where = max(errs)
    checks.record(f"{tag} {len(PROBED)} stage probes", worst <= TOL,
                  f"worst rel L2 {worst:.3e} (tol {TOL:.0e}) at {where}")


def check_pipeline(model, fixtures, checks):
    image = torch.from_numpy(np.load(os.path.join(fixtures, "pipeline_case1_preprocessed.npy")).astype(np.float32))
    want = torch.from_numpy(np.load(os.path.join(fixtures, "pipeline_case1_logits.npy")))

    def predict(x):
        return model(x)

    t0 = time.perf_counter()
    with torch.no_grad():
        got = torch_study.sliding_window(image, predict)
    n = len(torch_study.windows(tuple(image.shape), torch_study.ROI, torch_study.OVERLAP))
    print(f"pipeline_case1: sliding window, {n} windows of {torch_study.ROI} over {tuple(image.shape)} "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)
    checks.rel("pipeline_case1 sliding-window logits", got, want)


def check_window_mock(checks):
    """MONAI 1.6 sliding_window_inference(img, (8, 6, 4), 3, pred, overlap=0.5, mode="gaussian",
    padding_mode="replicate") on a 13x5x7 image (axis 1 shorter than the roi) with
    pred(x) = cat(2x + 1, -x + arange(192).reshape(roi) % 5): the numbers of
    src/pipeline/window.rs's matches_monai_on_a_mock_predictor; 3 x 1 x 3 windows, 3 per call."""
    roi, dims = (8, 6, 4), (13, 5, 7)
    img = torch.tensor([((i * 37) % 101) / 10.0 for i in range(13 * 5 * 7)], dtype=torch.float32).reshape(dims)
    pos = (torch.arange(192) % 5).float().reshape(roi)
    calls = []

    def pred(x):
        calls.append(x.shape[0])
        return torch.cat([2 * x + 1, -x + pos], 1)

    out = torch_study.sliding_window(img, pred, roi=roi, sw_batch=3)[0].double()
    monai = {(0, 0, 0, 0): 1.0, (1, 0, 0, 0): 0.0, (0, 12, 4, 6): 7.400000095367432, (1, 12, 4, 6): -1.2000000476837158,
             (1, 6, 2, 3): 0.5978115200996399, (1, 3, 4, 1): 3.0999999046325684, (0, 7, 1, 5): 4.0,
             (1, 9, 3, 2): -7.194462299346924}
    err = max(abs(float(out[k]) - v) / (1 + abs(v)) for k, v in monai.items())
    total = float(out.sum())
    ok = err < 1e-6 and abs(total - 3640.592197023332) < 1e-6 * abs(total) and calls == [3, 3, 3]
    checks.record("sliding window vs MONAI (mock predictor)", ok,
                  f"max rel err {err:.1e}, sum {total:.6f} (MONAI 3640.592197), calls {calls}")
    # A pointwise predictor cannot see the padding: check the padded window itself (NumPy's
    # "edge" mode is replicate; diff // 2 before) and that the output is cropped back.
    small = torch.arange(18, dtype=torch.float32).reshape(3, 6, 1)
    inputs = []
    out = torch_study.sliding_window(small, lambda x: inputs.append(x[0, 0].clone()) or x, roi=(6, 6, 4))
    padded = np.pad(small.numpy(), ((1, 2), (0, 0), (1, 2)), mode="edge")
    ok = len(inputs) == 1 and np.array_equal(inputs[0].numpy(), padded) and torch.allclose(out[0, 0], small, atol=1e-6)
    checks.record("sliding window replicate padding", ok, f"{len(inputs)} window, padded input and cropped output")
    m = torch_study.importance_map((192, 192, 16))
    ref = {(95, 95, 7): 0.9688127040863037, (60, 130, 5): 0.05456186458468437, (100, 90, 9): 0.7224646210670471,
           (40, 120, 3): 0.0032596727833151817, (60, 130, 0): 0.0010000000474974513}
    err = max(abs(float(m[k]) - v) / v for k, v in ref.items())
    checks.record("importance map vs MONAI", err < 2.5e-7, f"max rel err {err:.1e}")


def check_tta_mock(checks):
    """The ensemble with two mock predictors whose logits are (input + bias_k, 3): the mean must be
    (sum over predictors of plain + 3 x noised of each round) / passes + mean bias, the flips undone,
    and the passes seen in the reference's order (plain, then noised, flip H, flip W per round)."""
    dims = (20, 12, 4)
    img = torch.arange(20 * 12 * 4, dtype=torch.float32).reshape(dims) / 100
    seen = []

    def mock(bias):
        def pred(x):
            seen.append(x[0, 0].clone())
            return torch.cat([x + bias, torch.full_like(x, 3.0)], 1)
        return pred

    gen = torch.Generator().manual_seed(5)
    mean, passes = torch_study.tta_ensemble(img, [mock(0.0), mock(1.0)], rounds=2, noise_std=0.5, generator=gen,
                                            roi=dims)
    ok = passes == 14 and len(seen) == 14 and torch.equal(seen[0], img) and torch.equal(seen[7], img)
    want = torch.zeros(dims, dtype=torch.float64)
    for f in range(2):
        base = 7 * f
        want += seen[base].double() + f
        for r in range(2):
            noised = seen[base + 1 + 3 * r]
            ok &= torch.equal(seen[base + 2 + 3 * r], noised.flip(0)) and torch.equal(seen[base + 3 + 3 * r], noised.flip(1))
            ok &= 0.0 < float((noised - img).std()) < 0.6
            want += 3 * (noised.double() + f)
    want /= 14
    err = float((mean[0, 0].double() - want).abs().max())
    ok &= err < 1e-5 and float((mean[0, 1] - 3.0).abs().max()) < 1e-6 and not torch.equal(seen[1], seen[4])
    checks.record("TTA + fold ensemble (mock predictors)", ok, f"{passes} passes, max abs err {err:.1e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    default = os.environ.get("FMSEG_REFERENCE_FIXTURES", os.path.join(here, "..", "..", "shared", "fixtures", "reference"))
    ap.add_argument("--fixtures", default=default)
    ap.add_argument("--weights", help="the reference checkpoint (default: FIXTURES/weights_seed0.pth)")
    a = ap.parse_args()
    cases = sorted(glob.glob(os.path.join(a.fixtures, "case_seed0_*.safetensors")))
    weights = a.weights or os.path.join(a.fixtures, "weights_seed0.pth")
    if not cases or not os.path.isfile(weights):
        print(f"torch_parity: no reference cases or weights under {a.fixtures}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    model = Unet25d().eval()
    model.load_state_dict(load_weights(weights), strict=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, weights {weights}", flush=True)
    checks = Checks()
    check_window_mock(checks)
    check_tta_mock(checks)
    for c in cases:
        check_case(model, c, checks)
    check_pipeline(model, a.fixtures, checks)
    if checks.failed:
        print(f"TORCH PARITY FAILED: {len(checks.failed)} of {checks.n} checks: {', '.join(checks.failed)}")
        return 1
    print(f"TORCH PARITY ok: {checks.n} checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
