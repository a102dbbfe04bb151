"""Field ownership, as a GitOps tool sees it: a TrainingJob, an InferenceService and a FeaturePipeline
applied server-side under a tool's field manager, the operator lets them run, the tool re-applies the
same files: no conflict (without --force-conflicts), no drift (an empty server-side diff), and the operator
owns nothing of theirs but status and finalizers (managedFields)."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from typing import Any

import pytest
import yaml

from e2e.pools import Pool
from e2e.support import KUBECTL, Operator, kubectl, wait_for
from e2e.test_featurepipeline import T0, children, finish, pipeline, summary, wait_status
from e2e.test_inferenceservice import isvc, wait_serving
from e2e.test_trainingjob import job_manifest, wait_running

pytestmark = pytest.mark.timeout(180)

TOOL = "argocd-controller"  # the field manager Argo CD's server-side apply uses


def owned(fields: dict[str, Any], prefix: str = "") -> list[str]:
    """The leaf paths of a managedFields fieldsV1 tree ("f:spec.f:replicas" -> "spec.replicas")."""
    out: list[str] = []
    for key, sub in fields.items():
        if key == ".":
            continue
        path = f"{prefix}.{key.removeprefix('f:')}" if prefix else key.removeprefix("f:")
        out += owned(sub, path) if sub else [path]
    return out


def allowed(path: str) -> bool:
    return path.startswith("status") or path.startswith("metadata.finalizers")


def test_a_gitops_tool_reapplies_without_conflict_or_drift(
    operator: Operator, namespace: str, pool: Pool
) -> None:
    ns = namespace
    docs = [
        job_manifest("train", pool, roles={"master": 1, "worker": 1}),
        isvc("ranker", pool, replicas=1),
        pipeline("clicks", days=1),
    ]
    text = yaml.safe_dump_all(docs)
    apply = ["apply", "--server-side", f"--field-manager={TOOL}", "-n", ns, "-f", "-"]
    kubectl(*apply, input=text)
    wait_running(ns, "train", 0, 2)
    wait_serving(ns, "ranker", 1)
    job = wait_for(lambda: children(ns, "clicks"), 30, what="the window Job")[0]
    finish(ns, job["metadata"]["name"], 0, summary(5, T0 + timedelta(days=1)))
    wait_status(ns, "clicks", lambda st: st.get("phase") == "Succeeded", what="the pipeline Succeeded")

    kubectl(*apply, input=text)  # no --force-conflicts: a conflict fails here
    diff = subprocess.run(
        [KUBECTL, "diff", "--server-side", f"--field-manager={TOOL}", "-n", ns, "-f", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert diff.returncode == 0 and not diff.stdout.strip(), f"drift:\n{diff.stdout}{diff.stderr}"

    for kind in ("trainingjob", "inferenceservice", "featurepipeline"):
        live = json.loads(
            kubectl("get", f"{kind}s.loom.ml", "-n", ns, "-o", "json", "--show-managed-fields")
        )["items"]
        for obj in live:
            others = [e for e in obj["metadata"]["managedFields"] if e["manager"] != TOOL]
            writers = {
                e["manager"] for e in others if any(p.startswith("status") for p in owned(e["fieldsV1"]))
            }
            assert writers, f"{kind} {obj['metadata']['name']}: no status written by the operator"
            for entry in others:
                foreign = [p for p in owned(entry.get("fieldsV1") or {}) if not allowed(p)]
                assert not foreign, (
                    f"{kind} {obj['metadata']['name']}: {entry['manager']} ({entry['operation']}) owns "
                    f"{foreign}"
                )
