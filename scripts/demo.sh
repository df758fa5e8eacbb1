#!/usr/bin/env bash
# The built-in example, from a fresh clone: build fmseg, make a synthetic axial-oblique T1 SIJ
# study (a real DICOM series with its ground-truth mask), and segment it.
#
#   scripts/demo.sh [OUT_DIR]        (default: ./example)
#
# Installs the Debian build dependencies first (cmake for the JPEG-LS codec; needs root or sudo).
# Until trained weights are published, weights/fmseg-unet25d.fmw is created here with the
# network's default random initialisation, and the segmentation says so: the pipeline runs
# end to end, but the mask is not a finding.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-example}"

scripts/install-debian-deps.sh
cargo build --release --locked
fmseg=target/release/fmseg

if [ ! -f weights/fmseg-unet25d.fmw ]; then
    "$fmseg" init-weights weights/fmseg-unet25d.fmw --seed 0
fi
"$fmseg" phantom --out "$out/study" --seed 0 --cases 1 --preview --force
"$fmseg" segment "$out/study/case_000/dicom" --out "$out/result"
echo
echo "study:  $out/study/case_000 (dicom/, fm_mask.nii.gz ground truth, manifest.json, preview.png)"
echo "result: $out/result (fm_mask.nii.gz, report.json, overlay.png)"
