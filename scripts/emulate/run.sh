#!/usr/bin/env bash
# Checks the CUDA kernels' logic on a machine without a GPU:
#   conv_mma.py        lane-level emulation of kernels/conv_mma.cu against numpy;
#   simple_kernels.py  every other kernel compiled for the host (host_shim.h, g++ >= 12 for
#                      _Float16 and std::barrier) and called through ctypes, against numpy.
# Needs python3 with numpy. Usage: scripts/emulate/run.sh [seed]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kdir="$here/../../kernels"
py="${PYTHON:-python3}"
seed="${1:-$RANDOM}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/inc"
: >"$tmp/inc/cuda_fp16.h"
srcs=()
for f in pool resize elementwise norm conv_direct window; do
    { echo '#include "host_shim.h"'; sed -e 's/extern __shared__ float sW\[\];/float* sW = g_dyn_smem;/' "$kdir/$f.cu"; } >"$tmp/k_$f.cpp"
    srcs+=("$tmp/k_$f.cpp")
done
g++ -std=c++20 -O1 -fPIC -shared -I"$tmp/inc" -I"$here" -I"$kdir" -o "$tmp/libk.so" "$here/host_wrap.cpp" "${srcs[@]}" -lpthread
echo "seed $seed"
FMSEG_EMU_LIB="$tmp/libk.so" "$py" "$here/simple_kernels.py" "$seed"
"$py" "$here/conv_mma.py" --seed "$seed"
