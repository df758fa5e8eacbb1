#!/usr/bin/env bash
# The built-in example, from a fresh clone: build fmseg, make a synthetic axial-oblique T1 SIJ
# study (a real DICOM series with its ground-truth mask), segment it with the bundled weights
# and compare the result with the ground truth.
#
#   scripts/demo.sh [OUT_DIR]        (default: ./example)
#
# Installs the Debian build dependencies first (cmake for the JPEG-LS codec; needs root or sudo).
# The bundled weights (weights/fmseg-unet25d.fmw, model card in weights/README.md) were trained
# by fmseg itself on synthetic studies only: a demonstration, not a clinical device.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-example}"

scripts/install-debian-deps.sh
cargo build --release --locked
fmseg=target/release/fmseg

if [ ! -f weights/fmseg-unet25d.fmw ]; then
    echo "demo: weights/fmseg-unet25d.fmw is missing (it is part of the repository: restore it with git checkout weights/)" >&2
    exit 1
fi
"$fmseg" phantom --out "$out/study" --seed 0 --cases 1 --axspa-fraction 1 --preview --force
"$fmseg" segment "$out/study/case_000/dicom" --out "$out/result" --truth "$out/study/case_000/fm_mask.nii.gz"
echo
echo "study:  $out/study/case_000 (dicom/, fm_mask.nii.gz ground truth, manifest.json, preview.png)"
echo "result: $out/result (fm_mask.nii.gz, report.json, overlay.png: found FM green, missed yellow, false red)"
python3 - "$out/result/report.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["truth"]
f = lambda v: "-" if v is None else f"{v:.3f}"
print(f"against the ground truth: Dice {f(t['dice'])}, precision {f(t['precision'])}, recall {f(t['recall'])}; "
      f"{t['lesions_found']} of {t['truth_lesions']} lesions found, {t['false_lesions']} false")
PY
