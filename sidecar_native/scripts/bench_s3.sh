#!/usr/bin/env bash
# Staging from a real S3 server on loopback, beside its peers, in one run: versitygw (signature
# checks on) serves one safetensors object of SIZE_MB; we time
#   curl       one signed GET of the whole object into /dev/shm (what `aws s3 cp` does per part)
#   loom s3    `loom-sidecar stage` of s3://bench/model.safetensors (parallel signed Range GETs)
#   loom file  `loom-sidecar stage` of the same bytes from a local file (the ceiling)
# and print MB/s and the ratio loom s3 / curl. Best of REPS. Not a test: numbers depend on the box.
# Wall-clock times include process start, HEAD/listing and header reads for every tool.
#   bench_s3.sh [SIZE_MB (default 1024)] [REPS (default 3)]
#   LOOM_BENCH_STAGE_FLAGS   extra `stage` flags for the s3:// run, e.g. "--threads 4"
set -euo pipefail
source "$(dirname "$0")/common.sh"
size_mb=${1:-1024}
reps=${2:-3}
bin=$("$SIDECAR_DIR/scripts/build.sh" release | tail -1)
gw=$("$SIDECAR_DIR/scripts/build_versitygw.sh" | tail -1)
work=$(mktemp -d /tmp/loom-bench-s3.XXXXXX)
shm=$(mktemp -d /dev/shm/loom-bench-s3.XXXXXX)
gw_pid=""
cleanup() {
  [[ -n $gw_pid ]] && kill "$gw_pid" 2>/dev/null && wait "$gw_pid" 2>/dev/null || true
  rm -rf "$work" "$shm"
}
trap cleanup EXIT

export AWS_ACCESS_KEY_ID=LOOMBENCHACCESS AWS_SECRET_ACCESS_KEY=loom-bench-secret-key-1234567890 AWS_REGION=us-east-1
port=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/root"
"$gw" --access "$AWS_ACCESS_KEY_ID" --secret "$AWS_SECRET_ACCESS_KEY" --port "127.0.0.1:$port" --keep-alive --quiet \
  posix "$work/root" >"$work/gw.log" 2>&1 &
gw_pid=$!
endpoint=http://127.0.0.1:$port
for _ in $(seq 100); do curl -s -o /dev/null "$endpoint" && break; sleep 0.1; done
sign=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")

log "writing a ${size_mb} MB model and uploading it"
"$PYTHON" - "$work/model.safetensors" "$size_mb" <<'EOF'
import json, os, struct, sys
path, mb = sys.argv[1], int(sys.argv[2])
n = 64  # tensors
per = mb * (1 << 20) // n // 4 * 4
header, off = {}, 0
for i in range(n):
    header[f"t{i}"] = {"dtype": "F32", "shape": [per // 4], "data_offsets": [off, off + per]}
    off += per
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    block = os.urandom(1 << 20)
    left = off
    while left:
        f.write(block[: min(left, len(block))])
        left -= min(left, len(block))
EOF
bytes=$(stat -c %s "$work/model.safetensors")
curl -sf "${sign[@]}" -X PUT "$endpoint/bench" >/dev/null
curl -sf "${sign[@]}" -T "$work/model.safetensors" "$endpoint/bench/model.safetensors" >/dev/null

now() { date +%s.%N; }
best_curl=0 best_s3=0 best_file=0
for r in $(seq "$reps"); do
  rm -rf "${shm:?}"/*
  t0=$(now); curl -sf "${sign[@]}" -o "$shm/curl.bin" "$endpoint/bench/model.safetensors"; t1=$(now)
  [[ $(stat -c %s "$shm/curl.bin") == "$bytes" ]] || die "curl got a short object"
  rm -f "$shm/curl.bin"
  # shellcheck disable=SC2086  # the flags are words
  t2=$(now); ${LOOM_BENCH_WRAP:-} "$bin" stage --dir "$shm" --s3-endpoint "$endpoint" ${LOOM_BENCH_STAGE_FLAGS:-} \
    m=s3://bench/model.safetensors >/dev/null 2>"$work/stage.log"; t3=$(now)
  log "  sidecar: $(grep -o "staged m: .*" "$work/stage.log") $(grep -o "[0-9.]*_user.*" "$work/stage.log" || true)"
  rm -rf "${shm:?}"/*
  t4=$(now); "$bin" stage --dir "$shm" m="$work/model.safetensors" >/dev/null 2>&1; t5=$(now)
  read -r c s f < <("$PYTHON" -c "b=$bytes/1e6; print(b/($t1-$t0), b/($t3-$t2), b/($t5-$t4))")
  log "round $r: curl $c MB/s, loom s3 $s MB/s, loom file $f MB/s"
  best_curl=$("$PYTHON" -c "print(max($best_curl, $c))")
  best_s3=$("$PYTHON" -c "print(max($best_s3, $s))")
  best_file=$("$PYTHON" -c "print(max($best_file, $f))")
done
"$PYTHON" -c "
print(f'bytes {$bytes}  best of $reps')
print(f'curl (one signed GET)      {$best_curl:8.0f} MB/s')
print(f'loom-sidecar s3://         {$best_s3:8.0f} MB/s  ({$best_s3 / $best_curl:.2f}x curl)')
print(f'loom-sidecar local file    {$best_file:8.0f} MB/s')
"
