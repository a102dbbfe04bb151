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
  asan) args=(-DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-g -O1" -DLOOM_SANITIZE=ON -DLOOM_WITH_CUDA=OFF) ;;
  fuzz)
    command -v clang++ >/dev/null || die "clang++ not found (run: make deps)"
    args=(-DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-g -O1" -DCMAKE_C_COMPILER=clang
          -DCMAKE_CXX_COMPILER=clang++ -DLOOM_FUZZ=ON -DLOOM_BUILD_TESTS=OFF) ;;
  *) die "usage: build.sh release|asan|fuzz|cuda" ;;
esac
bdir=$SIDECAR_CACHE/build-$mode
# A cache made from another checkout cannot be reused: CMake refuses a different source dir.
if [[ -f $bdir/CMakeCache.txt ]] && ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$SIDECAR_DIR" "$bdir/CMakeCache.txt"; then
  log "build cache $bdir belongs to another checkout; starting afresh"
  rm -rf "$bdir"
fi
mkdir -p "$bdir"
if [[ ! -f $bdir/build.ninja ]]; then
  log "configuring $mode build in $bdir"
  cmake -G Ninja -S "$SIDECAR_DIR" -B "$bdir" "${args[@]}" >"$bdir/configure.log" 2>&1 \
    || { cat "$bdir/configure.log" >&2; die "cmake configure failed"; }
fi
log "building $mode (-j$JOBS)"
cmake --build "$bdir" -j "$JOBS" >&2
if [[ $mode == fuzz ]]; then echo "$bdir"; else echo "$bdir/loom-sidecar"; fi
