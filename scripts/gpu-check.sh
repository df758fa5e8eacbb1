#!/usr/bin/env bash
# The one GPU check of the CUDA engine, in two halves.
#
# 1. On a development machine (no GPU needed):      scripts/gpu-check.sh
#    Builds the release `fmseg` binary and the GPU test binary (tests/gpu.rs, via
#    `cargo test --no-run --message-format=json`) with the kernels compiled by the pinned
#    toolchain, strips them, and packs them with the few fixture files the checks need (the
#    reference checkpoint as safetensors, two reference cases) into the git-ignored `.device/`.
#
# 2. On the GPU machine, in the repository root with `.device/` carried:
#        scripts/gpu-check.sh --run          (logs go to $OUT, default ./gpu-check-out)
#    nvidia-smi summary; every GPU test (each kernel against the float64 oracle, the network
#    against the CPU engine and the reference fixture); compute-sanitizer memcheck and
#    racecheck; the benchmark (ms per 192x192x16 patch at batch 1/4/8, a per-op profile, the
#    CUDA-graph replay over the planned arena at batch 1/8/16, the device-resident study) and
#    the PyTorch baselines (patches, and the TTA + ensemble study); then a short table, printed
#    last. Needs no Rust and no network there.
#    Target: under 6 minutes; every step is capped so the whole run ends within
#    $FMSEG_GPU_CHECK_BUDGET seconds (default 540) and the table always prints.
#
#    scripts/gpu-check.sh --run --dry-run   runs the --run half here, with the GPU steps
#                                            replaced by `echo` (checks the script itself).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
DEV=.device

die() { echo "gpu-check: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
pack() {
    set -e
    command -v cargo >/dev/null || die "cargo not found"
    local nvcc="${NVCC:-}"
    if [[ -z "$nvcc" ]]; then
        for h in "${CUDA_HOME:-}" "${CUDA_PATH:-}"; do [[ -n "$h" && -x "$h/bin/nvcc" ]] && nvcc="$h/bin/nvcc" && break; done
    fi
    [[ -z "$nvcc" ]] && nvcc="$(command -v nvcc || true)"
    [[ -z "$nvcc" ]] && nvcc="$(ls "$root"/.cuda-toolchain/lib/python3*/site-packages/nvidia/cu13/bin/nvcc 2>/dev/null | tail -n 1 || true)"
    [[ -n "$nvcc" ]] || die "no nvcc: run scripts/install-cuda-toolchain.sh (the kernels must be compiled in)"
    export NVCC="$nvcc"
    echo "== nvcc: $NVCC"

    echo "== building the release fmseg binary"
    cargo build --release --bin fmseg
    local target_dir
    target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"

    echo "== building the GPU test binary"
    local json testbin
    json="$(cargo test --test gpu --no-run --message-format=json)"
    testbin="$(printf '%s\n' "$json" | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "gpu" and m.get("executable"):
        print(m["executable"])')"
    [[ -x "$testbin" ]] || die "could not find the GPU test binary in cargo's output"

    echo "== checking that the kernels are embedded and the kernel table matches their PTX"
    FMSEG_REQUIRE_KERNELS=1 "$testbin" kernels_are_embedded kernel_table_matches_the_ptx --exact --quiet >/dev/null \
        || die "the test binary has no kernels (was nvcc found by build.rs?), or backend::cuda::KERNELS names a kernel its PTX lacks"

    rm -rf "$DEV"
    mkdir -p "$DEV/bin" "$DEV/fixtures"
    strip -o "$DEV/bin/fmseg" "$target_dir/release/fmseg"
    strip -o "$DEV/bin/gpu-tests" "$testbin"

    echo "== packing the fixtures"
    local ref="${FMSEG_REFERENCE_FIXTURES:-$root/../shared/fixtures/reference}"
    local py="${FMSEG_PYTHON:-}"
    if [[ -z "$py" ]]; then
        for c in /work/pyenv/bin/python python3; do
            if command -v "$c" >/dev/null && "$c" -c 'import torch, safetensors' 2>/dev/null; then py="$c"; break; fi
        done
    fi
    if [[ -d "$ref" && -n "$py" ]]; then
        "$py" scripts/pack_gpu_fixtures.py "$ref" "$DEV/fixtures"
        FMSEG_GPU_FIXTURES="$root/$DEV/fixtures" "$DEV/bin/gpu-tests" packed_fixtures_are_valid --exact --quiet \
            || die "the packed fixtures do not load (see packed_fixtures_are_valid)"
    else
        echo "WARNING: no reference fixtures ($ref) or no python with torch + safetensors (set FMSEG_PYTHON):"
        echo "         the fixture test will be skipped on the GPU machine"
        rmdir "$DEV/fixtures"
    fi
    git rev-parse HEAD >"$DEV/COMMIT" 2>/dev/null || true
    du -ah "$DEV" | sort -k2
    local total
    total="$(du -sm "$DEV" | cut -f1)"
    echo "== .device/ holds ${total} MiB (the carry limit is 64 MiB with the working tree)"
    [[ "$total" -lt 60 ]] || die ".device/ is ${total} MiB: too large to carry"
    echo
    echo "Run on the GPU machine (repository root), carrying .device:"
    echo "    scripts/gpu-check.sh --run"
}

# ---------------------------------------------------------------------------------------
# --run: each step writes its log under $OUT (at most 8 files come back) and records a line
# for the summary.
summary=()
run_step() { # name timeout_s logfile command...
    local name="$1" limit="$2" log="$3"
    shift 3
    # A global deadline keeps the whole run inside the device tool's 10-minute command limit, so
    # the summary always prints: a step gets at most the time that is left.
    local left=$(( DEADLINE - $(date +%s) ))
    if [[ $left -lt 15 ]]; then
        summary+=("$(printf '%-22s %-12s %4ss  %s' "$name" "NO TIME" 0 "skipped: the run's time budget is spent")")
        return 0
    fi
    [[ $limit -gt $left ]] && limit=$left
    local t0 rc start
    t0=$(date +%s)
    touch "$log"
    start=$(wc -l <"$log")
    echo "== $name (limit ${limit}s): $*" | tee -a "$log"
    if [[ -n "$DRY" ]]; then
        echo "dry-run: $*" >>"$log"
        rc=0
    else
        timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
        rc=$?
    fi
    local dt=$(( $(date +%s) - t0 ))
    local status="ok"
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then status="TIMEOUT"; elif [[ $rc -ne 0 ]]; then status="FAIL(rc=$rc)"; fi
    summary+=("$(printf '%-22s %-12s %4ss  %s' "$name" "$status" "$dt" "$(basename "$log")")")
    tail -n "+$((start + 2))" "$log" | tail -n 3
    return 0
}

sanitizer_step() { # name tool timeout log test-args...
    local name="$1" tool="$2" limit="$3" log="$4"
    shift 4
    if [[ -z "$SAN" ]]; then
        summary+=("$(printf '%-22s %-12s %4ss  %s' "$name" "SKIPPED" 0 "compute-sanitizer not found")")
        return 0
    fi
    run_step "$name" "$limit" "$log" env FMSEG_REQUIRE_GPU=1 "$SAN" --tool "$tool" --error-exitcode 86 \
        --print-limit 20 "$BIN" "$@"
    # Separate "the tool cannot run here" (gVisor: Device not supported) from findings.
    local last="${summary[-1]}"
    if grep -q "Device not supported\|Unable to find injection library\|Target application terminated before first instrumented API call" "$log" \
        && ! grep -q "ERROR SUMMARY" "$log"; then
        summary[-1]="$(printf '%-22s %-12s %4ss  %s' "$name" "UNAVAILABLE" 0 "sanitizer cannot attach here; see $(basename "$log")")"
    elif [[ "$last" == *" ok "* ]]; then
        local errs
        errs="$(grep -o 'ERROR SUMMARY: [0-9]* error' "$log" | tail -n 1)"
        summary[-1]="${last}  ${errs}"
    fi
}

# `fmseg segment` on a synthetic study with --device cpu and --device cuda: the two masks are
# compared voxel by voxel (the pipeline test in tests/gpu.rs checks the logits' argmax at
# confident voxels; this is the user's command end to end).
segment_step() {
    if ! "$DEV/bin/fmseg" segment --help >/dev/null 2>&1; then
        summary+=("$(printf '%-22s %-12s %4ss  %s' "segment cpu vs cuda" "SKIPPED" 0 "this fmseg has no segment command")")
        return 0
    fi
    local d="$OUT/seg" w=()
    [[ -f "$DEV/fixtures/weights_seed0.safetensors" ]] && w=(--weights "$DEV/fixtures/weights_seed0.safetensors")
    run_step "segment cpu vs cuda" 120 "$OUT/segment.log" bash -c '
        set -e
        rm -rf "$0"; mkdir -p "$0"
        "$1" phantom --out "$0/study" --seed 11 --cases 1
        for dev in cpu cuda; do
            "$1" segment "$0/study/case_000/dicom" --out "$0/$dev" --device $dev "${@:2}"
        done
        python3 - "$0/cpu/fm_mask.nii.gz" "$0/cuda/fm_mask.nii.gz" <<PY
import gzip, struct, sys
import numpy as np
def read(p):
    b = gzip.open(p).read()
    dims = struct.unpack("<8h", b[40:56]); off = int(struct.unpack("<f", b[108:112])[0])
    n = int(np.prod(dims[1:1 + dims[0]]))
    return np.frombuffer(b[off:off + n], dtype=np.uint8), dims
a, da = read(sys.argv[1]); b, db = read(sys.argv[2])
assert da == db, (da, db)
diff = int((a != b).sum())
print(f"SEGMENT masks cpu vs cuda: {diff} of {a.size} voxels differ ({diff / a.size:.2e}); foreground cpu {int(a.sum())} cuda {int(b.sum())}")
PY' "$d" "$DEV/bin/fmseg" "${w[@]}"
}

run() {
    OUT="${OUT:-$root/gpu-check-out}"
    mkdir -p "$OUT"
    BIN="$DEV/bin/gpu-tests"
    if [[ -z "$DRY" ]]; then
        [[ -x "$BIN" ]] || die "$BIN missing: run scripts/gpu-check.sh on a development machine and carry .device"
    fi
    local T0
    T0=$(date +%s)
    DEADLINE=$(( T0 + ${FMSEG_GPU_CHECK_BUDGET:-540} ))
    local fixtures=()
    [[ -d "$DEV/fixtures" ]] && fixtures=(FMSEG_GPU_FIXTURES="$root/$DEV/fixtures")
    [[ -f "$DEV/COMMIT" ]] && echo "commit: $(cat "$DEV/COMMIT")" | tee "$OUT/summary.txt"

    SAN="$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1 || true)"
    [[ -n "$DRY" ]] && SAN="${SAN:-compute-sanitizer}"

    # FMSEG_GPU_CHECK_STEPS picks steps (comma-separated names below); default: all.
    want() { [[ -z "${FMSEG_GPU_CHECK_STEPS:-}" || ",${FMSEG_GPU_CHECK_STEPS}," == *",$1,"* ]]; }
    want smi && run_step "nvidia-smi" 20 "$OUT/nvidia-smi.txt" nvidia-smi \
        --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
    want tests && run_step "gpu-tests" 180 "$OUT/tests.log" env FMSEG_REQUIRE_GPU=1 "${fixtures[@]}" "$BIN" --test-threads 4 --nocapture
    want segment && segment_step
    want bench && run_step "bench fmseg" 60 "$OUT/bench.log" "$DEV/bin/fmseg" bench --device cuda --batch 1,4,8 --iters 20
    # The whole study resident on the device: 384x384x20 at 0.75x0.75x4 mm -> 288x288x16, once
    # without TTA and as the reference's 4-fold x 13-pass ensemble (the same as torch-study).
    want study && run_step "bench study" 90 "$OUT/bench.log" "$DEV/bin/fmseg" bench --device cuda --study --sw-batch 4
    want graph && run_step "bench graph" 60 "$OUT/bench.log" "$DEV/bin/fmseg" bench --device cuda --graph --batch 1,8,16 --iters 20
    want layers && run_step "bench layers" 40 "$OUT/layers.log" "$DEV/bin/fmseg" bench --device cuda --layers
    # The benchmarks against PyTorch before the sanitizers: if the budget runs short, the
    # sanitizers (clean in every earlier run) are what gets cut.
    local w=()
    [[ -f "$DEV/fixtures/weights_seed0.safetensors" ]] && w=(--weights "$DEV/fixtures/weights_seed0.safetensors")
    want torch && run_step "bench pytorch" 120 "$OUT/bench.log" python3 scripts/gpu_bench_torch.py "${w[@]}" --compile-batches 1
    # The same study as `fmseg bench --study` (a 384x384x20 study at 0.75x0.75x4 mm, preprocessed
    # to 1x1x7 mm: about 288x288x16), plain and with the 52-pass TTA + 4-fold ensemble; eager
    # first, so its lines are in the log even if torch.compile's warm-up runs out of time.
    want torch-study && run_step "bench pytorch study" 150 "$OUT/bench.log" python3 scripts/gpu_bench_torch.py \
        --study "${w[@]}" --study-dims "${FMSEG_STUDY_DIMS:-288,288,16}" --sw-batch 4 --modes eager,compile
    want memcheck && sanitizer_step "memcheck network" memcheck 90 "$OUT/memcheck.log" network_sanitizer_pass --exact --ignored
    # racecheck serialises every shared-memory access: the op tests (every conv tile width, the
    # direct and transposed variants, the norm merge) are its practical scope; the whole network
    # under racecheck runs for many minutes. `op_conv` also selects `op_conv_norm`.
    want racecheck && sanitizer_step "racecheck convs" racecheck 150 "$OUT/racecheck.log" \
        op_conv op_instance_norm --test-threads 1
    want racecheck && sanitizer_step "racecheck up_add" racecheck 120 "$OUT/racecheck-up.log" op_up_add --test-threads 1
    want e2e && run_step "bench e2e" 60 "$OUT/bench.log" env FMSEG_REQUIRE_GPU=1 FMSEG_CUDA_SYNC=0 "$BIN" gpu_bench --exact --ignored --nocapture
    want racecheck-network && sanitizer_step "racecheck network" racecheck 240 "$OUT/racecheck-net.log" network_sanitizer_pass --exact --ignored

    {
        echo
        echo "================ fmseg GPU check: $(( $(date +%s) - T0 )) s ================"
        grep -v "^==" "$OUT/nvidia-smi.txt" 2>/dev/null | tail -n 1
        printf '%-22s %-12s %5s  %s\n' step status time log
        printf '%s\n' "${summary[@]}"
        echo "-- failing tests:"
        grep -E "^test .* FAILED|panicked at|^failures:" "$OUT/tests.log" 2>/dev/null | head -n 12
        grep -E "test result" "$OUT/tests.log" 2>/dev/null
        echo "-- accuracy (network):"
        grep -E "network logits|fixture .* logits|argmax differs" "$OUT/tests.log" 2>/dev/null | head -n 8
        echo "-- planned arena and CUDA graphs (bitwise against the pool's eager pass):"
        grep -E "values differ bitwise|device trace of|diverged pass" "$OUT/tests.log" 2>/dev/null | head -n 14
        echo "-- slowest ops (batch 1, each synchronised):"
        grep -E "^ *[0-9.]+ +[0-9.]+ +[0-9]+ " "$OUT/layers.log" 2>/dev/null | sort -rn | head -n 8
        echo "-- benchmark:"
        sed -n '/^device: cuda/,/^peak memory/p' "$OUT/bench.log" 2>/dev/null
        sed -n '/^CUDA graph bench/,/^allocs:/p' "$OUT/bench.log" 2>/dev/null
        sed -n '/^study /,/^GPU memory/p' "$OUT/bench.log" 2>/dev/null
        grep -h "GPU BENCH\|TORCH BENCH\|TORCH STUDY" "$OUT/bench.log" 2>/dev/null
        grep -h "SEGMENT masks\|phantom study" "$OUT/segment.log" "$OUT/tests.log" 2>/dev/null
    } | tee -a "$OUT/summary.txt"
}

DRY=""
case "${1:-}" in
    "") pack ;;
    --run)
        [[ "${2:-}" == "--dry-run" ]] && DRY=1
        run
        ;;
    -h | --help) sed -n '2,21p' "$0" ;;
    *) die "unknown argument $1 (use --run on the GPU machine, nothing to pack, --help)" ;;
esac
