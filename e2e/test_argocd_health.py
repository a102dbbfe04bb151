"""Loom's Argo CD health checks (manifests/argocd): each kind's health_test.yaml replayed the way Argo CD
tests its resource_customizations (a Lua 5.1 runs health.lua on each recorded input and must return the
status and message named), covering Healthy, Progressing, Degraded and Suspended where they apply; and
the argocd-cm keys manifests/argocd renders are those scripts. No cluster needed: the inputs were recorded
from live e2e runs (e2e/test_gitops_status.py, which checks the scripts on live objects too)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from e2e.argocd import CUSTOMIZATIONS, health
from e2e.support import ROOT, kubectl

KINDS = sorted(p for p in (CUSTOMIZATIONS / "loom.ml").iterdir() if p.is_dir())
APPLIES = {
    "TrainingJob": {"Healthy", "Progressing", "Degraded", "Suspended"},
    "InferenceService": {"Healthy", "Progressing", "Degraded"},
    "FeaturePipeline": {"Healthy", "Progressing", "Degraded", "Suspended"},
}


def cases() -> list[object]:
    out: list[object] = []
    for kind in KINDS:
        for test in yaml.safe_load((kind / "health_test.yaml").read_text())["tests"]:
            out.append(pytest.param(kind, test, id=f"{kind.name}-{Path(test['inputPath']).stem}"))
    return out


def test_every_kind_has_a_check() -> None:
    assert [k.name for k in KINDS] == sorted(APPLIES)
    for kind in KINDS:
        tests = yaml.safe_load((kind / "health_test.yaml").read_text())["tests"]
        assert {t["healthStatus"]["status"] for t in tests} == APPLIES[kind.name], kind.name
        inputs = {(kind / t["inputPath"]).resolve() for t in tests}
        assert inputs == {p.resolve() for p in (kind / "testdata").glob("*.yaml")}, "unused testdata"


@pytest.mark.parametrize(("kind", "test"), cases())
def test_health_check(kind: Path, test: dict[str, dict[str, str] | str]) -> None:
    obj = yaml.safe_load((kind / str(test["inputPath"])).read_text())
    assert obj["kind"] == kind.name
    assert health(kind.name, obj) == test["healthStatus"]


def test_an_object_no_operator_has_seen_is_progressing() -> None:
    for kind in KINDS:
        bare = {
            "apiVersion": "loom.ml/v1alpha1",
            "kind": kind.name,
            "metadata": {"name": "x", "generation": 1},
        }
        assert health(kind.name, bare)["status"] == "Progressing"
        defaulted = {**bare, "status": {"observedGeneration": 0}}  # the CRDs' status default
        assert health(kind.name, defaulted)["status"] == "Progressing"


def test_argocd_cm_carries_the_scripts() -> None:
    docs = [d for d in yaml.safe_load_all(kubectl("kustomize", str(ROOT / "manifests" / "argocd"))) if d]
    assert [(d["kind"], d["metadata"]["name"], d["metadata"]["namespace"]) for d in docs] == [
        ("ConfigMap", "argocd-cm", "argocd")
    ]
    assert docs[0]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "argocd"
    assert docs[0]["data"] == {
        f"resource.customizations.health.loom.ml_{kind.name}": (kind / "health.lua").read_text()
        for kind in KINDS
    }
