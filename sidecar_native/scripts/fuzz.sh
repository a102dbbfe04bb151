#!/usr/bin/env bash
# Runs every libFuzzer target: first over its regression inputs (fuzz/regressions/TARGET, each
# must not crash), then fuzzing for SECONDS from the seed corpus (fuzz/corpus/TARGET). New
# corpus entries go to a scratch dir; crashes are saved in $LOOM_HOME/sidecar/fuzz-artifacts:
# copy a crash into fuzz/regressions/TARGET once it is fixed.
#   fuzz.sh [--seconds N] [--build-dir DIR] [TARGET...]     default 300 s per target
set -euo pipefail
source "$(dirname "$0")/common.sh"
seconds=300
fdir=""
targets=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --build-dir) fdir=$2; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ -n $fdir ]] || fdir=$("$SIDECAR_DIR/scripts/build.sh" fuzz | tail -1)
[[ ${#targets[@]} -gt 0 ]] || targets=(safetensors_fuzz shard_index_fuzz manifest_fuzz s3_xml_fuzz credentials_file_fuzz)
artifacts=$SIDECAR_CACHE/fuzz-artifacts
mkdir -p "$artifacts"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
for t in "${targets[@]}"; do
  exe=$fdir/$t
  [[ -x $exe ]] || die "missing fuzz target $exe"
  seeds=$SIDECAR_DIR/fuzz/corpus/$t
  regressions=$SIDECAR_DIR/fuzz/regressions/$t
  [[ -d $seeds ]] || die "missing seed corpus $seeds"
  if [[ -d $regressions ]] && compgen -G "$regressions/*" >/dev/null; then
    n=$(find "$regressions" -type f | wc -l)
    log "$t: replaying $n regression inputs"
    "$exe" -runs=1 "$regressions"/* >"$scratch/$t.replay.log" 2>&1 || { tail -40 "$scratch/$t.replay.log" >&2; die "$t crashed on a regression input"; }
  fi
  mkdir -p "$scratch/$t"
  dict=()
  [[ -f $SIDECAR_DIR/fuzz/$t.dict ]] && dict=(-dict="$SIDECAR_DIR/fuzz/$t.dict")
  log "$t: fuzzing for ${seconds}s from $(find "$seeds" -type f | wc -l) seeds"
  if ! "$exe" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -artifact_prefix="$artifacts/$t-" -print_final_stats=1 "$scratch/$t" "$seeds" >"$scratch/$t.log" 2>&1; then
    tail -60 "$scratch/$t.log" >&2
    die "$t found a failure; the input is under $artifacts"
  fi
  grep -E "stat::number_of_executed_units|Done [0-9]+ runs" "$scratch/$t.log" | tail -1 | sed "s/^/[sidecar] $t: /" >&2 || true
done
log "fuzzing passed: ${targets[*]}"
