#!/usr/bin/env bash
# Removes the local cluster started by up.sh.
set -euo pipefail
LOOM_HOME=${LOOM_HOME:-$HOME/.cache/loom}
export KWOK_WORKDIR=$LOOM_HOME/kwok
"$LOOM_HOME/bin/kwokctl" delete cluster --name "${LOOM_CLUSTER:-loom}" >&2 || true
rm -f "$LOOM_HOME/cluster/kubeconfig"
