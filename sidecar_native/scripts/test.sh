#!/usr/bin/env bash
# The sidecar's tests, in order: GoogleTest under ASan+UBSan (ctest), the Python client tests
# against the real (ASan) binary, then a short bounded libFuzzer run of each fuzz target over
# its seed corpus and regression inputs. Exits non-zero on any failure.
#   FUZZ_SECONDS   seconds per fuzz target (default 8)
set -euo pipefail
source "$(dirname "$0")/common.sh"
FUZZ_SECONDS=${FUZZ_SECONDS:-8}
[[ -x $PYTHON ]] || die "no Python venv at $REPO_ROOT/.venv (run: make venv)"

bin=$("$SIDECAR_DIR/scripts/build.sh" asan | tail -1)
# The real S3 server of the S3 tests (GoogleTest and pytest): built once per machine, ~4 min cold on 2 cores.
LOOM_VERSITYGW=$("$SIDECAR_DIR/scripts/build_versitygw.sh" | tail -1)
export LOOM_VERSITYGW
bdir=$(dirname "$bin")
log "GoogleTest (ctest, ASan+UBSan)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
(cd "$bdir" && ctest --output-on-failure -j "$JOBS" --timeout 300)

log "Python client tests against $bin"
(cd "$REPO_ROOT" && LOOM_SIDECAR_BIN=$bin "$PYTHON" -m pytest -q -p no:cacheprovider operator/tests/test_shm*.py)

fdir=$("$SIDECAR_DIR/scripts/build.sh" fuzz | tail -1)
"$SIDECAR_DIR/scripts/fuzz.sh" --build-dir "$fdir" --seconds "$FUZZ_SECONDS"
log "all sidecar tests passed"
