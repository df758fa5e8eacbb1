#!/usr/bin/env bash
# Compiles every kernels/*.cu with the pinned CUDA toolchain exactly as build.rs does (PTX for
# compute_80, an sm_90a cubin with ptxas -v) and fails when
#   - a file does not compile,
#   - a kernel spills registers or uses a stack frame (local memory in a hot loop costs more
#     than the kernel's own arithmetic), or
#   - the PTX is newer than ISA 9.0, which the GPU machines' driver (580, CUDA 13.0) rejects.
# Prints the resource table (registers, shared memory, stack, spills) of every kernel.
#
#   scripts/check-kernels.sh [--install]     (--install: run scripts/install-cuda-toolchain.sh
#                                              first when no nvcc is found)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

find_nvcc() {
    if [[ -n "${NVCC:-}" && -x "${NVCC}" ]]; then echo "$NVCC"; return; fi
    for h in "${CUDA_HOME:-}" "${CUDA_PATH:-}"; do
        if [[ -n "$h" && -x "$h/bin/nvcc" ]]; then echo "$h/bin/nvcc"; return; fi
    done
    if command -v nvcc >/dev/null 2>&1; then command -v nvcc; return; fi
    ls "$root"/.cuda-toolchain/lib/python3*/site-packages/nvidia/cu13/bin/nvcc 2>/dev/null | tail -n 1
}

nvcc="$(find_nvcc || true)"
if [[ -z "$nvcc" && "${1:-}" == "--install" ]]; then
    scripts/install-cuda-toolchain.sh
    nvcc="$(find_nvcc || true)"
fi
if [[ -z "$nvcc" ]]; then
    echo "check-kernels: no nvcc (set NVCC or CUDA_HOME, or run scripts/install-cuda-toolchain.sh)" >&2
    exit 2
fi
inc="$(dirname "$(dirname "$nvcc")")/include"
flags=(-O3 -std=c++17 -lineinfo -Ikernels)
[[ -d "$inc" ]] && flags+=("-I$inc")
echo "nvcc: $nvcc ($("$nvcc" --version | grep -o 'release [0-9.]*, V[0-9.]*'))"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail=0
report="$tmp/report.txt"
: >"$report"
for src in kernels/*.cu; do
    stem="$(basename "$src" .cu)"
    if ! "$nvcc" "${flags[@]}" --ptx -arch=compute_80 "$src" -o "$tmp/$stem.ptx" 2>"$tmp/$stem.ptx.log"; then
        echo "FAIL $src (ptx):"; cat "$tmp/$stem.ptx.log"; fail=1; continue
    fi
    ver="$(grep -m1 '^\.version' "$tmp/$stem.ptx" | awk '{print $2}')"
    if ! awk -v v="$ver" 'BEGIN { split(v, a, "."); exit !(a[1] < 9 || (a[1] == 9 && a[2] <= 0)) }'; then
        echo "FAIL $src: PTX ISA $ver is newer than 9.0 (driver 580 rejects it): is the toolchain pinned?"; fail=1
    fi
    if ! "$nvcc" "${flags[@]}" --cubin -gencode=arch=compute_90a,code=sm_90a -Xptxas -v "$src" \
        -o "$tmp/$stem.cubin" 2>"$tmp/$stem.log"; then
        echo "FAIL $src (sm_90a):"; cat "$tmp/$stem.log"; fail=1; continue
    fi
    awk -v m="$stem" '
        /Compiling entry function/ { if (k != "") print m, k, r, s, st, ss, sl; match($0, /\x27[^\x27]+\x27/); k = substr($0, RSTART + 1, RLENGTH - 2); r = s = st = ss = sl = 0 }
        /bytes stack frame/ { for (i = 1; i <= NF; i++) { if ($(i+1) == "bytes" && $(i+2) == "stack") st = $i; if ($(i+2) == "spill" && $(i+3) == "stores,") ss = $i; if ($(i+2) == "spill" && $(i+3) == "loads") sl = $i } }
        /Used [0-9]+ registers/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^registers/) r = $i; if ($(i+1) == "bytes" && $(i+2) ~ /^smem/) s = $i } }
        END { if (k != "") print m, k, r, s, st, ss, sl }' "$tmp/$stem.log" >>"$report"
done

printf '%-12s %-28s %5s %6s %6s %7s %7s\n' module kernel regs smem stack spill_st spill_ld
sort "$report" | while read -r m k r s st ss sl; do
    printf '%-12s %-28s %5s %6s %6s %7s %7s\n' "$m" "$k" "$r" "$s" "$st" "$ss" "$sl"
done
bad="$(awk '$5 > 0 || $6 > 0 || $7 > 0 { print "  " $2 ": stack " $5 " B, spill stores " $6 " B, spill loads " $7 " B" }' "$report")"
if [[ -n "$bad" ]]; then
    echo "FAIL: kernels with local memory (stack frame or spills):"; echo "$bad"; fail=1
fi
n="$(wc -l <"$report")"
if [[ "$fail" -ne 0 ]]; then
    echo "check-kernels: FAILED"
    exit 1
fi
echo "check-kernels: $n kernels in $(ls kernels/*.cu | wc -l) files compiled, PTX ISA <= 9.0, no spills"
