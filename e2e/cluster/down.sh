#!/usr/bin/env bash
# Removes the local cluster started by up.sh.
set -euo pipefail
LOOM_HOME=${LOOM_HOME:-$HOME/.cache/loom}
export KWOK_WORKDIR=$LOOM_HOME/kwok
CLUSTER=${LOOM_CLUSTER:-loom}
[[ ${GANG_SCHEDULING:-1} == 0 && $CLUSTER != *-nogang ]] && CLUSTER=$CLUSTER-nogang  # as up.sh names it
STATE=$LOOM_HOME/cluster
[[ $CLUSTER == loom ]] || STATE=$LOOM_HOME/cluster-$CLUSTER
"$LOOM_HOME/bin/kwokctl" delete cluster --name "$CLUSTER" >&2 || true
rm -f "$STATE/kubeconfig" "$STATE/config.sha256"
