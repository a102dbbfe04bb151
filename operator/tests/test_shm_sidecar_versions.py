"""The loom-sidecar process against an HTTP server whose objects change: range reads pinned to the
version first seen (If-Match), a staging that fails when the object is replaced, and SIGTERM during
a control-API load that waits. Uses the real binary (LOOM_SIDECAR_BIN or a release build)."""

from __future__ import annotations

import hashlib
import json
import signal
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
from safetensors.numpy import save_file
from test_shm_sidecar import Served, error_line, run

from loom import shm


class Objects:
    """Objects served with strong ETags (a hash of the content), If-Match and single ranges; an
    object can be replaced after a number of ranged GETs, as an overwrite during a download."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.replace_after: dict[str, tuple[int, bytes]] = {}
        self.delay = 0.0
        self.ranged: list[tuple[str, str | None]] = []  # (range, If-Match)
        self.lock = threading.Lock()

    @staticmethod
    def etag(data: bytes) -> str:
        return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


def _handler(objects: Objects) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _object(self) -> bytes | None:
            return objects.data.get(self.path.lstrip("/"))

        def do_HEAD(self) -> None:
            data = self._object()
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Length", str(len(data or b"")))
            if data is not None:
                self.send_header("ETag", Objects.etag(data))
            self.end_headers()

        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            rng, if_match = self.headers.get("Range"), self.headers.get("If-Match")
            with objects.lock:
                if rng:
                    objects.ranged.append((rng, if_match))
                    after = objects.replace_after.get(name)
                    if after is not None and len(objects.ranged) > after[0]:
                        objects.data[name] = after[1]
                        del objects.replace_after[name]
                data = objects.data.get(name)
            time.sleep(objects.delay)
            if data is None:
                self.send_error(404)
                return
            if if_match is not None and if_match != Objects.etag(data):
                self.send_response(412)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body, code = data, 200
            if rng:
                start_s, end_s = rng.removeprefix("bytes=").split("-")
                start, end = int(start_s), min(int(end_s), len(data) - 1)
                body, code = data[start : end + 1], 206
            self.send_response(code)
            if code == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", Objects.etag(data))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def objects() -> Iterator[tuple[str, Objects]]:
    store = Objects()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(store))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", store
    server.shutdown()
    server.server_close()


def _model_bytes(tmp_path: Path, fill: int, name: str) -> tuple[bytes, np.ndarray]:
    weights = np.full((1 << 20,), fill, dtype=np.uint8)
    path = tmp_path / name
    save_file({"w": weights}, str(path))
    return path.read_bytes(), weights


def test_an_object_replaced_while_it_stages_fails_and_publishes_nothing(
    binary: str, objects: tuple[str, Objects], shm_dir: Path, tmp_path: Path
) -> None:
    base, store = objects
    v1, _ = _model_bytes(tmp_path, 1, "v1.safetensors")
    v2, w2 = _model_bytes(tmp_path, 2, "v2.safetensors")  # same size and header: only the data differs
    store.data["m.safetensors"] = v1
    store.replace_after["m.safetensors"] = (6, v2)  # after the header, the fingerprint, a few chunks
    args = ("stage", "--dir", str(shm_dir), "--threads", "1", "--chunk-size", "64K")
    r = run(binary, *args, f"m={base}/m.safetensors")
    assert r.returncode == 8, f"a torn model was published (exit {r.returncode}):\n{r.stderr}"
    line = error_line(r)
    assert "source changed" in line and f"{base}/m.safetensors changed while it was being read" in line
    assert "If-Match" in line and "staging it again reads the new version" in line
    assert all(m == Objects.etag(v1) for _, m in store.ranged), store.ranged  # every read pinned to v1
    assert not list(shm_dir.glob("m.manifest.json")) and not list(shm_dir.glob("*.region"))

    again = run(binary, *args, f"m={base}/m.safetensors")  # the next try stages the new version
    assert again.returncode == 0, again.stderr
    with shm.open_model("m", shm_dir) as m:
        np.testing.assert_array_equal(m["w"], w2)
        assert m.manifest.sources[0].version == f"etag:{Objects.etag(v2)}"


def test_sigterm_during_a_control_load_that_waits_exits_at_once(
    binary: str, objects: tuple[str, Objects], shm_dir: Path, tmp_path: Path
) -> None:
    base, store = objects
    store.data["slow.safetensors"], _ = _model_bytes(tmp_path, 3, "slow.safetensors")  # 16 reads of 64 KiB
    store.delay = 0.5  # per request: the staging takes 8 s or more
    s = Served(binary, shm_dir, extra=("--threads", "1", "--chunk-size", "64K"))
    try:
        reply: dict[str, Any] = {}

        def load() -> None:
            body = json.dumps({"uri": f"{base}/slow.safetensors", "wait": True}).encode()
            req = urllib.request.Request(
                s.control + "/v1/models/slow/load", data=body, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    reply["status"] = r.status
            except urllib.error.HTTPError as e:
                reply["status"], reply["body"] = e.code, e.read().decode()
            except OSError as e:
                reply["error"] = str(e)

        client = threading.Thread(target=load)
        client.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(store.ranged) < 4:  # header, fingerprint, copying
            time.sleep(0.05)
        assert len(store.ranged) >= 4, "staging never started"
        started = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        code = s.proc.wait(30)
        took = time.monotonic() - started
        client.join(30)
        assert code == 0
        assert took < 3, f"SIGTERM took {took:.1f} s: it waited for the staging to finish"
        assert reply.get("status") == 409 and "cancelled" in reply.get("body", ""), reply
    finally:
        s.close()
