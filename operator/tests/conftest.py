"""Fixtures shared by the unit tests: the sidecar binary under test and a tmpfs directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def binary() -> str:
    """The loom-sidecar under test (LOOM_SIDECAR_BIN, else a release build); never skips."""
    env = os.environ.get("LOOM_SIDECAR_BIN")
    if env:
        if not os.access(env, os.X_OK):
            pytest.fail(f"LOOM_SIDECAR_BIN={env} is not an executable file")
        return env
    build = subprocess.run(
        [str(REPO / "sidecar_native/scripts/build.sh"), "release"],
        capture_output=True,
        text=True,
        check=False,
    )
    if build.returncode != 0:
        pytest.fail(f"building loom-sidecar failed:\n{build.stderr[-3000:]}")
    return build.stdout.strip().splitlines()[-1]


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A fresh directory on /dev/shm (tmpfs, like the pod's memory emptyDir)."""
    d = Path(tempfile.mkdtemp(prefix="loom-test-", dir="/dev/shm"))
    yield d
    shutil.rmtree(d, ignore_errors=True)
