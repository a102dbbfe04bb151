#!/usr/bin/env bash
# The sidecar benchmark (see bench/sidecar/bench_sidecar.py): builds the release sidecar and the
# pread baseline, generates a ~2 GB model under $LOOM_HOME/bench (kept for reruns) and prints
# GB/s and ratios for the baseline, loom-sidecar, safetensors and runai-model-streamer, plus the
# second-consumer open time at 2 GB and up to 8 GB. Extra arguments go to the Python driver
# (e.g. --reps 5, --large-gb 4). Cleans its /dev/shm files up at the end.
set -euo pipefail
source "$(dirname "$0")/common.sh"
[[ -x $PYTHON ]] || die "no Python venv at $REPO_ROOT/.venv (run: make venv)"
bin=$("$SIDECAR_DIR/scripts/build.sh" release | tail -1)
baseline=$(dirname "$bin")/loom-pread-baseline
export PYTHONPATH=$REPO_ROOT/operator${PYTHONPATH:+:$PYTHONPATH}
exec "$PYTHON" "$REPO_ROOT/bench/sidecar/bench_sidecar.py" --sidecar "$bin" --baseline "$baseline" "$@"
