#!/usr/bin/env python3
"""Judge weights on fresh synthetic studies, as a user would run them: `fmseg phantom` writes
N DICOM series with their ground truth, `fmseg segment SERIES --truth MASK` segments each one
(the whole pipeline: DICOM decode, MONAI preprocessing, sliding window, back to the series'
grid), and this script summarises the reports' `truth` sections.

    scripts/evaluate_phantoms.py --weights weights/fmseg-unet25d.fmw [--set-seed 424242] [--cases 20]
        [--out /tmp/fmseg-eval] [--fmseg target/release/fmseg] [--threads 0] [--exclude-seeds 1000..1200]

The phantom set's case seeds are `case_seed(set_seed, i)` (64-bit hashes); the script checks
that none falls in --exclude-seeds (the training run's `phantom:A..B`), so the test studies
are never ones the network was trained or validated on. Prints per case Dice, precision and
recall, then mean +- SD of Dice, the pooled precision and recall and the worst case, and writes
`OUT/summary.json`. Standard library only.
"""

import argparse
import json
import math
import os
import sys
import time

from phantom_set import add_set_args, fresh_set, run


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True)
    add_set_args(ap, set_seed=424242, cases=20, out="/tmp/fmseg-eval", exclude_seeds="1000..1200")
    args = ap.parse_args()

    set_dir, cases = fresh_set(args)
    rows = []
    pooled = {"tp": 0, "fp": 0, "fn": 0}
    t0 = time.time()
    for case_id, seed in cases:
        case = os.path.join(set_dir, case_id)
        res = os.path.join(args.out, "results", case_id)
        run([args.fmseg, "segment", os.path.join(case, "dicom"), "--out", res, "--weights", args.weights,
             "--truth", os.path.join(case, "fm_mask.nii.gz"), "--threads", str(args.threads)])
        t = json.load(open(os.path.join(res, "report.json")))["truth"]
        pooled["tp"] += t["true_positive_voxels"]
        pooled["fp"] += t["false_positive_voxels"]
        pooled["fn"] += t["false_negative_voxels"]
        row = {"case": case_id, "seed": seed, "dice": t["dice"], "precision": t["precision"],
               "recall": t["recall"], "truth_ml": t["truth_ml"], "predicted_ml": t["predicted_ml"],
               "lesions": t["truth_lesions"], "found": t["lesions_found"], "false_lesions": t["false_lesions"]}
        rows.append(row)
        fmt = lambda v: "-" if v is None else f"{v:.4f}"
        print(f"{row['case']} seed {seed}: Dice {fmt(row['dice'])}, precision {fmt(row['precision'])}, "
              f"recall {fmt(row['recall'])}, truth {row['truth_ml']:.2f} ml, predicted {row['predicted_ml']:.2f} ml, "
              f"{row['found']}/{row['lesions']} lesions found, {row['false_lesions']} false", flush=True)

    dices = [r["dice"] for r in rows if r["dice"] is not None]
    mean = sum(dices) / len(dices) if dices else 0.0
    sd = math.sqrt(sum((d - mean) ** 2 for d in dices) / (len(dices) - 1)) if len(dices) > 1 else 0.0
    tp, fp, fn = pooled["tp"], pooled["fp"], pooled["fn"]
    worst = min((r for r in rows if r["dice"] is not None), key=lambda r: r["dice"], default=None)
    summary = {
        "weights": args.weights,
        "set_seed": args.set_seed,
        "cases": args.cases,
        "cases_with_fm": len(dices),
        "mean_dice": mean,
        "sd_dice": sd,
        "pooled_precision": tp / (tp + fp) if tp + fp else None,
        "pooled_recall": tp / (tp + fn) if tp + fn else None,
        "worst": worst,
        "seconds": time.time() - t0,
        "per_case": rows,
    }
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    pr = summary["pooled_precision"]
    rc = summary["pooled_recall"]
    print(f"\n{len(dices)} of {args.cases} studies with FM: Dice {mean:.4f} +- {sd:.4f} (mean +- SD), "
          f"pooled precision {pr if pr is None else round(pr, 4)}, recall {rc if rc is None else round(rc, 4)}; "
          f"worst {worst['case'] if worst else '-'} ({worst['dice']:.4f})" if worst else "no study with FM")
    print(f"summary: {os.path.join(args.out, 'summary.json')}")


if __name__ == "__main__":
    main()
