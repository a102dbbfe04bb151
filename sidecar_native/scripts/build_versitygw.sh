#!/usr/bin/env bash
# Builds Versity's S3 gateway (github.com/versity/versitygw, a Go module from the module proxy)
# into ${LOOM_HOME:-~/.cache/loom}/bin/versitygw, the real S3 server the sidecar's S3 tests and
# scripts/bench_s3.sh run on loopback. Idempotent: a binary built for the pinned version is
# kept. Cold (empty Go module and build caches): 3 min 46 s on the 2-core shared VM, downloads
# included. Prints the binary's path.
set -euo pipefail
VERSITYGW_VERSION=${VERSITYGW_VERSION:-v1.8.0}
LOOM_HOME=${LOOM_HOME:-$HOME/.cache/loom}
BIN=$LOOM_HOME/bin
mkdir -p "$BIN"
exec 9>"$BIN/.versitygw.lock"
flock 9  # a test run and a bench may both ask for it
if [[ -x $BIN/versitygw && "$(cat "$BIN/.versitygw.version" 2>/dev/null)" == "$VERSITYGW_VERSION" ]]; then
  echo "$BIN/versitygw"
  exit 0
fi
command -v go >/dev/null || { echo "build_versitygw.sh: go not found (Go >= 1.24 is needed)" >&2; exit 1; }
echo "building versitygw $VERSITYGW_VERSION into $BIN" >&2
CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOBIN=$BIN \
  go install -trimpath -ldflags "-s -w" "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
echo "$VERSITYGW_VERSION" > "$BIN/.versitygw.version"
echo "$BIN/versitygw"
