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
REDIS_PORT=${DEMO_REDIS_PORT:-16379}
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

stop_feature_runner() {
  local pid
  pid=$(cat "$DEMO/feature-runner.pid" 2>/dev/null || true)
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then kill "$pid"; echo "feature runner stopped"; fi
  rm -f "$DEMO/feature-runner.pid"
}

stop_redis() {
  if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    echo "redis-server on 127.0.0.1:$REDIS_PORT stopped"
  fi
}

if [[ ${1:-} == stop ]]; then
  # Delete the demo's resources while the operator still runs: it releases their finalizers.
  kubectl delete namespace "$NS" --ignore-not-found --timeout=120s >/dev/null 2>&1 || true
  stop_feature_runner
  stop_redis
  stop_operator
  exit 0
fi

kubectl apply --server-side --force-conflicts -k crds/ >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
stop_operator
# Only the demo namespace: the e2e suite (make test) runs its own operator on the same cluster.
nohup .venv/bin/loom run --namespace "$NS" --metrics-port 18080 --liveness-port 18081 > "$DEMO/operator.log" 2>&1 &
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

# Feature pipelines compute for real: a Redis on loopback, sample click events, and the clicks example
# pointed at both. KWOK runs no containers, so the runtime of each feature Job pod runs on this host
# (scripts/demo_feature_runner.py), which hands its exit code and summary to the pod as a kubelet would.
if ! redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --pidfile "$DEMO/redis.pid" --logfile "$DEMO/redis.log" --dir "$DEMO" >/dev/null
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
redis-cli -p "$REDIS_PORT" flushall >/dev/null
echo "redis-server on 127.0.0.1:$REDIS_PORT"
rm -rf "$DEMO/features"
.venv/bin/python scripts/demo_feature_runner.py data "$DEMO/events/clicks"
stop_feature_runner
nohup .venv/bin/python scripts/demo_feature_runner.py run --namespace "$NS" > "$DEMO/feature-runner.log" 2>&1 &
echo $! > "$DEMO/feature-runner.pid"
echo "feature runner running (pid $(cat "$DEMO/feature-runner.pid"), log $DEMO/feature-runner.log)"

for example in manifests/examples/*.yaml; do
  case $(basename "$example") in
    featurepipeline-clicks.yaml)
      sed -e "s#/data/events/clicks/\*.parquet#$DEMO/events/clicks/*.parquet#" \
          -e "s#/data/features/user_clicks#$DEMO/features/user_clicks#" \
          -e "s#redis://redis.feature-store:6379/0#redis://127.0.0.1:$REDIS_PORT/0#" "$example" |
        kubectl apply --server-side -n "$NS" -f -
      ;;
    featurepipeline-streaming.yaml)  # on the demo's Redis, with a SQL transform (the example's is user code)
      .venv/bin/python scripts/demo_feature_runner.py streaming-example "$example" \
        --redis "redis://127.0.0.1:$REDIS_PORT/0" | kubectl apply --server-side -n "$NS" -f -
      .venv/bin/python scripts/demo_feature_runner.py produce --redis "redis://127.0.0.1:$REDIS_PORT/0" --count 2000
      ;;
    *) kubectl apply --server-side -n "$NS" -f "$example" ;;
  esac
done
sleep "${DEMO_WAIT_SECONDS:-8}"
# The backfill's 7 days, then the first scheduled run from the watermark up to the newest tick.
for _ in $(seq 1 120); do
  phase=$(kubectl get lfp user-clicks -n "$NS" -o jsonpath='{.status.phase}' 2>/dev/null || true)
  [[ $phase == Scheduled || $phase == Succeeded || $phase == Failed ]] && break
  sleep 1
done
echo
echo "== nodes"
kubectl get nodes -L loom.ml/pool -o custom-columns='NAME:.metadata.name,POOL:.metadata.labels.loom\.ml/pool,GPUS:.status.allocatable.nvidia\.com/gpu'
echo
echo "== Loom resources in $NS"
kubectl get trainingjobs,inferenceservices,featurepipelines -n "$NS" -o wide
echo
echo "== gangs in $NS: all of a gang's pods are bound, or none (GangScheduled says why)"
kubectl get trainingjobs -n "$NS" -o custom-columns='NAME:.metadata.name,PHASE:.status.phase,ATTEMPT:.status.attempt,REPLICAS:.status.replicas,GANG:.status.conditions[?(@.type=="GangScheduled")].reason,WHY:.status.conditions[?(@.type=="GangScheduled")].message' |
  cut -c1-240
kubectl get pods -n "$NS" -l loom.ml/trainingjob --no-headers \
  -o custom-columns='JOB:.metadata.labels.loom\.ml/trainingjob,ATTEMPT:.metadata.labels.loom\.ml/attempt,NODE:.spec.nodeName' |
  awk '{k = $1 " attempt " $2; n[k]++; if ($3 != "<none>") b[k]++}
       END {for (k in n) printf "  %s: %d of %d pods bound%s\n", k, b[k], n[k], (b[k] && b[k] < n[k]) ? "  <- PARTLY BOUND" : ""}' |
  sort
echo
echo "== pods in $NS"
kubectl get pods -n "$NS" -o wide
echo
echo "== feature pipeline user-clicks (KWOK runs no containers: its runs ran on this host)"
kubectl get lfp user-clicks -n "$NS" \
  -o custom-columns='NAME:.metadata.name,PHASE:.status.phase,WATERMARK:.status.watermark,ROWS:.status.rowsWritten,BACKFILL:.status.backfill.succeeded,LAST-RUN:.status.lastRun.message'
grep -v '"progress"' "$DEMO/feature-runner.log" | grep -v 'loom features stream started' | tail -n 3 | cut -c1-200
echo
echo "== online features of user 42: redis-cli -p $REDIS_PORT HGETALL user:42"
redis-cli -p "$REDIS_PORT" HGETALL user:42
echo "offline: $(find "$DEMO/features/user_clicks" -name '*.parquet' 2>/dev/null | wc -l) Parquet files under $DEMO/features/user_clicks"
echo
for _ in $(seq 1 60); do  # the consumers' first micro-batches
  [[ $(redis-cli -p "$REDIS_PORT" EXISTS session:s-7) == 1 ]] && break
  sleep 1
done
echo "== streaming pipeline session-stream: a Deployment of consumers (each ran as loom features stream on this host)"
kubectl get lfp session-stream -n "$NS" \
  -o custom-columns='NAME:.metadata.name,PHASE:.status.phase,CONSUMERS-READY:.status.consumers,WANTED:.spec.streaming.consumers,STREAM:.spec.source.redisStream.stream'
grep '"progress"' "$DEMO/feature-runner.log" | tail -n 2 | cut -c1-200
echo "entries in the stream: $(redis-cli -p "$REDIS_PORT" XLEN sessions); pending in group loom: $(redis-cli -p "$REDIS_PORT" XPENDING sessions loom | head -1)"
echo "online features of session s-7: redis-cli -p $REDIS_PORT HGETALL session:s-7"
redis-cli -p "$REDIS_PORT" HGETALL session:s-7
echo
cat <<MSG
The cluster keeps running. Try:
  export KUBECONFIG=$KUBECONFIG PATH=$LOOM_HOME/bin:\$PATH
  kubectl get loom -n $NS              # every Loom resource
  kubectl describe ltj -n $NS          # conditions and events of the training job
  kubectl describe lfp user-clicks -n $NS   # runs, watermark, conditions and events of the pipeline
Stop the operator and the cluster: make demo-stop
MSG
