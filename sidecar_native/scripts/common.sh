# Shared settings for the sidecar scripts (sourced, not run).
SIDECAR_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_ROOT=$(cd "$SIDECAR_DIR/.." && pwd)
LOOM_HOME=${LOOM_HOME:-$HOME/.cache/loom}
SIDECAR_CACHE=$LOOM_HOME/sidecar
JOBS=${LOOM_JOBS:-2}
PYTHON=${PYTHON:-$REPO_ROOT/.venv/bin/python}

log() { echo "[sidecar] $*" >&2; }
die() { echo "[sidecar] error: $*" >&2; exit 1; }
