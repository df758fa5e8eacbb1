#!/usr/bin/env python3
"""Make the image+clinical classifier from the image-only one by stacking: keep the image
model's encoder, and fit the joint head (its 64 pooled image features and the 9 clinical
features -> the axSpA logit) as a logistic regression of the image model's logit and the
clinical features, on studies the image model never saw, segmented by the segmentation network
(as `fmseg classify` sees them). The head is linear in the pooled features, so
`a * logit_image + w . clinical + b` is exactly the network of `docs/classifier.md` with
head weights `[a * w_image, w]` and bias `a * b_image + b`: `fmseg classify --clinical` runs
it unchanged.

    scripts/fit_clinical_head.py --image weights/fmseg-classifier-image.fmw \
        --dev /tmp/fmseg-cls-eval --out weights/fmseg-classifier-clinical.fmw [--c 1.0]

DEV is an `scripts/evaluate_classifier.py` output directory: `set/cases.csv` (labels),
`image/<id>/classification.json` (the image model's logit) and `clinical/<id>/classification.json`
(the clinical features fmseg encoded from the case's clinical.json). The fit: scikit-learn's
L2-regularised logistic regression (C = --c), classes weighted by their inverse frequency (as
train-classifier's BCE). Needs numpy and scikit-learn (scripts/install-stats-peers.sh makes a
venv with both); prints the fit and its 5-fold cross-validated AUC on DEV.
"""

import argparse
import csv
import json
import os
import struct
import sys
import tempfile

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from phantom_set import run

# The clinical features in the order of the network's input (src/pipeline/clinical.rs).
FEATURES = ["age_z", "male", "hla_b27_positive", "hla_b27_negative", "hla_b27_missing", "log_crp_z",
            "crp_missing", "log_esr_z", "esr_missing"]


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for k, t in header.items():
        if k == "__metadata__":
            continue
        if t["dtype"] != "F32":
            sys.exit(f"{path}: {k} is {t['dtype']}, expected F32")
        s, e = t["data_offsets"]
        out[k] = np.frombuffer(data[s:e], dtype="<f4").reshape(t["shape"]).copy()
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for k, v in tensors.items():
        b = np.ascontiguousarray(v, dtype="<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", required=True, help="image-only classifier weights")
    ap.add_argument("--dev", required=True, help="evaluate_classifier.py output on held-out studies")
    ap.add_argument("--out", required=True, help="image+clinical weights to write (.fmw)")
    ap.add_argument("--c", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    ap.add_argument("--fmseg", default="target/release/fmseg")
    args = ap.parse_args()

    rows = list(csv.DictReader(open(os.path.join(args.dev, "set", "cases.csv"))))
    ids = [r["id"] for r in rows]
    y = np.array([r["label"] == "axSpA" for r in rows], dtype=int)
    cls = lambda v, i: json.load(open(os.path.join(args.dev, v, i, "classification.json")))
    logit = np.array([cls("image", i)["logit"] for i in ids])
    clin = np.array([[cls("clinical", i)["inputs"]["clinical_features"][f] for f in FEATURES] for i in ids])
    x = np.column_stack([logit, clin])

    model = lambda: LogisticRegression(C=args.c, class_weight="balanced", max_iter=10000)
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    cv_auc = roc_auc_score(y, cross_val_predict(model(), x, y, cv=cv, method="decision_function"))
    fit = model().fit(x, y)
    a, w, b = fit.coef_[0][0], fit.coef_[0][1:], fit.intercept_[0]
    print(f"{len(ids)} studies ({y.sum()} axSpA): image AUC {roc_auc_score(y, logit):.3f}, stacked 5-fold CV AUC "
          f"{cv_auc:.3f}; logit = {a:.4f} * image logit + {b:.4f} + "
          + " + ".join(f"{c:.4f} * {f}" for c, f in zip(w, FEATURES)))

    with tempfile.TemporaryDirectory() as tmp:
        image_st = os.path.join(tmp, "image.safetensors")
        run([args.fmseg, "convert-weights", args.image, image_st])
        t = read_safetensors(image_st)
        head_w, head_b = t["head.weight"], t["head.bias"]
        if head_w.shape != (1, 64, 1, 1, 1):
            sys.exit(f"{args.image}: head.weight {head_w.shape} is not the image-only classifier's (1, 64, 1, 1, 1)")
        t["head.weight"] = np.concatenate([a * head_w.reshape(64), w]).astype(np.float32).reshape(1, 73, 1, 1, 1)
        t["head.bias"] = np.array([a * head_b[0] + b], dtype=np.float32)
        joint = os.path.join(tmp, "clinical.safetensors")
        write_safetensors(joint, t)
        caveat = (f"image+clinical by stacking: the encoder of {os.path.basename(args.image)}, the head fitted by "
                  f"logistic regression (C={args.c}) on {len(ids)} held-out synthetic studies with predicted masks: "
                  "a demonstration, not for clinical use")
        print(run([args.fmseg, "convert-weights", joint, args.out, "--dtype", "f16",
                   "--meta", "model=fmseg axSpA classifier", "--meta", "variant=image+clinical",
                   "--meta", "trained=true", "--meta", "threshold=0.5", "--meta", f"stacked_on={len(ids)} studies",
                   "--meta", f"cv_auc={cv_auc:.4f}", "--meta", f"caveat={caveat}"]).strip())


if __name__ == "__main__":
    main()
