#!/usr/bin/env python3
"""Judge the axSpA classifiers on fresh synthetic studies, as a user would run them:
`fmseg phantom` writes N DICOM series (with cases.csv: diagnosis and clinical variables, and
each case's clinical.json), `fmseg segment` segments each series (the FM mask of the ROI
map), `fmseg classify --mask` classifies each with the image-only and the image+clinical
classifier, and `fmseg evaluate` writes the paper's Tables 2 and 4 (segmentation against the
ground truth; both classifiers with AUC, bootstrap and DeLong CIs, DeLong's paired test) and
the ROC curves. Last, the specificity of each classifier at the same sensitivity (the largest
threshold at which each reaches the image-only model's sensitivity at 0.5).

    scripts/evaluate_classifier.py --image weights/fmseg-classifier-image.fmw
        --clinical weights/fmseg-classifier-clinical.fmw [--set-seed 60606] [--cases 60]
        [--out /tmp/fmseg-cls-eval] [--fmseg target/release/fmseg] [--exclude-seeds 3000..3120]
        [--keep] [--threads 0] [--weights SEGMENTATION.fmw]

The set's case seeds are `case_seed(set_seed, i)`; the script checks that none falls in
--exclude-seeds (the training run's `phantom:A..B`). With --keep, studies, segmentations and
classifications already in OUT are reused. Standard library only.
"""

import argparse
import csv
import json
import os
import sys
import time

from phantom_set import add_set_args, fresh_set, run


def spec_at_sensitivity(scores, labels, target):
    """Specificity at the largest threshold whose sensitivity reaches `target`."""
    pos = sum(labels)
    neg = len(labels) - pos
    for t in sorted(set(scores), reverse=True):
        tp = sum(1 for s, y in zip(scores, labels) if y and s >= t)
        if tp / pos >= target - 1e-12:
            tn = sum(1 for s, y in zip(scores, labels) if not y and s < t)
            return tn / neg, t
    return 0.0, min(scores)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", required=True, help="image-only classifier weights")
    ap.add_argument("--clinical", required=True, help="image+clinical classifier weights")
    add_set_args(ap, set_seed=60606, cases=60, out="/tmp/fmseg-cls-eval", exclude_seeds="3000..3120")
    ap.add_argument("--weights", help="segmentation weights (default: the bundled network)")
    ap.add_argument("--segment-only", action="store_true", help="stop after the segmentations")
    args = ap.parse_args()

    out = os.path.abspath(args.out)
    set_dir, cases = fresh_set(args)
    ids = [case_id for case_id, _ in cases]
    t0 = time.time()
    for n, i in enumerate(ids):
        dicom = os.path.join(set_dir, i, "dicom")
        seg = os.path.join(out, "seg", i)
        if not (args.keep and os.path.exists(os.path.join(seg, "fm_mask.nii.gz"))):
            run([args.fmseg, "segment", dicom, "--out", seg, "--threads", str(args.threads)]
                + (["--weights", args.weights] if args.weights else []))
        if args.segment_only:
            print(f"{i}: segmented ({time.time() - t0:.0f} s)", file=sys.stderr)
            continue
        mask = os.path.join(seg, "fm_mask.nii.gz")
        for variant, weights, extra in [
            ("image", args.image, []),
            ("clinical", args.clinical, ["--clinical", os.path.join(set_dir, i, "clinical.json")]),
        ]:
            dest = os.path.join(out, variant, i)
            if args.keep and os.path.exists(os.path.join(dest, "classification.json")):
                continue
            run([args.fmseg, "classify", dicom, "--mask", mask, "--classifier", weights, "--out", dest,
                 "--device", "cpu", "--threads", str(args.threads)] + extra)
        print(f"{i}: done {n + 1}/{len(ids)} ({time.time() - t0:.0f} s)", file=sys.stderr)
    if args.segment_only:
        return
    print(run([args.fmseg, "evaluate", "--truth", set_dir, "--pred", os.path.join(out, "seg"),
               "--name-a", "segmentation (bundled weights)", "--out", os.path.join(out, "evaluation-segmentation")]))
    print(run([args.fmseg, "evaluate", "--labels", os.path.join(set_dir, "cases.csv"),
               "--scores", os.path.join(out, "image"), "--scores-b", os.path.join(out, "clinical"),
               "--name-a", "image", "--name-b", "image+clinical", "--out", os.path.join(out, "evaluation")]))

    labels = {r["id"]: r["label"] == "axSpA" for r in csv.DictReader(open(os.path.join(set_dir, "cases.csv")))}
    score = lambda v, i: json.load(open(os.path.join(out, v, i, "classification.json")))["probability_axspa"]
    y = [labels[i] for i in ids]
    a = [score("image", i) for i in ids]
    b = [score("clinical", i) for i in ids]
    tp = sum(1 for s, t in zip(a, y) if t and s >= 0.5)
    target = tp / sum(y)
    spec_a, ta = spec_at_sensitivity(a, y, target)
    spec_b, tb = spec_at_sensitivity(b, y, target)
    summary = {
        "sensitivity": target,
        "specificity_image": spec_a, "threshold_image": ta,
        "specificity_image_clinical": spec_b, "threshold_image_clinical": tb,
        "cases": len(ids), "axspa": sum(y),
    }
    with open(os.path.join(out, "matched_sensitivity.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"At the image-only model's sensitivity at 0.5 ({target:.3f}): specificity image {spec_a:.3f} "
          f"(threshold {ta:.3f}), image+clinical {spec_b:.3f} (threshold {tb:.3f})")


if __name__ == "__main__":
    main()
