"""Writes tests/data/grad_eval_seed0.safetensors: a deterministic gradient fixture for fmseg's tape.

The reference fixture grad_seed0_batch2.safetensors was taken with the reference model in train()
mode, where its hard-coded Dropout3d(p=0.2) layers (channel attention, context block) draw random
channel masks even in Unet(dropout=0): the deep layers' gradients there depend on masks nobody can
reproduce. This script takes the same step (same weights, input and label, from
../shared/fixtures/reference or FMSEG_REFERENCE_FIXTURES) with PyTorch autograd in float64 and the
network in eval() mode (no dropout), using scripts/torch_unet25d.py, and stores what the reference
fixture stores: loss terms, and per tensor the gradient norm and 256 sampled entries.

Run once by a developer (needs torch and safetensors), not by the tests:
    python scripts/make_grad_fixture.py
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file

sys.path.insert(0, os.path.dirname(__file__))
from torch_unet25d import Unet25d, load_weights  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.environ.get("FMSEG_REFERENCE_FIXTURES", os.path.join(HERE, "..", "..", "shared", "fixtures", "reference"))
OUT = os.path.join(HERE, "..", "tests", "data", "grad_eval_seed0.safetensors")
SAMPLES = 256


def dice(p, g, smooth=1e-5):
    ax = (2, 3, 4)
    return (1 - (2 * (p * g).sum(ax) + smooth) / (p.sum(ax) + g.sum(ax) + smooth)).mean()


def main():
    torch.set_default_dtype(torch.float64)
    d = load_file(os.path.join(FIX, "grad_seed0_batch2.safetensors"))
    net = Unet25d(dropout=0.0).double()
    net.load_state_dict(load_weights(os.path.join(FIX, "weights_seed0.pth")))
    net.eval()
    x = torch.tensor(d["input"], dtype=torch.float64, requires_grad=True)
    y = torch.tensor(d["label"], dtype=torch.float64)
    logits, w0, w1, w2 = net(x, maps=True)
    dice_ce = dice(torch.softmax(logits, 1), torch.cat([1 - y, y], 1)) + F.cross_entropy(logits, y[:, 0].long())
    # The reference's attention_loss: the label average-pooled (AdaptiveAvgPool3d) to the map.
    att = 0.2 * sum(dice(w, F.adaptive_avg_pool3d(y, w.shape[2:])) for w in (w0, w1, w2))
    (dice_ce + att).backward()
    out = {
        "loss_dice_ce": np.array([dice_ce.item()]),
        "loss_attention": np.array([att.item()]),
    }
    rng = np.random.default_rng(0)
    tensors = [("input", x.grad)] + [(n, p.grad) for n, p in net.named_parameters()]
    for name, g in tensors:
        g = g.detach().flatten().numpy()
        idx = np.sort(rng.choice(g.size, size=min(SAMPLES, g.size), replace=False)).astype(np.int64)
        out[f"grad.{name}.norm"] = np.array([np.linalg.norm(g)])
        out[f"grad.{name}.idx"] = idx
        out[f"grad.{name}.val"] = g[idx].astype(np.float64)
    save_file(out, OUT)
    print(f"wrote {OUT}: {len(tensors)} gradient tensors, dice_ce {dice_ce.item():.8f}, attention {att.item():.8f}")


if __name__ == "__main__":
    main()
