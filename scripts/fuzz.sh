#!/usr/bin/env bash
# Fuzz every reader for longer than CI does: scripts/fuzz.sh [SECONDS] (default 3600, split
# evenly over the DICOM, NIfTI, .npy and weights targets of src/fuzz.rs). A failing input is
# saved under target/fuzz-failures/; once fixed, copy it into tests/data/fuzz/<target>/ so the
# tests replay it. Niced: it is meant to run beside other work.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-3600}
FMSEG_FUZZ_SECONDS=$seconds exec nice -n 10 cargo test --release --test io io_formats::readers_survive_mutated_inputs -- --nocapture
