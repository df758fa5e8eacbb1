#!/usr/bin/env bash
# Ship the weights of a training run as the bundled network: the run's best (or last) fold-0
# checkpoint to weights/fmseg-unet25d.fmw (FP16, metadata trained=true and provenance), its
# checksum to weights/fmseg-unet25d.fmw.sha256, the run's metrics.csv to
# weights/training/<LEG>-metrics.csv and the curve of every leg so far to weights/training/curve.png.
#
#   [CAVEAT="..."] scripts/ship-weights.sh RUN_DIR LEG [best|last]
#
# CAVEAT, when set, goes into the weights' metadata and is shown as a notice by every run that
# uses them (for weights below the target: say how far below).
#
# LEG names this stretch of training (e.g. 2026-12-03): a run continued in a later session by a
# warm restart (`fmseg train --weights weights/fmseg-unet25d.fmw ...`) is a new leg. The curve
# needs matplotlib (PLOT_PYTHON, default ~/.cache/fmseg-plot/bin/python, made with
# `python3 -m venv ~/.cache/fmseg-plot && ~/.cache/fmseg-plot/bin/pip install matplotlib`).
set -euo pipefail
cd "$(dirname "$0")/.."
run="$1"; leg="$2"; which="${3:-best}"
fmseg=target/release/fmseg
ckpt="$run/fold-0/$which.safetensors"
[ -f "$ckpt" ] || { echo "ship-weights: $ckpt not found" >&2; exit 1; }
metrics="$run/fold-0/metrics.csv"
steps=$(tail -n 1 "$metrics" | cut -d, -f2)
command=$(python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["command"]))' "$run/run.json" 2>/dev/null || echo "see $run/run.json")
"$fmseg" convert-weights "$ckpt" weights/fmseg-unet25d.fmw --dtype f16 \
    --meta trained=true --meta "recipe=fmseg train --preset cpu-budget" --meta "leg=$leg" \
    --meta "checkpoint=$which" --meta "steps_in_leg=$steps" --meta "command=$command" \
    ${CAVEAT:+--meta "caveat=$CAVEAT"}
sha256sum weights/fmseg-unet25d.fmw | cut -d' ' -f1 > weights/fmseg-unet25d.fmw.sha256
mkdir -p weights/training
cp "$metrics" "weights/training/$leg-metrics.csv"
py="${PLOT_PYTHON:-$HOME/.cache/fmseg-plot/bin/python}"
if [ -x "$py" ]; then
    # shellcheck disable=SC2046
    "$py" scripts/plot_training.py weights/training/curve.png $(ls weights/training/20*-metrics.csv | sort)
else
    echo "ship-weights: no matplotlib at $py: curve not redrawn" >&2
fi
echo "shipped $ckpt ($steps steps in leg $leg) as weights/fmseg-unet25d.fmw, sha256 $(cat weights/fmseg-unet25d.fmw.sha256)"
