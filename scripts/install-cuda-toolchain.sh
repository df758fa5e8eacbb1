#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler (nvcc, ptxas, headers) from the Python package index
# into .cuda-toolchain/ in the repository root, where build.rs and scripts/check-kernels.sh
# find it. Idempotent: an existing toolchain of the pinned version is kept.
#
# Every package is pinned: an unpinned install mixes in newer parts that emit PTX ISA newer
# than the GPU machines' driver (580, CUDA 13.0, ISA 9.0) accepts.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.cuda-toolchain"
pins=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)

find_nvcc() { ls "$venv"/lib/python3*/site-packages/nvidia/cu13/bin/nvcc 2>/dev/null | head -n 1; }

nvcc="$(find_nvcc || true)"
if [[ -n "$nvcc" ]] && "$nvcc" --version 2>/dev/null | grep -q "release 13.0, V13.0.88"; then
    echo "CUDA toolchain already installed: $nvcc"
    exit 0
fi

python="${PYTHON:-python3}"
if ! "$python" -m venv --help >/dev/null 2>&1; then
    echo "error: $python cannot create virtual environments (install python3-venv)" >&2
    exit 1
fi
[[ -x "$venv/bin/pip" ]] || "$python" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "${pins[@]}"

nvcc="$(find_nvcc || true)"
if [[ -z "$nvcc" ]]; then
    echo "error: the packages installed but no nvcc was found under $venv" >&2
    exit 1
fi
"$nvcc" --version | tail -n 2
echo "installed: $nvcc (build.rs finds it; run 'touch kernels' if fmseg was built without it)"
