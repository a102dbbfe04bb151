#!/usr/bin/env bash
# Builds e2e/kstatus (the kstatus of objects, computed by sigs.k8s.io/cli-utils) into
# ${LOOM_HOME:-~/.cache/loom}/bin/kstatus, once per version of its sources; prints the binary's path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
LOOM_HOME=${LOOM_HOME:-$HOME/.cache/loom}
BIN=$LOOM_HOME/bin
mkdir -p "$BIN"
version=$(cat "$here/main.go" "$here/go.mod" "$here/go.sum" | sha256sum | cut -d' ' -f1)
if [[ ! -x $BIN/kstatus || $(cat "$BIN/.kstatus.version" 2>/dev/null) != "$version" ]]; then
  echo "building kstatus (sigs.k8s.io/cli-utils $(grep 'sigs.k8s.io/cli-utils ' "$here/go.mod" | awk '{print $2}'))" >&2
  (cd "$here" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o "$BIN/kstatus" .)
  echo "$version" > "$BIN/.kstatus.version"
fi
echo "$BIN/kstatus"
