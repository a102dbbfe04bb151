#!/usr/bin/env bash
# Builds the local control plane from Go modules into ${LOOM_HOME:-~/.cache/loom}/bin:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (Kubernetes),
# etcd, kwok and kwokctl. Idempotent: a binary already built for the pinned version is kept.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
LOOM_HOME=${LOOM_HOME:-$HOME/.cache/loom}
BIN=$LOOM_HOME/bin
SRC=$LOOM_HOME/src
mkdir -p "$BIN" "$SRC"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

stamp_ok() { [[ -x "$BIN/$1" && "$(cat "$BIN/.$1.version" 2>/dev/null)" == "$2" ]]; }
stamp() { echo "$2" > "$BIN/.$1.version"; }

build_kubernetes() {
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl) missing=()
  for c in "${cmds[@]}"; do stamp_ok "$c" "$KUBE_VERSION" || missing+=("$c"); done
  [[ ${#missing[@]} -eq 0 ]] && return
  local dir=$SRC/kubernetes-$KUBE_VERSION staging=v0${KUBE_VERSION#v1}
  mkdir -p "$dir"
  cd "$dir"
  local kmod
  kmod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    echo "module loom.local/kubernetes-build"
    grep -E '^(go|godebug) ' "$kmod"
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo "replace ("
    # every staging module k/k replaces with ./staging/src/... is taken from the proxy at the matching v0 version
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging"'#p' "$kmod"
    echo ")"
  } > go.mod
  {
    echo "//go:build tools"
    echo "package tools"
    echo "import ("
    for c in "${cmds[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$c\""; done
    echo ")"
  } > tools.go
  go mod tidy
  local pkg=k8s.io/component-base/version cpkg=k8s.io/client-go/pkg/version
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local vflags=""
  for p in $pkg $cpkg; do
    vflags+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  for c in "${missing[@]}"; do
    echo "building $c $KUBE_VERSION" >&2
    go build -trimpath -ldflags "-s -w $vflags" -o "$BIN/$c" "k8s.io/kubernetes/cmd/$c"
    stamp "$c" "$KUBE_VERSION"
  done
}

build_etcd() {
  stamp_ok etcd "$ETCD_VERSION" && return
  local dir=$SRC/etcd-$ETCD_VERSION
  mkdir -p "$dir" && cd "$dir"
  cat > go.mod <<GOMOD
module loom.local/etcd-build
go 1.26.0
require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go mod tidy
  echo "building etcd $ETCD_VERSION" >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" .
  stamp etcd "$ETCD_VERSION"
}

build_kwok() {
  stamp_ok kwok "$KWOK_VERSION" && stamp_ok kwokctl "$KWOK_VERSION" && return
  echo "building kwok $KWOK_VERSION" >&2
  GOBIN=$BIN go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
  stamp kwok "$KWOK_VERSION"; stamp kwokctl "$KWOK_VERSION"
}

(build_etcd)
(build_kwok)
(build_kubernetes)
echo "$BIN"
