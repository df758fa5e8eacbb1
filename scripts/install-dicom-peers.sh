#!/usr/bin/env bash
# Installs the DICOM SEG checkers (highdicom 0.28.0, dcmqi 1.5.7 with segimage2itkimage,
# nibabel, numpy; from PyPI) into a virtual environment outside the checkout, reusing it when it
# is already there, and prints the interpreter's path as the last line of stdout:
#
#     export FMSEG_DICOM_PYTHON="$(scripts/install-dicom-peers.sh)"
#
# The venv: $FMSEG_DICOM_PEERS_VENV, else ${XDG_CACHE_HOME:-~/.cache}/fmseg/dicom-peers (about
# 15 s and 150 MB). tests/io/dicom_tools.rs runs scripts/check_seg.py with it.
set -euo pipefail

venv="${FMSEG_DICOM_PEERS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fmseg/dicom-peers}"
check='import highdicom, nibabel, numpy, pydicom, os, sys; assert highdicom.__version__ == "0.28.0", highdicom.__version__; assert os.access(os.path.join(os.path.dirname(sys.executable), "segimage2itkimage"), os.X_OK)'

if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "$check" 2>/dev/null; then
    echo "install-dicom-peers: reusing $venv" >&2
else
    python="${PYTHON:-python3}"
    if ! "$python" -m venv --help >/dev/null 2>&1; then
        echo "install-dicom-peers: $python cannot create virtual environments (install python3-venv)" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$venv")"
    [[ -x "$venv/bin/pip" ]] || "$python" -m venv "$venv"
    t0=$(date +%s)
    "$venv/bin/pip" install --no-cache-dir --progress-bar off --disable-pip-version-check \
        highdicom==0.28.0 dcmqi==1.5.7 nibabel numpy >&2
    "$venv/bin/python" -c "$check" >&2
    echo "install-dicom-peers: installed into $venv in $(( $(date +%s) - t0 )) s" >&2
fi
echo "$venv/bin/python"
