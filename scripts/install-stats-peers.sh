#!/usr/bin/env bash
# Installs the peers of src/pipeline/stats.rs (numpy, scipy, scikit-learn from PyPI) into a
# virtual environment outside the checkout, reusing it when it is already there, and prints the
# interpreter's path as the last line of stdout (pip's output goes to stderr):
#
#     export FMSEG_STATS_PYTHON="$(scripts/install-stats-peers.sh | tail -n 1)"
#
# The venv: $FMSEG_STATS_VENV, else ${XDG_CACHE_HOME:-~/.cache}/fmseg/stats-peers. Wheels only
# (about 60 MB to download). tests/pipeline/stats.rs checks the statistics against them.
set -euo pipefail

venv="${FMSEG_STATS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fmseg/stats-peers}"
check='import numpy, scipy.stats, scipy.ndimage, sklearn.metrics'

if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "$check" 2>/dev/null; then
    echo "install-stats-peers: reusing $venv" >&2
else
    python="${PYTHON:-python3}"
    if ! "$python" -m venv --help >/dev/null 2>&1; then
        echo "install-stats-peers: $python cannot create virtual environments (install python3-venv)" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$venv")"
    [[ -x "$venv/bin/pip" ]] || "$python" -m venv "$venv"
    t0=$(date +%s)
    "$venv/bin/pip" install --no-cache-dir --progress-bar off --disable-pip-version-check \
        --only-binary=:all: numpy scipy scikit-learn >&2
    "$venv/bin/python" -c "$check" >&2
    echo "install-stats-peers: installed into $venv in $(( $(date +%s) - t0 )) s" >&2
fi
echo "$venv/bin/python"
