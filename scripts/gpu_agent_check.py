#!/usr/bin/env python3
"""GPU check of `loom gpu-agent` on a machine with an NVIDIA GPU (part of `make gpu-check`; never of
`make test`: CI has no GPU).

It starts the agent (the real nvidia-ml-py backend, --export-only: no node to write) on a free port,
reads its /metrics at rest, loads GPU 0 with a PyTorch matmul loop for GPU_CHECK_SECONDS (default 20)
while reading /metrics every second, and asserts plausible readings: utilization > 50 %, memory in
use grown by at least 1 GiB, temperature, power and SM clock non-zero, NVML up, the node healthy, no
XID. It runs `promtool check metrics` on the real exposition (only DCGM's own camelCase `modelName`
label may be flagged) and prints a table of what it read. Exits 1 with what is missing where there
is no GPU, no driver or no CUDA build of torch.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
SECONDS = float(os.environ.get("GPU_CHECK_SECONDS") or 20)


def die(message: str) -> None:
    print(f"gpu-agent check: {message}", file=sys.stderr)
    sys.exit(1)


def preflight() -> None:
    if shutil.which("nvidia-smi") is None:
        die("no NVIDIA driver (nvidia-smi not found): this check needs a machine with an NVIDIA GPU")
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    if listed.returncode != 0 or "GPU 0" not in listed.stdout:
        die(f"nvidia-smi sees no GPU: {listed.stderr.strip() or listed.stdout.strip()}")
    print(listed.stdout.strip())
    try:
        import torch
    except ImportError:
        die(f"torch is not installed in {sys.executable} (pip install a CUDA build of torch)")
    if not torch.cuda.is_available():
        die(f"torch {torch.__version__} in {sys.executable} has no CUDA (install a CUDA build of torch)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> tuple[str, dict[str, float]]:
    """The exposition, and GPU 0's DCGM fields and the agent's node-level series by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            gpu0 = s.name.startswith("DCGM_") and s.labels.get("gpu") == "0"
            if gpu0 or s.name in ("loom_gpu_nvml_up", "loom_gpu_node_healthy", "loom_gpu_devices"):
                values[s.name] = s.value
    return text, values


def load(stop: threading.Event, report: dict[str, float]) -> None:
    import torch

    device = torch.device("cuda:0")
    ballast = torch.empty(4 << 30, dtype=torch.uint8, device=device)  # 4 GiB in use, held
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    c = torch.empty_like(a)
    torch.cuda.synchronize()
    flops, started = 0.0, time.perf_counter()
    while not stop.is_set():
        for _ in range(20):
            torch.matmul(a, b, out=c)
        torch.cuda.synchronize()
        flops += 20 * 2 * 8192**3
    report["tflops"] = flops / (time.perf_counter() - started) / 1e12
    del ballast


def main() -> None:
    preflight()
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="loom-gpu-agent-check-")) / "agent.log"
    log = log_path.open("wb")
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loom.cli",
            "gpu-agent",
            "--export-only",
            "--interval",
            "1",
            "--address",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                text, rest = scrape(port)
                if "DCGM_FI_DEV_GPU_UTIL" in text:
                    break
            except OSError:
                pass
            if agent.poll() is not None or time.monotonic() > deadline:
                die(f"the agent exported no GPU; its log:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        time.sleep(2)
        text, rest = scrape(port)
        stop, report = threading.Event(), {}
        worker = threading.Thread(target=load, args=(stop, report))
        worker.start()
        peak: dict[str, float] = {}
        until = time.monotonic() + SECONDS
        while time.monotonic() < until:
            time.sleep(1)
            _, now = scrape(port)
            for k, v in now.items():
                peak[k] = max(peak.get(k, v), v)
        _, loaded = scrape(port)
        stop.set()
        worker.join()
    finally:
        agent.terminate()
        agent.wait(15)

    rows = [
        ("utilization %", "DCGM_FI_DEV_GPU_UTIL"),
        ("memory used MiB", "DCGM_FI_DEV_FB_USED"),
        ("memory free MiB", "DCGM_FI_DEV_FB_FREE"),
        ("temperature C", "DCGM_FI_DEV_GPU_TEMP"),
        ("power W", "DCGM_FI_DEV_POWER_USAGE"),
        ("SM clock MHz", "DCGM_FI_DEV_SM_CLOCK"),
        ("ECC DBE volatile", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"),
        ("remapped rows (uncorr.)", "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS"),
        ("clock event reasons", "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"),
        ("last XID", "DCGM_FI_DEV_XID_ERRORS"),
    ]
    print(f"\n{'GPU 0':26} {'at rest':>12} {'peak under load':>16} {'end of load':>12}")
    for label, name in rows:
        print(
            f"{label:26} {rest.get(name, float('nan')):12.1f} {peak.get(name, float('nan')):16.1f} "
            f"{loaded.get(name, float('nan')):12.1f}"
        )
    print(f"matmul: {report.get('tflops', 0):.1f} TFLOP/s bf16 over {SECONDS:g} s")

    problems = []
    if peak.get("DCGM_FI_DEV_GPU_UTIL", 0) <= 50:
        problems.append(f"utilization peaked at {peak.get('DCGM_FI_DEV_GPU_UTIL')} %, not > 50 %")
    if peak.get("DCGM_FI_DEV_FB_USED", 0) - rest.get("DCGM_FI_DEV_FB_USED", 0) < 1024:
        problems.append("memory in use did not grow by 1 GiB under a 4 GiB allocation")
    for name in ("DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_SM_CLOCK"):
        if not peak.get(name):
            problems.append(f"{name} read {peak.get(name)}")
    if rest.get("loom_gpu_nvml_up") != 1 or loaded.get("loom_gpu_node_healthy") != 1:
        problems.append(
            f"NVML up {rest.get('loom_gpu_nvml_up')}, node healthy {loaded.get('loom_gpu_node_healthy')}"
        )
    if loaded.get("DCGM_FI_DEV_XID_ERRORS"):
        problems.append(f"an XID was reported: {loaded['DCGM_FI_DEV_XID_ERRORS']}")
    promtool = shutil.which("promtool")
    if promtool:
        checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        findings = [f for f in (checked.stdout + checked.stderr).splitlines() if f.strip()]
        odd = [f for f in findings if "label names should be written in 'snake_case'" not in f]
        print(
            f"promtool check metrics: {len(findings)} finding(s), {len(odd)} besides DCGM's modelName label"
        )
        problems += [f"promtool: {f}" for f in odd]
    else:
        print("promtool not installed (Debian's prometheus package): exposition not linted")
    if problems:
        die("implausible readings:\n  " + "\n  ".join(problems))
    print("gpu-agent check: OK")


if __name__ == "__main__":
    main()
