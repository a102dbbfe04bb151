#!/usr/bin/env bash
# `make demo`: CRDs, the operator in the background, the examples, then what Loom made of them.
# The cluster (make cluster-up) is left running; `make demo-stop` stops the operator and the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
LOOM_HOME=${LOOM_HOME:-$HOME/.cache/loom}
export KUBECONFIG=$LOOM_HOME/cluster/kubeconfig
export PATH=$LOOM_HOME/bin:$PATH
DEMO=$LOOM_HOME/demo
NS=loom-demo
mkdir -p "$DEMO"

stop_operator() {
  local pid
  pid=$(cat "$DEMO/operator.pid" 2>/dev/null || true)
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    echo "operator stopped"
  fi
  rm -f "$DEMO/operator.pid"
}

if [[ ${1:-} == stop ]]; then
  # Delete the demo's resources while the operator still runs: it releases their finalizers.
  kubectl delete namespace "$NS" --ignore-not-found --timeout=120s >/dev/null 2>&1 || true
  stop_operator
  exit 0
fi

kubectl apply --server-side --force-conflicts -k crds/ >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
stop_operator
nohup .venv/bin/loom run --metrics-port 18080 --liveness-port 18081 > "$DEMO/operator.log" 2>&1 &
echo $! > "$DEMO/operator.pid"
healthy=false
for _ in $(seq 1 150); do
  if curl -sf localhost:18081/healthz >/dev/null; then healthy=true; break; fi
  kill -0 "$(cat "$DEMO/operator.pid")" 2>/dev/null || break
  sleep 0.2
done
if [[ $healthy != true ]]; then
  echo "the operator did not come up; its log ($DEMO/operator.log) ends with:" >&2
  tail -20 "$DEMO/operator.log" >&2
  exit 1
fi
echo "operator running (pid $(cat "$DEMO/operator.pid"), log $DEMO/operator.log, metrics http://localhost:18080/metrics)"

if [[ $(kubectl get namespace "$NS" -o jsonpath='{.status.phase}' 2>/dev/null) == Terminating ]]; then
  echo "waiting for the previous demo namespace to go"
  kubectl wait --for=delete "namespace/$NS" --timeout=120s >/dev/null
fi
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply --server-side -n "$NS" -f manifests/examples/
sleep "${DEMO_WAIT_SECONDS:-8}"
echo
echo "== nodes"
kubectl get nodes -L loom.ml/pool -o custom-columns='NAME:.metadata.name,POOL:.metadata.labels.loom\.ml/pool,GPUS:.status.allocatable.nvidia\.com/gpu'
echo
echo "== Loom resources in $NS"
kubectl get trainingjobs,inferenceservices,featurepipelines -n "$NS" -o wide
echo
echo "== pods in $NS"
kubectl get pods -n "$NS" -o wide
echo
cat <<MSG
The cluster keeps running. Try:
  export KUBECONFIG=$KUBECONFIG PATH=$LOOM_HOME/bin:\$PATH
  kubectl get loom -n $NS              # every Loom resource
  kubectl describe ltj -n $NS          # conditions and events of the training job
Stop the operator and the cluster: make demo-stop
MSG
