"""The loom-sidecar process end to end: CLI exit codes, `serve` with its probes, metrics and
control API, SIGTERM, re-adoption after a restart, and HTTP sources served by a local server
with Range support. Uses the real binary (LOOM_SIDECAR_BIN or an on-demand release build)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from loom import shm


@pytest.fixture
def model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(7)
    path = tmp_path / "m.safetensors"
    save_file({f"w{i}": rng.standard_normal((50, 10 + i)).astype(np.float32) for i in range(12)}, str(path))
    return path


def run(binary: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout, check=False)


def error_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines, "no reason printed on stderr"
    assert lines[-1].startswith("loom-sidecar: error: "), r.stderr
    return lines[-1]


class Served:
    """A running `loom-sidecar serve`."""

    def __init__(self, binary: str, directory: Path, *specs: str, extra: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen(
            [
                binary,
                "serve",
                "--dir",
                str(directory),
                "--listen",
                "127.0.0.1:0",
                "--control-listen",
                "127.0.0.1:0",
                "--termination-log",
                "",
                *extra,
                *specs,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            pytest.fail(
                f"sidecar exited before listening: {self.proc.stderr.read() if self.proc.stderr else ''}"
            )
        event = json.loads(line)
        assert event["event"] == "listening"
        self.public = "http://" + event["listen"]
        self.control = "http://" + event["control"]

    def get(self, path: str, control: bool = False) -> tuple[int, str]:
        url = (self.control if control else self.public) + path
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def post(self, path: str, body: dict[str, Any] | None = None, control: bool = True) -> tuple[int, Any]:
        url = (self.control if control else self.public) + path
        data = json.dumps(body or {}).encode()
        req = urllib.request.Request(
            url, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            text = e.read()
            return e.code, json.loads(text) if text.startswith(b"{") else text.decode()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get("/readyz")[0] == 200:
                return
            if self.proc.poll() is not None:
                pytest.fail(f"sidecar exited with {self.proc.returncode}")
            time.sleep(0.05)
        pytest.fail("sidecar never became ready")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


@pytest.fixture
def serve(binary: str) -> Iterator[Any]:
    started: list[Served] = []

    def start(directory: Path, *specs: str, extra: tuple[str, ...] = ()) -> Served:
        s = Served(binary, directory, *specs, extra=extra)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert m, f"{name} missing from /metrics"
    return float(m.group(1))


def test_help_documents_flags_and_exit_codes(binary: str) -> None:
    r = run(binary, "--help")
    assert r.returncode == 0
    for needle in [
        "--threads",
        "--chunk-size",
        "--alignment",
        "--o-direct",
        "--reserve",
        "Exit codes",
        "4   no space",
    ]:
        assert needle in r.stdout


def test_inspect(binary: str, model: Path, tmp_path: Path) -> None:
    ok = run(binary, "inspect", str(model))
    assert ok.returncode == 0
    assert "12 tensors" in ok.stdout and "w11" in ok.stdout
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\0\0\0\0\0\0\0{}")
    r = run(binary, "inspect", str(model), str(bad))
    assert r.returncode == 2
    assert "runs past the end of the file" in r.stderr
    js = json.loads(run(binary, "inspect", "--json", str(model), str(bad)).stdout)
    assert [x["ok"] for x in js] == [True, False]
    assert js[1]["exit_code"] == 2


def test_stage_exit_codes_and_one_line_reasons(
    binary: str, model: Path, tmp_path: Path, shm_dir: Path
) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x02\0\0\0\0\0\0\0{}xx")
    cases = [
        (("stage", "--dir", str(shm_dir), f"bad={bad}"), 2, "trailing bytes"),
        (("stage", "--dir", str(shm_dir), f"gone={tmp_path / 'missing.safetensors'}"), 3, "No such file"),
        (("stage", "--dir", str(shm_dir), "--reserve", "100T", f"big={model}"), 4, "free after the"),
        (("stage", "--dir", str(shm_dir), "--threads", "zero", f"m={model}"), 64, "takes a number"),
        (("stage", f"m={model}"), 64, "--dir is required"),
        (("stage", "--dir", str(tmp_path / "nodir"), f"m={model}"), 64, "does not exist"),
        (
            ("stage", "--dir", str(shm_dir), "--http-retries", "0", "h=http://127.0.0.1:1/m.safetensors"),
            3,
            "",
        ),
    ]
    env_free = {k: v for k, v in os.environ.items() if k != "LOOM_MODEL_DIR"}
    for args, code, fragment in cases:
        r = subprocess.run(
            [binary, *args], capture_output=True, text=True, timeout=60, env=env_free, check=False
        )
        assert r.returncode == code, (args, r.stderr)
        assert fragment in error_line(r), r.stderr
    assert not list(shm_dir.glob("*.region")), "a failed staging left a region behind"


def test_termination_log_gets_the_reason(binary: str, tmp_path: Path, shm_dir: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 16)
    log = tmp_path / "termination-log"
    r = run(binary, "stage", "--dir", str(shm_dir), "--termination-log", str(log), f"bad={bad}")
    assert r.returncode == 2
    assert log.read_text().startswith("invalid model: ")
    assert "exceeds the limit of 100000000 bytes" in log.read_text()


def test_serve_probes_metrics_and_sigterm(serve: Any, model: Path, shm_dir: Path) -> None:
    s = serve(shm_dir, f"m={model}")
    assert s.get("/healthz")[0] == 200
    s.wait_ready()
    status, body = s.get("/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    _, text = s.get("/metrics")
    tensor_bytes = sum(a.nbytes for a in load_file(str(model)).values())
    assert metric(text, "loom_sidecar_bytes_staged_total") == tensor_bytes
    assert metric(text, "loom_sidecar_resident_models") == 1
    assert metric(text, "loom_sidecar_stage_seconds_count") == 1
    assert 'loom_sidecar_stage_throughput_bytes_per_second{model="m"}' in text
    with shm.open_model("m", shm_dir) as staged:
        np.testing.assert_array_equal(staged["w3"], load_file(str(model))["w3"])
    assert s.stop() == 0
    assert (shm_dir / "m.manifest.json").exists(), "regions must outlive the sidecar process"


def test_readyz_is_503_until_staged_and_fails_with_the_exit_code(
    serve: Any, tmp_path: Path, shm_dir: Path
) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x02\0\0\0\0\0\0\0[]")
    s = serve(shm_dir, f"bad={bad}")
    assert s.proc.wait(30) == 2
    assert s.proc.stderr is not None
    assert "must be a JSON object" in s.proc.stderr.read()


def test_control_api_load_list_unload(serve: Any, model: Path, tmp_path: Path, shm_dir: Path) -> None:
    s = serve(shm_dir, f"m={model}")
    s.wait_ready()
    other = tmp_path / "other.safetensors"
    save_file({"x": np.arange(6, dtype=np.int32)}, str(other))
    assert s.post("/v1/models/other/load", {"uri": str(other)}, control=False)[0] == 404  # public: read-only
    status, info = s.post("/v1/models/other/load", {"uri": str(other), "wait": True})
    assert status == 200, info
    assert info["state"] == "Loaded" and info["byte_size"] == 4096 and info["offset"] == 0
    assert Path(info["key"]).exists()
    listed = json.loads(s.get("/v1/models")[1])["models"]
    assert {m["name"] for m in listed} == {"m", "other"}
    with shm.open_model("other", shm_dir) as staged:
        np.testing.assert_array_equal(staged["x"], np.arange(6, dtype=np.int32))
    status, info = s.post("/v1/models/other/unload")
    assert status == 200
    with pytest.raises(shm.UnknownModel):
        shm.open_model("other", shm_dir)
    assert s.post("/v1/models/other/unload")[0] == 404
    status, err = s.post("/v1/models/x/load", {"uri": str(tmp_path / "nope"), "wait": True})
    assert status == 502 and err["exit_code"] == 3
    assert s.get("/v1/models/x")[0] == 200  # known, FailedToLoad
    assert json.loads(s.get("/v1/models/x")[1])["state"] == "FailedToLoad"
    assert s.stop() == 0


def test_restart_adopts_instead_of_restaging(serve: Any, model: Path, shm_dir: Path) -> None:
    first = serve(shm_dir, f"m={model}")
    first.wait_ready()
    generation = json.loads(first.get("/v1/models/m")[1])["key"]
    assert first.stop() == 0
    second = serve(shm_dir, f"m={model}")
    second.wait_ready()
    info = json.loads(second.get("/v1/models/m")[1])
    assert info["adopted"] is True
    assert info["key"] == generation
    _, text = second.get("/metrics")
    assert metric(text, "loom_sidecar_models_adopted_total") == 1
    assert metric(text, "loom_sidecar_bytes_staged_total") == 0
    assert second.stop() == 0


class RangeHandler(BaseHTTPRequestHandler):
    """Serves files from `root` with HEAD, ETag and single-range GET support."""

    root: Path = Path()
    ranged: list[str] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _file(self) -> bytes | None:
        path = self.root / self.path.lstrip("/").split("?")[0]
        return path.read_bytes() if path.is_file() else None

    def do_HEAD(self) -> None:
        data = self._file()
        self.send_response(200 if data is not None else 404)
        self.send_header("Content-Length", str(len(data or b"")))
        self.send_header("ETag", '"v1"')
        self.end_headers()

    def do_GET(self) -> None:
        data = self._file()
        if data is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        delay = self.root / (self.path.lstrip("/") + ".delay")
        if delay.is_file():
            time.sleep(float(delay.read_text()))
        if rng:
            self.ranged.append(rng)
            start_s, end_s = rng.removeprefix("bytes=").split("-")
            start, end = int(start_s), min(int(end_s), len(data) - 1)
            body = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    root = tmp_path / "www"
    root.mkdir()
    ranged: list[str] = []
    handler = type("H", (RangeHandler,), {"root": root, "ranged": ranged})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, ranged
    server.shutdown()
    server.server_close()


def test_http_sources_use_parallel_range_requests(
    binary: str, http_root: tuple[str, Path, list[str]], shm_dir: Path
) -> None:
    base, root, ranged = http_root
    rng = np.random.default_rng(3)
    a = {f"a{i}": rng.standard_normal((300, 100)).astype(np.float32) for i in range(4)}  # 120 KB each
    b = {"b": rng.integers(0, 9, (1000,), dtype=np.int64)}
    save_file(a, str(root / "m-1.safetensors"))
    save_file(b, str(root / "m-2.safetensors"))
    (root / "index.json").write_text(
        json.dumps({"weight_map": {**dict.fromkeys(a, "m-1.safetensors"), "b": "m-2.safetensors"}})
    )
    r = run(
        binary,
        "stage",
        "--dir",
        str(shm_dir),
        "--threads",
        "4",
        "--chunk-size",
        "64K",
        f"single={base}/m-2.safetensors",
        f"sharded={base}/index.json",
    )
    assert r.returncode == 0, r.stderr
    with shm.open_model("sharded", shm_dir) as m:
        for name, want in {**a, **b}.items():
            np.testing.assert_array_equal(m[name], want)
        assert m.manifest.sources[0].version == 'etag:"v1"'
    with shm.open_model("single", shm_dir) as m:
        np.testing.assert_array_equal(m["b"], b["b"])
    copy_ranges = [x for x in ranged if not x.startswith("bytes=0-")]
    assert len(copy_ranges) >= 8, ranged  # 480 KB in 64 KiB reads


def test_keep_serving_on_error_reports_the_failure_in_readyz(
    serve: Any, tmp_path: Path, shm_dir: Path
) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x02\0\0\0\0\0\0\0{}!")
    s = serve(shm_dir, f"bad={bad}", extra=("--keep-serving-on-error",))
    deadline = time.monotonic() + 30
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, text = s.get("/readyz")
        body = json.loads(text)
        if body["failed"]:
            break
        time.sleep(0.05)
    assert status == 503
    assert body["failed"][0]["name"] == "bad" and "trailing bytes" in body["failed"][0]["reason"]
    assert s.proc.poll() is None
    assert s.stop() == 0


def test_sigterm_during_staging_cancels_and_cleans_up(
    serve: Any, http_root: tuple[str, Path, list[str]], shm_dir: Path
) -> None:
    base, root, ranged = http_root
    save_file({"w": np.zeros(4 << 20, dtype=np.uint8)}, str(root / "slow.safetensors"))
    (root / "slow.safetensors.delay").write_text("0.2")  # RangeHandler sleeps per request
    s = serve(shm_dir, f"slow={base}/slow.safetensors", extra=("--threads", "1", "--chunk-size", "64K"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(ranged) < 4:  # header, fingerprint, then copy reads
        time.sleep(0.05)
    assert json.loads(s.get("/v1/models/slow")[1])["state"] == "Loading"
    started = time.monotonic()
    assert s.stop() == 0
    assert time.monotonic() - started < 10
    leftovers = sorted(p.name for p in shm_dir.iterdir())
    assert leftovers == ["slow.state.json"], leftovers  # no region, no temporary, no manifest
    state = json.loads((shm_dir / "slow.state.json").read_text())
    assert state["state"] == "failed" and "cancelled" in state["reason"]
