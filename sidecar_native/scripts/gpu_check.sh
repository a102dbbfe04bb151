#!/usr/bin/env bash
# GPU check for an NVIDIA H100/H200 machine (none is available in the usual CI; run this where
# there is one). It:
#   1. builds the CUDA-enabled sidecar when nvcc / the CUDA toolkit is present (LOOM_WITH_CUDA=ON),
#      otherwise the plain release build (pinning is then done by the Python client only);
#   2. stages a model (GPU_CHECK_GB, default 4 GB) into /dev/shm with loom-sidecar;
#   3. measures host-to-device copies with torch: from the loom.shm mapping pageable, then pinned
#      (open_model(pin=True) -> cudaHostRegister), the time to pin, and
#      safetensors.torch.load_file(device="cuda") for comparison;
#   4. prints the figures. Exits non-zero with a clear message where there is no GPU.
set -euo pipefail
source "$(dirname "$0")/common.sh"
GB=${GPU_CHECK_GB:-4}
command -v nvidia-smi >/dev/null || die "no NVIDIA driver (nvidia-smi not found): this check needs a GPU machine"
nvidia-smi -L >&2 || die "nvidia-smi cannot see a GPU"
[[ -x $PYTHON ]] || die "no Python venv at $REPO_ROOT/.venv (run: make venv)"
"$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
  || die "torch in $PYTHON has no CUDA (install a CUDA build of torch)"

if command -v nvcc >/dev/null || [[ -d /usr/local/cuda ]]; then
  bin=$("$SIDECAR_DIR/scripts/build.sh" cuda | tail -1)
  log "built the CUDA-enabled sidecar: $("$bin" --version)"
else
  bin=$("$SIDECAR_DIR/scripts/build.sh" release | tail -1)
  log "no CUDA toolkit: using the plain build (the client pins its own mapping)"
fi

work=$LOOM_HOME/gpu-check
mkdir -p "$work"
shm=$(mktemp -d /dev/shm/loom-gpu-check-XXXXXX)
trap 'rm -rf "$shm"' EXIT
export PYTHONPATH=$REPO_ROOT/operator${PYTHONPATH:+:$PYTHONPATH}
"$PYTHON" - "$bin" "$work" "$shm" "$GB" <<'PY'
import json, subprocess, sys, time
from pathlib import Path
import torch
from safetensors.torch import save_file, load_file
from loom import shm

binary, work, shm_dir, gb = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
model = work / f"model-{gb:g}g.safetensors"
if not model.exists():
    n = int(gb * 1e9) // (64 << 20)
    save_file({f"t{i}": torch.randn(16 << 20) for i in range(n)}, str(model))  # 64 MiB F32 tensors
subprocess.run(["cat", str(model)], stdout=subprocess.DEVNULL, check=True)  # page cache
out = subprocess.run([binary, "stage", "--dir", str(shm_dir), f"m={model}"], capture_output=True, text=True, check=True)
staged = json.loads(out.stdout)["models"][0]
nbytes = staged["bytes"]
print(f"GPU: {torch.cuda.get_device_name()}; model {nbytes / 1e9:.2f} GB staged at {nbytes / staged['seconds'] / 1e9:.2f} GB/s")

def h2d(tensors: dict) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    for x in tensors.values():
        x.to("cuda", non_blocking=True)
    torch.cuda.synchronize()
    return nbytes / (time.perf_counter() - t) / 1e9

with shm.open_model("m", shm_dir) as m:
    h2d(m.as_torch())  # warm-up (context, allocator)
    pageable = h2d(m.as_torch())
with shm.open_model("m", shm_dir) as m:
    t = time.perf_counter()
    m.pin()
    pin_s = time.perf_counter() - t
    pinned = h2d(m.as_torch())
torch.cuda.synchronize()
t = time.perf_counter()
ref = load_file(str(model), device="cuda")
torch.cuda.synchronize()
st = nbytes / (time.perf_counter() - t) / 1e9
del ref
print(f"H2D from the loom.shm mapping, pageable:      {pageable:6.1f} GB/s")
print(f"cudaHostRegister of the mapping (pin=True):   {pin_s:6.3f} s")
print(f"H2D from the loom.shm mapping, pinned:        {pinned:6.1f} GB/s")
print(f"safetensors.torch.load_file(device='cuda'):   {st:6.1f} GB/s")
print(f"pinned / load_file: {pinned / st:.1f}x")
PY
