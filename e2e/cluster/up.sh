#!/usr/bin/env bash
# Starts the local cluster: etcd + kube-apiserver + kube-controller-manager + kube-scheduler
# (Kubernetes built from Go modules by build.sh) with KWOK simulating nodes and pod lifecycles.
# Fake nodes: GPU_NODES with nvidia.com/gpu: GPUS_PER_NODE, and CPU_NODES.
# Gang scheduling (DESIGN.md §7): by default the API server serves scheduling.k8s.io/v1alpha2 and
# kube-scheduler places PodGroups all-or-nothing (gates GenericWorkload, GangScheduling); GANG_SCHEDULING=0
# starts without them, as a 1.34 cluster is, under its own name (<name>-nogang) and state, so that the
# two never recreate each other.
# Prints the kubeconfig path as its last line. Idempotent: an up cluster is reused (its node count
# adjusted) unless its configuration (binaries' version, options, stages.yaml) changed: then it is recreated.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
LOOM_HOME=${LOOM_HOME:-$HOME/.cache/loom}
CLUSTER=${LOOM_CLUSTER:-loom}
GANG_SCHEDULING=${GANG_SCHEDULING:-1}
[[ $GANG_SCHEDULING == 0 && $CLUSTER != *-nogang ]] && CLUSTER=$CLUSTER-nogang
GPU_NODES=${GPU_NODES:-4}
CPU_NODES=${CPU_NODES:-2}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
BIN=$LOOM_HOME/bin
STATE=$LOOM_HOME/cluster
[[ $CLUSTER == loom ]] || STATE=$LOOM_HOME/cluster-$CLUSTER
export KWOK_WORKDIR=$LOOM_HOME/kwok
KUBECONFIG_OUT=$STATE/kubeconfig
mkdir -p "$STATE"

"$here/build.sh" >/dev/null
export PATH=$BIN:$PATH

kube_version=$(cat "$BIN/.kube-apiserver.version")
config=$STATE/kwokctl.yaml
# Several checkouts (and e2e runs) share the cluster and these files: each is written under a temporary
# name and renamed, so that a concurrent up.sh never reads half of one (a torn config would hash
# differently and recreate the cluster; a torn kubeconfig points kubectl at localhost:8080).
tmp=$(mktemp "$STATE/.up.XXXXXX")
trap 'rm -f "$tmp" "$tmp".*' EXIT
cp "$here/audit-policy.yaml" "$tmp.audit" && mv -f "$tmp.audit" "$STATE/audit-policy.yaml"  # one path for all
cat > "$tmp.config" <<YAML
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  kubeVersion: $kube_version
  bindAddress: 127.0.0.1
  disableQPSLimits: true
  kubeApiserverBinary: $BIN/kube-apiserver
  kubeControllerManagerBinary: $BIN/kube-controller-manager
  kubeSchedulerBinary: $BIN/kube-scheduler
  kubectlBinary: $BIN/kubectl
  kwokControllerBinary: $BIN/kwok
  etcdBinary: $BIN/etcd
  kubeControllerManagerNodeMonitorGracePeriodMilliseconds: 20000
  kubeAuditPolicy: $STATE/audit-policy.yaml
YAML
if [[ $GANG_SCHEDULING != 0 ]]; then
  cat >> "$tmp.config" <<YAML
  kubeFeatureGates: "GenericWorkload=true,GangScheduling=true"
  kubeRuntimeConfig: "scheduling.k8s.io/v1alpha2=true"
YAML
fi
cat "$here/stages.yaml" >> "$tmp.config"
mv -f "$tmp.config" "$config"

config_hash=$(cat "$config" "$STATE/audit-policy.yaml" | sha256sum | cut -d' ' -f1)
if [[ $(cat "$STATE/config.sha256" 2>/dev/null) != "$config_hash" ]] && kwokctl get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "cluster $CLUSTER was started with another configuration (e.g. stages.yaml changed): recreating it" >&2
  kwokctl delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
fi
if ! kwokctl get clusters 2>/dev/null | grep -qx "$CLUSTER" || ! kwokctl --name "$CLUSTER" kubectl get --raw /readyz >/dev/null 2>&1; then
  kwokctl delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  rm -f "$STATE/config.sha256"
  echo "starting cluster $CLUSTER ($kube_version)" >&2
  start=$(date +%s.%N)
  kwokctl create cluster --name "$CLUSTER" --config "$config" --wait 120s --quiet-pull >&2
  echo "control plane up in $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s" >&2
  echo "$config_hash" > "$STATE/config.sha256"
fi
kwokctl get kubeconfig --name "$CLUSTER" > "$tmp.kubeconfig" && mv -f "$tmp.kubeconfig" "$KUBECONFIG_OUT"
export KUBECONFIG=$KUBECONFIG_OUT

nodes() {
  local i
  for ((i = 0; i < GPU_NODES; i++)); do
    cat <<YAML
---
apiVersion: v1
kind: Node
metadata:
  name: gpu-node-$i
  annotations: {kwok.x-k8s.io/node: fake}
  labels:
    type: kwok
    kubernetes.io/hostname: gpu-node-$i
    kubernetes.io/os: linux
    nvidia.com/gpu.present: "true"
    nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3
    loom.ml/pool: gpu
spec: {}
status:
  allocatable: {cpu: "96", memory: 1Ti, pods: "110", nvidia.com/gpu: "$GPUS_PER_NODE"}
  capacity: {cpu: "96", memory: 1Ti, pods: "110", nvidia.com/gpu: "$GPUS_PER_NODE"}
YAML
  done
  for ((i = 0; i < CPU_NODES; i++)); do
    cat <<YAML
---
apiVersion: v1
kind: Node
metadata:
  name: cpu-node-$i
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {type: kwok, kubernetes.io/hostname: cpu-node-$i, kubernetes.io/os: linux, loom.ml/pool: cpu}
spec: {}
status:
  allocatable: {cpu: "32", memory: 128Gi, pods: "110"}
  capacity: {cpu: "32", memory: 128Gi, pods: "110"}
YAML
  done
}
nodes | kubectl apply -f - >/dev/null
# Remove fake nodes beyond the requested counts (a reused cluster may have had more).
for n in $(kubectl get nodes -o name | sed 's#node/##'); do
  index=${n##*-}
  if [[ ($n == gpu-node-* && $index -ge $GPU_NODES) || ($n == cpu-node-* && $index -ge $CPU_NODES) ]]; then
    kubectl delete node "$n" --wait=false >/dev/null
  fi
done
kubectl wait --for=condition=Ready nodes --all --timeout=120s >/dev/null
# Pods need the default ServiceAccount, which the controller-manager creates per namespace.
for _ in $(seq 1 100); do kubectl get serviceaccount default -n default >/dev/null 2>&1 && break; sleep 0.2; done
echo "$KUBECONFIG_OUT"
