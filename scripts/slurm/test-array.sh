#!/usr/bin/env bash
# CI check of the cluster path: a single-node Slurm on localhost (local-cluster.sh), a 3-task
# job array (fmseg-batch.sbatch, one shard per task, one shared OUT) over a 3-study synthetic
# archive, then `fmseg batch --merge`: every selected series done exactly once.
#
#   scripts/slurm/test-array.sh [WORK_DIR]      (after cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
fmseg=$repo/target/release/fmseg
work=${1:-$(mktemp -d)}
mkdir -p "$work"
work=$(cd "$work" && pwd)

scripts/slurm/local-cluster.sh start "$work/slurm"
export SLURM_CONF=$work/slurm/slurm.conf
trap 'scripts/slurm/local-cluster.sh stop "$work/slurm"' EXIT

"$fmseg" phantom --out "$work/archive" --seed 11 --cases 3 --force >/dev/null
t0=$(date +%s)
rc=0
job=$(FMSEG=$fmseg sbatch --parsable --wait --array=0-2 --chdir "$work" \
    scripts/slurm/fmseg-batch.sbatch "$work/archive" "$work/out") || rc=$?
echo "slurm-array: job $job finished in $(( $(date +%s) - t0 )) s (sbatch exit status $rc)"
for f in "$work"/fmseg-batch-*.log; do echo "--- $(basename "$f")"; cat "$f"; done
states=$(scontrol show job "$job" 2>/dev/null | grep -o 'JobState=[A-Z]*' | sort | uniq -c || true)
echo "slurm-array: task states: $states"
[ "$rc" = 0 ] || { echo "slurm-array: a task failed" >&2; exit 1; }
"$fmseg" batch "$work/archive" --merge "$work/out" | tee "$work/merge.txt"
grep -q "^3 of 3 selected series done exactly once" "$work/merge.txt"
echo "slurm-array: ok"
