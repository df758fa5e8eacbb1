#!/usr/bin/env python3
"""The validation curve of a training run as a PNG (the model card's figure).

    scripts/plot_training.py OUT.png RUN/fold-0/metrics.csv [MORE.csv ...] [--title TEXT]

Several files are the legs of one run continued by warm restarts (`fmseg train --weights` from
the previous leg's weights): their steps are laid end to end. Plots the training loss (Dice + CE, attention) per epoch and the validation Dice, precision
and recall at the epochs that were validated, against optimiser steps. Needs matplotlib
(`pip install matplotlib`).
"""

import argparse
import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("metrics", nargs="+")
    ap.add_argument("--title", default="fmseg training (cpu-budget preset)")
    args = ap.parse_args()
    rows, steps, offset = [], [], 0
    for path in args.metrics:
        leg = list(csv.DictReader(open(path)))
        if not leg:
            raise SystemExit(f"{path}: no epochs yet")
        for r in leg:
            r["iteration"] = str(int(r["iteration"]) + offset)
        offset = int(leg[-1]["iteration"])
        rows += leg
    steps = [int(r["iteration"]) for r in rows]
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 4))
    a0.plot(steps, [float(r["loss_dice_ce"]) for r in rows], label="Dice + CE")
    a0.plot(steps, [float(r["loss_attention"]) for r in rows], label="attention (0.2 x Dice per map)")
    a0.set_xlabel("optimiser steps")
    a0.set_ylabel("training loss (epoch mean)")
    a0.legend()
    a0.grid(alpha=0.3)
    val = [r for r in rows if r["val_dice"] not in ("", None)]
    vs = [int(r["iteration"]) for r in val]
    for key, label in [("val_dice", "Dice"), ("val_precision", "precision"), ("val_recall", "recall")]:
        ys = [float(r[key]) if r[key] not in ("", None) else float("nan") for r in val]
        a1.plot(vs, ys, marker="o", label=label)
    a1.set_ylim(0, 1)
    a1.set_xlabel("optimiser steps")
    a1.set_ylabel("validation (held-out synthetic studies)")
    a1.legend()
    a1.grid(alpha=0.3)
    fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}: {len(rows)} epochs, {len(val)} validations, last step {steps[-1]}")


if __name__ == "__main__":
    main()
