#!/usr/bin/env bash
# Configures and builds the sidecar into a build directory cached outside the repository
# (${LOOM_HOME:-~/.cache/loom}/sidecar/build-MODE), so reruns only rebuild what changed.
#   build.sh release   optimized loom-sidecar + loom-pread-baseline (no tests)
#   build.sh asan      ASan+UBSan build with the GoogleTest suite
#   build.sh fuzz      clang libFuzzer targets (needs libclang-rt-14-dev)
#   build.sh cuda      like release with -DLOOM_WITH_CUDA=ON (needs the CUDA toolkit)
# The last line printed is the path of the loom-sidecar binary (the build directory for fuzz).
set -euo pipefail
source "$(dirname "$0")/common.sh"
mode=${1:-release}
case $mode in
  release) args=(-DCMAKE_BUILD_TYPE=Release -DLOOM_BUILD_TESTS=OFF -DLOOM_WITH_CUDA=OFF) ;;
  cuda) args=(-DCMAKE_BUILD_TYPE=Release -DLOOM_BUILD_TESTS=OFF -DLOOM_WITH_CUDA=ON) ;;
  asan) args=(-DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-g -O0" -DLOOM_SANITIZE=ON -DLOOM_WITH_CUDA=OFF) ;;
  fuzz)
    command -v clang++ >/dev/null || die "clang++ not found (run: make deps)"
    args=(-DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-g -O1" -DCMAKE_C_COMPILER=clang
          -DCMAKE_CXX_COMPILER=clang++ -DLOOM_FUZZ=ON -DLOOM_BUILD_TESTS=OFF) ;;
  *) die "usage: build.sh release|asan|fuzz|cuda" ;;
esac
# One build tree per checkout and mode. Builds of the same tree are serialized with flock (a test
# run and a pytest-triggered build may overlap); a tree configured from another checkout (a CI
# copy, a worktree) is left alone and this checkout uses build-MODE-<hash of its path> instead.
claim() {  # claim DIR: lock it; fail if another checkout configured it
  exec 9>"$1.lock"
  flock 9
  if [[ -f $1/CMakeCache.txt ]] && ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$SIDECAR_DIR" "$1/CMakeCache.txt"; then
    exec 9>&-
    return 1
  fi
}
mkdir -p "$SIDECAR_CACHE"
bdir=$SIDECAR_CACHE/build-$mode
if ! claim "$bdir"; then
  bdir=$bdir-$(printf %s "$SIDECAR_DIR" | sha256sum | cut -c1-8)
  log "build-$mode belongs to another checkout; using $bdir"
  claim "$bdir" || { rm -rf "$bdir"; claim "$bdir"; }
fi
mkdir -p "$bdir"
[[ -f $bdir/build.ninja ]] || log "configuring $mode build in $bdir"
cmake -G Ninja -S "$SIDECAR_DIR" -B "$bdir" "${args[@]}" >"$bdir/configure.log" 2>&1 \
  || { cat "$bdir/configure.log" >&2; die "cmake configure failed"; }
log "building $mode (-j$JOBS)"
cmake --build "$bdir" -j "$JOBS" >&2
if [[ $mode == fuzz ]]; then echo "$bdir"; else echo "$bdir/loom-sidecar"; fi
