#!/usr/bin/env bash
# Coverage-guided fuzzing of every reader with AFL++ (cargo-afl, stable Rust).
#
#   scripts/fuzz-afl.sh [--seconds N] [--jobs J] [--dir DIR] [--ledger] [TARGET...]
#
# TARGETs are those of src/fuzz.rs (dicom dicom_series nifti npy weights rules dicom_net; default: all), each
# fuzzed for N seconds (default 600) of AFL++ time, J at a time (default 1), niced so that it
# runs beside other work. DIR (default target/fuzz-afl) keeps the seeds and AFL++'s queues, so
# a second run resumes from the corpus the first one grew. --ledger appends one line per target
# to fuzz/hours.csv (the README's fuzzing statement is the sum of that file).
#
# The seeds are fmseg's own writers' files (fuzz/src/bin/seeds.rs) plus, where DCMTK and GDCM
# are installed (scripts/install-debian-deps.sh), the classic DICOM seed re-encoded in every
# transfer syntax fmseg decodes. Exit status 1 when any target has a crash or a hang: the
# inputs are listed; each becomes a fixed bug and a case in tests/data/fuzz/<target>/ (and
# the findings move out of DIR/findings/<target>/default/, so the next run starts clean).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

seconds=600 jobs=1 dir=$repo/target/fuzz-afl ledger=0 targets=()
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --ledger) ledger=1; shift ;;
        -h|--help) sed -n 2,16p "$0"; exit 0 ;;
        -*) echo "fuzz-afl: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(dicom dicom_series nifti npy weights rules dicom_net)

if ! command -v cargo-afl >/dev/null 2>&1; then
    echo "fuzz-afl: installing cargo-afl 0.18.2 (builds AFL++ for this rustc)"
    cargo install cargo-afl --locked --version 0.18.2
fi
# The AFL++ runtime for this rustc (a no-op when built already).
cargo afl config --build >/dev/null 2>&1 || true

echo "fuzz-afl: building the harness (fuzz/, instrumented)"
(cd fuzz && cargo afl build --release --locked)
bin=$repo/fuzz/target/release

mkdir -p "$dir"
seeds=$dir/seeds
if [ ! -d "$seeds" ]; then
    "$bin/seeds" "$seeds.tmp"
    classic=$seeds.tmp/dicom/classic.dcm
    # Every transfer syntax fmseg decodes, from the same slice (skipped where a tool is absent).
    encode() { local name=$1; shift; if command -v "$1" >/dev/null 2>&1; then "$@" "$classic" "$seeds.tmp/dicom/$name" >/dev/null 2>&1 || echo "fuzz-afl: $1 failed for $name" >&2; fi; }
    encode implicit-le.dcm dcmconv +ti
    encode big-endian.dcm dcmconv +tb
    encode deflate.dcm dcmconv +td
    encode rle.dcm dcmcrle
    encode jpeg-lossless.dcm dcmcjpeg +el
    encode jpeg-lossless-sv1.dcm dcmcjpeg +e1
    encode jpeg-baseline.dcm dcmcjpeg +eb
    encode jpeg-ls.dcm dcmcjpls
    if command -v gdcmconv >/dev/null 2>&1; then
        gdcmconv --j2k "$classic" "$seeds.tmp/dicom/j2k.dcm" >/dev/null 2>&1 || echo "fuzz-afl: gdcmconv failed" >&2
    fi
    mv "$seeds.tmp" "$seeds"
fi
# a target added since DIR's seeds were made gets its own
for t in "${targets[@]}"; do
    if [ ! -d "$seeds/$t" ]; then
        rm -rf "$seeds.add"
        "$bin/seeds" "$seeds.add" && [ -d "$seeds.add/$t" ] && mv "$seeds.add/$t" "$seeds/$t"
        rm -rf "$seeds.add"
    fi
done

export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
    AFL_AUTORESUME=1 AFL_SKIP_CRASHES=1
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

# Inputs saved under OUT/default/KIND (crashes or hangs). Counted as files, not from AFL++'s
# counters, which a resumed queue restores even after fixed findings were moved away.
found() { find "$1/default/$2" -type f ! -name README.txt 2>/dev/null | wc -l; }

fuzz_one() {
    local t=$1 out=$dir/findings/$t
    mkdir -p "$out"
    # -m: the address-space limit (MB) a reader must live within; -t: ms per input before AFL++
    # calls it a hang. Every seed is a few kilobytes, so seconds per input is a bug.
    local t0; t0=$(date +%s)
    nice -n 19 cargo afl fuzz -i "$seeds/$t" -o "$out" -V "$seconds" -m 4096 -t 5000 -- "$bin/$t" \
        >"$out/afl.log" 2>&1 || {
        echo "fuzz-afl: afl-fuzz failed for $t (log: $out/afl.log)" >&2
        tail -n 20 "$out/afl.log" >&2
        return 1
    }
    # This run's own wall time (AFL++'s run_time adds up earlier runs of a resumed queue),
    # recorded as soon as the target ends (another run may resume the same queue later).
    local secs=$(( $(date +%s) - t0 )) stats=$out/default/fuzzer_stats
    echo "$secs" > "$out/last-seconds"
    if [ "$ledger" = 1 ] && [ -f "$stats" ]; then
        get() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
        [ -f fuzz/hours.csv ] || echo "date,commit,target,seconds,execs_total,corpus,crashes,hangs" > fuzz/hours.csv
        echo "$(date -u +%F),$commit,$t,$secs,$(get execs_done),$(get corpus_count),$(found "$out" crashes),$(found "$out" hangs)" \
            >> fuzz/hours.csv
    fi
}

running=0
for t in "${targets[@]}"; do
    [ -x "$bin/$t" ] || { echo "fuzz-afl: no target '$t'" >&2; exit 2; }
    echo "fuzz-afl: $t for $seconds s"
    fuzz_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait || true

status=0
for t in "${targets[@]}"; do
    stats=$dir/findings/$t/default/fuzzer_stats
    if [ ! -f "$stats" ]; then echo "fuzz-afl: $t produced no statistics" >&2; status=1; continue; fi
    get() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
    crashes=$(found "$dir/findings/$t" crashes) hangs=$(found "$dir/findings/$t" hangs)
    secs=$(cat "$dir/findings/$t/last-seconds" 2>/dev/null || echo 0)
    printf 'fuzz-afl: %-13s %6s s  %10s execs (all runs)  %5s paths  %s crashes  %s hangs\n' \
        "$t" "$secs" "$(get execs_done)" "$(get corpus_count)" "$crashes" "$hangs"
    if [ "$crashes" != 0 ] || [ "$hangs" != 0 ]; then
        status=1
        ls "$dir/findings/$t/default/crashes" "$dir/findings/$t/default/hangs" 2>/dev/null | grep -v README >&2 || true
    fi
done
exit $status
