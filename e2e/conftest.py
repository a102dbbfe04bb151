"""e2e fixtures: a real Kubernetes control plane, Loom's CRDs, and the operator running against it.

The cluster, in order of preference: the one named by LOOM_E2E_KUBECONFIG; the local KWOK cluster
(e2e/cluster/up.sh, started once per run); kind through pytest-kind when a Docker engine answers.
Without any of them the suite fails loudly: it is never skipped silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from e2e.support import LOOM_HOME, ROOT, Operator, kubectl, wait_for

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


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    path = _start_cluster()
    os.environ["KUBECONFIG"] = path
    kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
    for crd in ("trainingjobs", "inferenceservices", "featurepipelines"):
        kubectl("wait", "--for=condition=Established", f"crd/{crd}.loom.ml", "--timeout=60s")
    return path


@pytest.fixture(scope="session")
def operator(kubeconfig: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    # Watch only this session's namespaces, so concurrent test sessions never act on each other's objects.
    op = Operator(log, env={"KUBECONFIG": kubeconfig}, args=["--namespace", f"{NAMESPACE_PREFIX}*"])
    op.start()
    yield op
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
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def pytest_report_header(config: pytest.Config) -> str:
    return f"loom e2e: LOOM_HOME={LOOM_HOME}, cluster={os.environ.get('LOOM_E2E_KUBECONFIG') or 'local KWOK'}"
