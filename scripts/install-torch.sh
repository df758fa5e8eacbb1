#!/usr/bin/env bash
# Installs the PyTorch baseline's Python (torch==2.9.1, numpy, safetensors from PyPI) into a
# virtual environment outside the checkout, reusing it when it is already there, and prints the
# interpreter's path as the last line of stdout (pip's output goes to stderr):
#
#     export FMSEG_PYTHON="$(scripts/install-torch.sh)"
#
# The venv: $FMSEG_TORCH_VENV, else ${XDG_CACHE_HOME:-~/.cache}/fmseg/torch-2.9.1. The PyPI
# wheel pulls PyTorch's CUDA libraries (about 3 GB to download, 6.8 GB installed; about 2.5 min
# on the 2-core development machine). tests/ops/torch_baseline.rs uses it on the CPU only.
set -euo pipefail

venv="${FMSEG_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fmseg/torch-2.9.1}"
check='import torch, numpy, safetensors; assert torch.__version__.split("+")[0] == "2.9.1", torch.__version__'

if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "$check" 2>/dev/null; then
    echo "install-torch: reusing $venv" >&2
else
    python="${PYTHON:-python3}"
    if ! "$python" -m venv --help >/dev/null 2>&1; then
        echo "install-torch: $python cannot create virtual environments (install python3-venv)" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$venv")"
    [[ -x "$venv/bin/pip" ]] || "$python" -m venv "$venv"
    t0=$(date +%s)
    "$venv/bin/pip" install --no-cache-dir --progress-bar off --disable-pip-version-check \
        torch==2.9.1 numpy safetensors >&2
    "$venv/bin/python" -c "$check" >&2
    echo "install-torch: installed into $venv in $(( $(date +%s) - t0 )) s" >&2
fi
echo "$venv/bin/python"
