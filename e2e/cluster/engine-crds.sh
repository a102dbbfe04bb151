#!/usr/bin/env bash
# The real CRDs of the engines a FeaturePipeline emits children for, from those projects' Go modules
# (the module proxy serves their source): the Kubeflow Spark Operator's SparkApplication and KubeRay's
# RayJob. Copied into ${LOOM_HOME:-~/.cache/loom}/crds/engines; prints that directory. Idempotent.
# They are large (0.8 MB and 1.3 MB): install them with `kubectl apply --server-side`.
set -euo pipefail
SPARK_OPERATOR_VERSION=${SPARK_OPERATOR_VERSION:-v2.5.2}
KUBERAY_VERSION=${KUBERAY_VERSION:-v1.5.0}
LOOM_HOME=${LOOM_HOME:-$HOME/.cache/loom}
OUT=$LOOM_HOME/crds/engines
STAMP="spark-operator $SPARK_OPERATOR_VERSION, kuberay $KUBERAY_VERSION"
mkdir -p "$OUT"

if [[ "$(cat "$OUT/.version" 2>/dev/null)" != "$STAMP" ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  copy() {  # module@version, file inside it
    local dir
    dir=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "$1" | python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))')
    install -m 644 "$dir/$2" "$OUT/"
  }
  copy "github.com/kubeflow/spark-operator/v2@$SPARK_OPERATOR_VERSION" config/crd/bases/sparkoperator.k8s.io_sparkapplications.yaml
  copy "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION" config/crd/bases/ray.io_rayjobs.yaml
  echo "$STAMP" > "$OUT/.version"
fi
echo "$OUT"
