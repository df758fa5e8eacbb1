#!/usr/bin/env python3
"""Packs what the GPU check needs from the reference fixtures into a small folder:

  weights_seed0.safetensors      the checkpoint weights_seed0.pth as safetensors: conv weights
                                 fp16 (the GPU engine rounds them so anyway), biases f32
  case_seed0_*.safetensors       input (fp16: the GPU uploads it so), logits f32, maps w0 (fp16),
                                 w1, w2 (f32)

    python3 scripts/pack_gpu_fixtures.py REFERENCE_DIR OUT_DIR

Needs torch (to read the .pth) and safetensors. Used by scripts/gpu-check.sh on a development
machine; the GPU machine gets the packed folder.
"""
import os
import sys

import numpy as np
import torch
from safetensors.numpy import load_file, save_file


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    ref, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    sd = torch.load(os.path.join(ref, "weights_seed0.pth"), map_location="cpu", weights_only=True)
    packed = {}
    for k, v in sd.items():
        a = v.detach().cpu().float().numpy().copy()  # aliases share storage: copy each
        packed[k] = a.astype(np.float16) if a.ndim >= 2 else a.astype(np.float32)
    save_file(packed, os.path.join(out, "weights_seed0.safetensors"))
    for case in ("case_seed0_192x192x16", "case_seed0_200x232x18"):
        t = load_file(os.path.join(ref, case + ".safetensors"))
        keep = {
            "input": t["input"].astype(np.float16),
            "logits": t["logits"].astype(np.float32),
            "w0": t["w0"].astype(np.float16),
            "w1": t["w1"].astype(np.float32),
            "w2": t["w2"].astype(np.float32),
        }
        save_file({k: np.ascontiguousarray(v) for k, v in keep.items()}, os.path.join(out, case + ".safetensors"))
    for f in sorted(os.listdir(out)):
        print(f"  {f}: {os.path.getsize(os.path.join(out, f)) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
