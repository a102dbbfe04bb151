#!/usr/bin/env python3
"""Sidecar benchmark: how fast a model gets from a file in page cache into shared memory, and how
fast a second process gets every tensor. All figures are measured in this one run:

  (a) the machine's limit: loom-pread-baseline, a plain single-threaded pread loop into a fresh
      tmpfs mapping;
  (b) loom-sidecar stage (threads, fallocate, one read per work item into the aligned mapping);
  (c) safetensors.numpy.load_file;
  (d) runai-model-streamer's SafetensorsStreamer (CPU);
  (e) a second consumer: a new process doing loom.shm.open_model + a numpy view of every tensor,
      at ~2 GB and at the largest size up to 8 GB that /dev/shm and free memory allow.

Usage: bench_sidecar.py --sidecar BIN --baseline BIN [--size-gb 2] [--large-gb 8] [--reps 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

GB = 1e9
CHUNK = 16 << 20


def llama_like(d: int, layers: int, vocab: int = 32000) -> list[tuple[str, tuple[int, ...]]]:
    """Tensor names and shapes (F16) shaped like a Llama block stack: 9 tensors per layer."""
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, d))]
    ff, kv = 4 * d, d // 4
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (d,)),
            (p + "self_attn.q_proj.weight", (d, d)),
            (p + "self_attn.k_proj.weight", (kv, d)),
            (p + "self_attn.v_proj.weight", (kv, d)),
            (p + "self_attn.o_proj.weight", (d, d)),
            (p + "post_attention_layernorm.weight", (d,)),
            (p + "mlp.gate_proj.weight", (ff, d)),
            (p + "mlp.up_proj.weight", (ff, d)),
            (p + "mlp.down_proj.weight", (d, ff)),
        ]
    out += [("model.norm.weight", (d,)), ("lm_head.bias", (vocab,))]
    return out


def write_model(path: Path, tensors: list[tuple[str, tuple[int, ...]]], sparse: bool) -> int:
    """Writes a safetensors file (F16); sparse: data left as a hole (reads as zeros, no disk)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt", "generator": "loom bench"}}
    off = 0
    for name, shape in tensors:
        n = 2 * int(np.prod(shape))
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        if sparse:
            f.truncate(8 + len(raw) + off)
        else:
            block = np.random.default_rng(0).integers(0, 256, size=CHUNK + 4096, dtype=np.uint8).tobytes()
            left, i = off, 0
            while left:
                n = min(left, CHUNK)
                f.write(block[i % 4096 : i % 4096 + n])  # shifted so chunks differ
                left -= n
                i += 1
    tmp.rename(path)
    return off


def read_through(path: Path) -> float:
    """Reads the file once (to fill the page cache); returns GB/s of that pass."""
    t = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while os.readv(fd, [view]) > 0:
            pass
    finally:
        os.close(fd)
    return path.stat().st_size / (time.perf_counter() - t) / GB


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def shm_free() -> int:
    st = os.statvfs("/dev/shm")
    return st.f_bavail * st.f_frsize


def cpu_seconds(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def baseline_once(baseline: str, model: Path, scratch: Path) -> tuple[float, int]:
    out = subprocess.run(
        [baseline, str(model), str(scratch / "baseline.region")], capture_output=True, text=True, check=True
    )
    r = json.loads(out.stdout)
    return r["seconds"], r["bytes"]


def stage_once(sidecar: str, model: Path, scratch: Path, extra: list[str]) -> tuple[float, int]:
    d = scratch / "stage"
    d.mkdir()
    try:
        out = subprocess.run(
            [sidecar, "stage", "--dir", str(d), "--termination-log", "", *extra, f"m={model}"],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        shutil.rmtree(d, ignore_errors=True)
    m = json.loads(out.stdout)["models"][0]
    assert m["state"] == "Loaded" and not m["adopted"], m
    return m["seconds"], m["bytes"]


def load_safetensors(model: Path) -> Callable[[], int]:
    from safetensors.numpy import load_file

    def go() -> int:
        tensors = load_file(str(model))
        n = sum(a.nbytes for a in tensors.values())
        del tensors
        return n

    return go


def load_runai(model: Path) -> Callable[[], int]:
    os.environ.setdefault("RUNAI_STREAMER_LOG_LEVEL", "WARNING")
    from runai_model_streamer import SafetensorsStreamer

    def go() -> int:
        n = 0
        kept = []
        with SafetensorsStreamer() as streamer:
            streamer.stream_file(str(model))
            for _, tensor in streamer.get_tensors():
                n += tensor.numel() * tensor.element_size()
                kept.append(tensor)  # owned tensors: hold them like a loader would
        del kept
        return n

    return go


class Method:
    """One way of getting the model into fresh memory; collects wall and CPU time per run."""

    def __init__(self, label: str, run: Callable[[], tuple[float, int]], in_process: bool) -> None:
        self.label, self.run, self.in_process = label, run, in_process
        self.seconds: list[float] = []
        self.cpu: list[float] = []
        self.nbytes = 0

    def once(self) -> None:
        who = resource.RUSAGE_SELF if self.in_process else resource.RUSAGE_CHILDREN
        gc.collect()
        c0 = cpu_seconds(who)
        seconds, self.nbytes = self.run()
        self.cpu.append(cpu_seconds(who) - c0)
        self.seconds.append(seconds)
        gc.collect()

    def rate(self, pick: Callable[[list[float]], float] = min) -> float:
        return self.nbytes / pick(self.seconds) / GB if self.nbytes else 0.0


def timed(fn: Callable[[], int]) -> Callable[[], tuple[float, int]]:
    def go() -> tuple[float, int]:
        t = time.perf_counter()
        n = fn()
        return time.perf_counter() - t, n

    return go


CONSUMER = r"""
import json, sys, time
t0 = time.perf_counter()
from loom import shm
t1 = time.perf_counter()
m = shm.open_model(sys.argv[1], sys.argv[2])
arrays = m.numpy()
t2 = time.perf_counter()
print(json.dumps({"open_ms": (t2 - t1) * 1e3, "import_ms": (t1 - t0) * 1e3, "tensors": len(arrays),
                  "bytes": sum(a.nbytes for a in arrays.values())}))
"""


def second_consumer(directory: Path, name: str, reps: int) -> dict[str, float]:
    runs = []
    for _ in range(reps):
        out = subprocess.run(
            [sys.executable, "-c", CONSUMER, name, str(directory)], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(out.stdout))
    ms = [r["open_ms"] for r in runs]
    return {
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "tensors": runs[0]["tensors"],
        "bytes": runs[0]["bytes"],
        "import_ms": statistics.median(r["import_ms"] for r in runs),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sidecar", required=True)
    ap.add_argument("--baseline", required=True)
    ap.add_argument(
        "--work",
        default=os.path.join(os.environ.get("LOOM_HOME", os.path.expanduser("~/.cache/loom")), "bench"),
    )
    ap.add_argument("--large-gb", type=float, default=8.0)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--consumer-reps", type=int, default=7)
    ap.add_argument("--threads", default="", help="--threads for loom-sidecar (default: its own)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    # ~2.1 GB, 146 tensors (Llama-3.2-1B-like): 16 layers, d=2048, F16, random bytes.
    small_layout = llama_like(2048, 16)
    model = work / "model-2g.safetensors"
    if not model.exists():
        print(f"generating {model} ...", flush=True)
        write_model(model, small_layout, sparse=False)
    size = model.stat().st_size
    read_through(model)
    cached = read_through(model)
    print(
        f"model: {model} ({size / GB:.2f} GB, {len(small_layout)} tensors); page-cache read {cached:.1f} GB/s"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, MemAvailable {mem_available() / GB:.1f} GB, "
        f"/dev/shm free {shm_free() / GB:.1f} GB"
    )
    if shm_free() < 3 * size:
        print("not enough /dev/shm for the 2 GB runs", file=sys.stderr)
        return 1

    scratch = Path(tempfile.mkdtemp(prefix="loom-bench-", dir="/dev/shm"))
    results: dict[str, object] = {}
    try:
        extra = ["--threads", args.threads] if args.threads else []
        methods = [
            Method(
                "(a) pread loop -> fresh tmpfs mapping, 1 thread",
                lambda: baseline_once(args.baseline, model, scratch),
                False,
            ),
            Method("(b) loom-sidecar stage", lambda: stage_once(args.sidecar, model, scratch, extra), False),
            Method(
                "(b1) loom-sidecar stage --threads 1",
                lambda: stage_once(args.sidecar, model, scratch, ["--threads", "1"]),
                False,
            ),
            Method("(c) safetensors.numpy.load_file", timed(load_safetensors(model)), True),
        ]
        try:
            methods.append(
                Method("(d) runai-model-streamer SafetensorsStreamer", timed(load_runai(model)), True)
            )
        except ImportError as e:
            print(f"runai-model-streamer unavailable: {e}", file=sys.stderr)
        # Rounds, each method once per round, so that they share whatever else the machine does.
        for _ in range(args.reps):
            for m in methods:
                m.once()
        title = f"method ({args.reps} interleaved rounds)"
        print(f"\n{title:50s} {'GB/s best':>9s} {'median':>7s} {'CPU s/GB':>9s}")
        for m in methods:
            cpu_per_gb = min(m.cpu) / (m.nbytes / GB)
            print(f"{m.label:50s} {m.rate():9.2f} {m.rate(statistics.median):7.2f} {cpu_per_gb:9.3f}")
        a, b, c = methods[0], methods[1], methods[3]
        d = methods[4] if len(methods) > 4 else None

        # Second consumer at ~2 GB.
        stage_dir = scratch / "consumer"
        stage_dir.mkdir()
        subprocess.run(
            [args.sidecar, "stage", "--dir", str(stage_dir), "--termination-log", "", f"m={model}"],
            capture_output=True,
            check=True,
        )
        e_small = second_consumer(stage_dir, "m", args.consumer_reps)
        shutil.rmtree(stage_dir)

        # The larger model: as close to --large-gb as /dev/shm and free memory allow.
        room = min(shm_free(), mem_available()) * 0.6
        target = min(args.large_gb * GB, room)
        large_note = (
            "" if target >= args.large_gb * GB else f" (capped from {args.large_gb:g} GB by free memory)"
        )
        d_large = 2896  # 32 layers at sqrt(2) x the width: ~2x the tensors, ~4x the bytes of the 2 GB model
        layers = 32
        while layers > 1 and sum(2 * int(np.prod(s)) for _, s in llama_like(d_large, layers)) > target:
            layers -= 1
        large_layout = llama_like(d_large, layers)
        large = work / f"model-large-{layers}x{d_large}.safetensors"
        if not large.exists():
            write_model(large, large_layout, sparse=True)  # a hole: nothing to read from disk
        stage_dir = scratch / "large"
        stage_dir.mkdir()
        subprocess.run(
            [
                args.sidecar,
                "stage",
                "--dir",
                str(stage_dir),
                "--termination-log",
                "",
                "--o-direct",
                f"big={large}",
            ],
            capture_output=True,
            check=True,
        )
        e_large = second_consumer(stage_dir, "big", args.consumer_reps)
        shutil.rmtree(stage_dir)

        print(
            f"\n(e) second consumer: new process, open_model + numpy view of every tensor "
            f"(median of {args.consumer_reps}; python start-up and imports excluded)"
        )
        large_label = f"{e_large['bytes'] / GB:.1f} GB{large_note}"
        for label, e in (("~2 GB", e_small), (large_label, e_large)):
            print(
                f"    {label:34s} {e['median_ms']:6.2f} ms (min {e['min_ms']:.2f}) "
                f"for {e['tensors']} tensors, "
                f"{e['bytes'] / GB:.2f} GB; `import loom.shm` {e['import_ms']:.0f} ms"
            )

        stage_rate = b.rate()
        peer = max(c.rate(), d.rate() if d else 0.0)
        small_ms, large_ms = e_small["median_ms"], e_large["median_ms"]
        checks = [
            ("staging / (a) pread loop", stage_rate / a.rate(), ">= 0.90", stage_rate / a.rate() >= 0.90),
            ("staging / max(c, d)", stage_rate / peer, ">= 1.0", stage_rate / peer >= 1.0),
            ("second consumer at ~2 GB (ms)", small_ms, "<= 5", small_ms <= 5),
            ("second consumer large / 2 GB", large_ms / small_ms, "<= 2.0", large_ms / small_ms <= 2.0),
        ]
        print(f"\n{'ratio':40s} {'value':>8s}  target   ")
        for label, value, target_s, ok in checks:
            print(f"{label:40s} {value:8.2f}  {target_s:7s}  {'ok' if ok else 'MISSED'}")
        results = {"checks": {check[0]: check[1] for check in checks}}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
