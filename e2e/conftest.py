"""e2e fixtures: a real Kubernetes control plane, Loom's CRDs, and the operator running against it.

The cluster, in order of preference: the one named by LOOM_E2E_KUBECONFIG; the local KWOK cluster
(e2e/cluster/up.sh, started once per run); kind through pytest-kind when a Docker engine answers.
Without any of them the suite fails loudly: it is never skipped silently.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from e2e.pools import Pool, gpu_pool
from e2e.support import (
    LOOM_HOME,
    ROOT,
    Operator,
    kubectl,
    unwatch_namespace,
    wait_established,
    wait_for,
    watch_namespace,
)

NAMESPACE_PREFIX = f"e2e-{uuid.uuid4().hex[:4]}-"


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


def _start_cluster() -> str:
    named = os.environ.get("LOOM_E2E_KUBECONFIG")
    if named:
        return named
    up = ROOT / "e2e" / "cluster" / "up.sh"
    result = subprocess.run([str(up)], capture_output=True, text=True, timeout=3600)
    if result.returncode == 0:
        return result.stdout.strip().splitlines()[-1]
    if _docker_answers():
        from pytest_kind import KindCluster

        kind = KindCluster("loom-e2e")
        kind.create()
        return str(kind.kubeconfig_path)
    raise RuntimeError(
        "no cluster for the e2e suite: set LOOM_E2E_KUBECONFIG, or fix the local KWOK cluster "
        f"(e2e/cluster/up.sh failed):\n{result.stderr[-4000:]}"
    )


def _session_namespaces(prefix: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(kubectl("get", "namespaces", "-o", "json"))["items"]
    return [n for n in items if n["metadata"]["name"].startswith(prefix)]


LOOM_KINDS = "trainingjobs.loom.ml,inferenceservices.loom.ml,featurepipelines.loom.ml"


def _loom_objects_left(prefix: str) -> list[str]:
    items = json.loads(kubectl("get", LOOM_KINDS, "-A", "-o", "json"))["items"]
    return [
        f"{o['metadata']['namespace']}/{o['metadata']['name']}"
        for o in items
        if o["metadata"]["namespace"].startswith(prefix)
    ]


def _wait_for_loom_objects_gone(prefix: str, timeout: float = 60) -> None:
    """Loom's finalizers need the operator: let it release this session's objects before it stops."""
    try:
        wait_for(lambda: not _loom_objects_left(prefix), timeout=timeout, what=f"Loom objects in {prefix}*")
    except TimeoutError:
        _release_stuck_namespaces(prefix, older_than_seconds=0)


def _release_stuck_namespaces(prefix: str = "e2e-", older_than_seconds: float = 300) -> None:
    """Drop Loom finalizers in test namespaces left Terminating by an operator that is gone."""
    now = datetime.now(UTC)
    for ns in _session_namespaces(prefix):
        deleted = ns["metadata"].get("deletionTimestamp")
        if not deleted or (now - datetime.fromisoformat(deleted)).total_seconds() < older_than_seconds:
            continue
        name = ns["metadata"]["name"]
        for plural in ("trainingjobs", "inferenceservices", "featurepipelines"):
            for obj in kubectl("get", f"{plural}.loom.ml", "-n", name, "-o", "name").split():
                kubectl(
                    "patch",
                    obj,
                    "-n",
                    name,
                    "--type=merge",
                    "-p",
                    '{"metadata":{"finalizers":null}}',
                    check=False,
                )


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    path = _start_cluster()
    os.environ["KUBECONFIG"] = path
    _release_stuck_namespaces()
    kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
    wait_established(*(f"{crd}.loom.ml" for crd in ("trainingjobs", "inferenceservices", "featurepipelines")))
    return path


@pytest.fixture(scope="session")
def engine_crds(kubeconfig: str) -> list[str]:
    """The real SparkApplication and RayJob CRDs (from the Spark Operator's and KubeRay's Go modules,
    e2e/cluster/engine-crds.sh), so that their schemas validate what Loom emits."""
    fetched = subprocess.run(
        [str(ROOT / "e2e" / "cluster" / "engine-crds.sh")], capture_output=True, text=True, timeout=600
    )
    if fetched.returncode != 0:
        raise RuntimeError(f"e2e/cluster/engine-crds.sh failed:\n{fetched.stderr[-4000:]}")
    directory = fetched.stdout.strip().splitlines()[-1]
    kubectl("apply", "--server-side", "--force-conflicts", "-f", directory)
    names = ["sparkapplications.sparkoperator.k8s.io", "rayjobs.ray.io"]
    wait_established(*names)
    return names


@pytest.fixture(scope="session")
def operator(kubeconfig: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    # Watch only this session's namespaces, so concurrent test sessions never act on each other's objects.
    op = Operator(log, env={"KUBECONFIG": kubeconfig}, args=["--namespace", f"{NAMESPACE_PREFIX}*"])
    op.start()
    yield op
    _wait_for_loom_objects_gone(NAMESPACE_PREFIX)
    op.stop()
    if os.environ.get("LOOM_E2E_SHOW_LOGS"):
        print(op.logs()[-20000:])


@pytest.fixture
def namespace(kubeconfig: str) -> Iterator[str]:
    name = f"{NAMESPACE_PREFIX}{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    wait_for(
        lambda: kubectl("get", "serviceaccount", "default", "-n", name, check=False).startswith("NAME"),
        timeout=30,
        what=f"default ServiceAccount in {name}",
    )
    watch_namespace(name)  # a timed-out wait_for shows what it holds
    yield name
    unwatch_namespace(name)
    kubectl("delete", LOOM_KINDS, "--all", "-n", name, "--wait=false", check=False)
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def pool(kubeconfig: str) -> Iterator[Pool]:
    """Two fake nodes of 8 GPUs each, for this test's pods only (pin them with `pool.pin`)."""
    with gpu_pool(2) as p:
        yield p


def pytest_report_header(config: pytest.Config) -> str:
    return f"loom e2e: LOOM_HOME={LOOM_HOME}, cluster={os.environ.get('LOOM_E2E_KUBECONFIG') or 'local KWOK'}"
