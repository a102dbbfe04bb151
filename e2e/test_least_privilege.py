"""Least privilege, proven: the operator runs on its ServiceAccount's own token (the ServiceAccount,
ClusterRole and ClusterRoleBinding of manifests/base, applied as they ship) and carries TrainingJob,
InferenceService and FeaturePipeline flows through; what lies outside the role (Secrets, deleting nodes,
writing CRDs) is refused; and the API server's audit log shows that every request the operator made is
one the ClusterRole grants, while the role grants nothing the operator did not use, beyond the extras
named in DELIBERATE_EXTRAS. A code change that needs a new verb fails here with the request named."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from e2e.install import (
    Entry,
    Request,
    audit_entries,
    audit_log,
    ensure_namespaced_peering_crd,
    grants,
    pick,
    render,
    token_id,
    token_kubeconfig,
)
from e2e.pools import Pool
from e2e.support import (
    Operator,
    apply_yaml,
    get_cr,
    kubectl,
    kubectl_result,
    patch_status,
    unwatch_namespace,
    wait_for,
    watch_namespace,
)
from e2e.test_featurepipeline import CHILD_RESOURCE, T0, children, finish, pipeline, summary, wait_status
from e2e.test_inferenceservice import condition, deployments, isvc, wait_serving, with_image
from e2e.test_inferenceservice_autoscaling import LoadServer, scaled, spec_replicas
from e2e.test_trainingjob import job_manifest, wait_phase, wait_running

pytestmark = pytest.mark.timeout(420)

SA_NAMESPACE, SA = "loom-system", "loom-operator"
PEERING = "loom-rbac"

# What the ClusterRole grants that these flows do not use, and why it stays (see also gang_path_extras).
DELIBERATE_EXTRAS: dict[Request, str] = {
    **{
        Request("kopf.dev", "clusterkopfpeerings", verb): "peering of a cluster-wide operator (the install's "
        "mode; this test runs namespaced, beside the suite's operator)"
        for verb in ("list", "watch", "patch", "create")
    },
    **{
        Request(group, resource, "delete"): "scheduled runs beyond the history limits are deleted (minutes "
        "of cron ticks, covered by the FeaturePipeline plan's unit tests)"
        for group, resource in (
            ("batch", "jobs"),
            ("sparkoperator.k8s.io", "sparkapplications"),
            ("ray.io", "rayjobs"),
        )
    },
    **{
        Request(
            "loom.ml", f"{plural}/finalizers", "update"
        ): "ownerReferences with blockOwnerDeletion, where "
        "the OwnerReferencesPermissionEnforcement admission plugin runs (an authorization check, no request)"
        for plural in ("trainingjobs", "inferenceservices", "featurepipelines")
    },
}


def pod_groups_served() -> bool:
    """Whether the API server serves scheduling.k8s.io/v1alpha2 PodGroups (kube-scheduler's gang
    scheduling: e2e/cluster/up.sh by default; GANG_SCHEDULING=0 starts a cluster without them)."""
    out = kubectl("api-resources", "--api-group=scheduling.k8s.io", "-o", "name", check=False)
    return "podgroups.scheduling.k8s.io" in out.split()


def gang_path_extras(served: bool) -> dict[Request, str]:
    """A TrainingJob's gang is placed all-or-nothing by one of two paths, decided by what the cluster
    serves: the role covers both, the flows here use one. Where PodGroups are served, Loom's own gate
    (pods created with a scheduling gate, ungated by a patch) is the other path; where they are not,
    PodGroups are."""
    if served:
        return {
            Request("", "pods", "patch"): "ungating Loom's gate, the gang path where the API server "
            "serves no PodGroups (run this file on a GANG_SCHEDULING=0 cluster to use it)"
        }
    return {
        Request("scheduling.k8s.io", "podgroups", verb): "kube-scheduler's gang scheduling, where the "
        "API server serves scheduling.k8s.io/v1alpha2 (the default e2e/cluster/up.sh cluster)"
        for verb in ("list", "watch", "create", "delete")
    }


@dataclass
class Run:
    operator: Operator
    namespace: str
    jti: str  # the token's id, in each audit entry of its requests
    offset: int  # where the audit log stood before the operator started
    kubeconfig: Path
    load: LoadServer
    flows_passed: bool = False


@pytest.fixture(scope="module")
def outsider(run: Run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig with another token of the same ServiceAccount: its refusals stay out of the audit of
    what the operator did (each token has its own id)."""
    path = tmp_path_factory.mktemp("outsider") / "kubeconfig"
    token_kubeconfig(SA_NAMESPACE, SA, path)
    return path


@pytest.fixture(scope="module")
def role() -> dict[str, object]:
    return pick(render("base"), "ClusterRole", SA)


@pytest.fixture(scope="module")
def run(kubeconfig: str, engine_crds: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The operator on the ServiceAccount's token, watching a namespace of its own (outside the pattern
    of the suite's operator), with peering on as installed."""
    docs = render("base")
    shipped = [pick(docs, "Namespace", SA_NAMESPACE), pick(docs, "ServiceAccount", SA)]
    shipped += [pick(docs, "ClusterRole", SA), pick(docs, "ClusterRoleBinding", SA)]
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=e2e",
        "-f",
        "-",
        input=yaml.safe_dump_all(shipped),
    )
    ensure_namespaced_peering_crd()
    namespace = f"e2e-rbac-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    watch_namespace(namespace)
    directory = tmp_path_factory.mktemp("least-privilege")
    config = directory / "kubeconfig"
    token = token_kubeconfig(SA_NAMESPACE, SA, config)
    offset = audit_log().stat().st_size if audit_log().exists() else 0
    load = LoadServer()
    op = Operator(
        directory / "operator.log",
        env={"KUBECONFIG": str(config), "LOOM_METRICS_URL_TEMPLATE": load.template},
        args=["--namespace", namespace, "--peering", PEERING],
    )
    op.start()
    try:
        yield Run(op, namespace, token_id(token), offset, config, load)
    finally:
        kubectl(
            "delete",
            "trainingjobs,inferenceservices,featurepipelines",
            "--all",
            "-n",
            namespace,
            "--wait=false",
        )
        try:
            wait_for(
                lambda: (
                    not kubectl(
                        "get",
                        "trainingjobs,inferenceservices,featurepipelines",
                        "-n",
                        namespace,
                        "-o",
                        "name",
                    ).strip()
                ),
                timeout=60,
                what="the operator releasing its finalizers",
            )
        finally:
            op.stop()
            load.stop()
            unwatch_namespace(namespace)
            for obj in kubectl("get", "kopfpeerings", "-n", namespace, "-o", "name", check=False).split():
                kubectl(
                    "patch",
                    obj,
                    "-n",
                    namespace,
                    "--type=merge",
                    "-p",
                    '{"metadata":{"finalizers":null}}',
                    check=False,
                )
            kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_every_flow_runs_on_the_service_account_token(run: Run, pool: Pool) -> None:
    ns = run.namespace
    # TrainingJob: a gang placed all-or-nothing (a PodGroup, or Loom's gate), a retryable failure restarts
    # it, the master succeeds, the TTL deletes the job.
    apply_yaml(
        job_manifest(
            "train", pool, roles={"master": 1, "worker": 1}, run_policy={"ttlSecondsAfterFinished": 2}
        ),
        ns,
    )
    wait_running(ns, "train", 0, 2)
    kubectl("annotate", "pod", "-n", ns, "train-worker-0-a0", "--overwrite", "kwok.loom.ml/exit-code=137")
    wait_running(ns, "train", 1, 2)
    kubectl("annotate", "pod", "-n", ns, "train-master-0-a1", "--overwrite", "kwok.loom.ml/exit-code=0")
    wait_phase(ns, "train", "Succeeded")
    wait_for(lambda: get_cr("trainingjobs", ns, "train") is None, 30, what="the TTL deleting the job")

    # InferenceService: served, scaled through the scale subresource, a new revision rolled out and the
    # old one removed; a second one scaled by Loom's autoscaler from its pods' metrics.
    apply_yaml(isvc("ranker", pool, replicas=1), ns)
    wait_serving(ns, "ranker", 1)
    kubectl("scale", "inferenceservice/ranker", "-n", ns, "--replicas=2")
    wait_serving(ns, "ranker", 2)
    first = set(deployments(ns, "ranker"))
    apply_yaml(with_image(isvc("ranker", pool, replicas=2), "ghcr.io/loom-ml/ranker-server:1.5"), ns)
    wait_for(
        lambda: (
            not set(deployments(ns, "ranker")) & first
            and condition(ns, "ranker", "RolloutComplete").get("status") == "True"
        ),
        60,
        what="the new revision serving, the old one removed",
    )
    run.load.demand[(ns, "scaled")] = 25.0
    apply_yaml(isvc("scaled", pool, replicas=1, minReplicas=1, maxReplicas=3, scaling=scaled()), ns)
    wait_for(lambda: condition(ns, "scaled", "ScalingActive").get("status") == "True", 30, what="metrics")
    wait_for(lambda: spec_replicas(ns, "scaled") == 3, 30, what="the autoscaler writing replicas")

    # FeaturePipeline: a local backfill of two windows, a streaming pipeline, Spark and Ray children.
    apply_yaml(pipeline("clicks", days=2, parallelism=2), ns)
    jobs = wait_for(lambda: len(c := children(ns, "clicks")) == 2 and c, 30, what="two window Jobs")
    for day, job in enumerate(jobs):
        finish(ns, job["metadata"]["name"], 0, summary(10, T0 + timedelta(days=day + 1)))
    wait_status(ns, "clicks", lambda st: st.get("phase") == "Succeeded", what="backfill Succeeded")
    stream = pipeline("sessions", mode="streaming", streaming={"consumers": 1, "batchSize": 100})
    stream["spec"]["source"] = {
        "redisStream": {"url": "redis://127.0.0.1:6379/0", "stream": "sessions"},
        "timestampField": "ts",
        "entityKeys": ["session_id"],
    }
    apply_yaml(stream, ns)
    wait_status(ns, "sessions", lambda st: st.get("consumers") == 1, 30, what="a consumer")
    for engine, failed in (
        ("spark", {"applicationState": {"state": "FAILED", "errorMessage": "exit 1"}, "driverInfo": {}}),
        ("ray", {"jobDeploymentStatus": "Complete", "jobStatus": "FAILED", "message": "exit 65"}),
    ):
        apply_yaml(pipeline(f"on-{engine}", engine=engine, days=1), ns)
        child = wait_for(lambda e=engine: children(ns, f"on-{e}", e), 30, what=f"a {engine} child")[0]
        patch_status(CHILD_RESOURCE[engine], ns, child["metadata"]["name"], failed)
        wait_status(ns, f"on-{engine}", lambda st: st.get("phase") == "Failed", what=f"{engine} result")

    # Deletion: the operator removes its finalizers.
    kubectl("delete", "inferenceservices,featurepipelines", "--all", "-n", ns, "--wait=false")
    wait_for(
        lambda: not kubectl("get", "inferenceservices,featurepipelines", "-n", ns, "-o", "name").strip(),
        60,
        what="finalizers released",
    )
    assert "Forbidden" not in run.operator.logs() and " 403" not in run.operator.logs(), (
        "the operator was refused something: " + run.operator.logs()[-4000:]
    )
    run.flows_passed = True


@pytest.mark.parametrize(
    ("verb", "what", "where"),
    [
        pytest.param("get", "secrets", "ns", id="read-secrets"),
        pytest.param("list", "secrets", "all", id="list-secrets-cluster-wide"),
        pytest.param("delete", "nodes", "cluster", id="delete-nodes"),
        pytest.param("create", "customresourcedefinitions", "cluster", id="create-crds"),
        pytest.param("patch", "customresourcedefinitions", "cluster", id="patch-crds"),
        pytest.param("delete", "customresourcedefinitions", "cluster", id="delete-crds"),
        pytest.param("create", "pods --subresource=exec", "ns", id="exec-into-pods"),
        pytest.param("create", "clusterrolebindings", "cluster", id="grant-itself-more"),
        pytest.param("update", "trainingjobs.loom.ml", "ns", id="replace-user-specs"),
    ],
)
def test_what_lies_outside_the_role_is_refused(
    run: Run, outsider: Path, verb: str, what: str, where: str
) -> None:
    scope = {"ns": ["-n", run.namespace], "all": ["-A"], "cluster": []}[where]
    answer = kubectl_result("--kubeconfig", str(outsider), "auth", "can-i", verb, *what.split(), *scope)
    assert answer.stdout.strip() == "no", f"can-i {verb} {what}: {answer.stdout}{answer.stderr}"


def test_real_calls_outside_the_role_are_forbidden(run: Run, outsider: Path, pool: Pool) -> None:
    as_operator = ["--kubeconfig", str(outsider)]
    kubectl("create", "secret", "generic", "s3-credentials", "-n", run.namespace, "--from-literal=key=x")
    crd = json.loads(kubectl("get", "crd", "trainingjobs.loom.ml", "-o", "json"))
    attempts = {
        "read a Secret": ["get", "secret", "s3-credentials", "-n", run.namespace],
        "list Secrets": ["get", "secrets", "-A"],
        "delete a node": ["delete", "node", pool.nodes[0], "--wait=false"],
        "patch a CRD": ["label", "crd", "trainingjobs.loom.ml", "loom.ml/touched=yes"],
        "delete a CRD": ["delete", "crd", "trainingjobs.loom.ml", "--dry-run=server"],
        "create a CRD": ["create", "--dry-run=server", "-f", "-"],
    }
    renamed = {
        **crd,
        "metadata": {"name": "widgets.loom.ml"},
        "spec": {**crd["spec"], "names": {"kind": "Widget", "plural": "widgets"}},
    }
    for what, args in attempts.items():
        stdin = json.dumps(renamed) if args[0] == "create" else None
        result = kubectl_result(*as_operator, *args, input=stdin)
        assert result.returncode != 0 and "forbidden" in result.stderr.lower(), (
            f"{what} was not refused: {result.stdout}{result.stderr}"
        )
    assert kubectl("get", "node", pool.nodes[0], "-o", "name").strip()


def test_every_request_was_granted_and_every_grant_was_used(run: Run, role: dict[str, object]) -> None:
    """Runs after the flows (pytest keeps the order of a module's tests)."""
    if not audit_log().exists():
        pytest.skip(f"no audit log at {audit_log()}: the cluster was not started by e2e/cluster/up.sh")
    if not run.flows_passed:
        pytest.fail("the flows did not pass on the token: there is nothing to compare the role with")
    entries: list[Entry] = list(audit_entries(run.jti, run.offset))
    assert entries, (
        f"no audit entry for the operator's token in {audit_log()}: the local cluster runs without "
        "e2e/cluster/audit-policy.yaml (rerun e2e/cluster/up.sh, which recreates it)"
    )
    refused = sorted({f"{e.request or e.uri} ({e.code})" for e in entries if e.code == 403})
    assert not refused, f"the API server refused the operator: {refused}"
    used = set().union(*(e.authorized() for e in entries if e.code < 400))
    granted = grants(role)
    assert not used - granted, f"used but not granted: {sorted(map(str, used - granted))}"
    # The other gang path's grants, where the role has them (a role without PodGroups is fine where
    # none are served: "used but not granted" above fails where they are).
    other_path = {r: why for r, why in gang_path_extras(pod_groups_served()).items() if r in granted}
    unused = granted - used - set(DELIBERATE_EXTRAS) - set(other_path)
    assert not unused, (
        f"granted but never used (remove, or name it in DELIBERATE_EXTRAS): {sorted(map(str, unused))}"
    )
    stale = {r for r in DELIBERATE_EXTRAS if r in used or r not in granted} | (set(other_path) & used)
    assert not stale, f"DELIBERATE_EXTRAS that are used or no longer granted: {sorted(map(str, stale))}"
