"""The CRDs in crds/ are generated from the pydantic models and are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from loom.api import FeaturePipeline, InferenceService, TrainingJob
from loom.cli import main
from loom.crd import RESOURCES, crd_for, crd_path, render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
MODELS = {m.info.kind: m for m in RESOURCES}


@pytest.mark.parametrize("model", RESOURCES, ids=lambda m: m.info.kind)
def test_committed_crd_matches_models(model: Any) -> None:
    path = crd_path(ROOT / "crds", model)
    assert path.read_text() == render(model), f"{path} is stale: run `make crds` and commit it"


def test_check_command_reports_stale_crds(tmp_path: Path) -> None:
    assert main(["crds", "--out", str(tmp_path)]) == 0
    assert main(["crds", "--out", str(tmp_path), "--check"]) == 0
    stale = crd_path(tmp_path, TrainingJob)
    stale.write_text(stale.read_text().replace("backoffLimit", "backoffLimitX"))
    assert main(["crds", "--out", str(tmp_path), "--check"]) == 1


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, child in schema.get("properties", {}).items():
        found += _walk(child, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        found += _walk(schema["additionalProperties"], f"{path}[*]")
    if "items" in schema:
        found += _walk(schema["items"], f"{path}[]")
    return found


@pytest.mark.parametrize("model", RESOURCES, ids=lambda m: m.info.kind)
def test_schema_is_structural(model: Any) -> None:
    schema = crd_for(model)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        for forbidden in ("$ref", "anyOf", "allOf", "oneOf", "title", "$defs"):
            assert forbidden not in node, f"{model.info.kind}{path} has {forbidden}"
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"
        assert node.get("default", 0) is not None, f"{path} defaults to null"


def test_status_schema_has_no_defaults_but_observed_generation() -> None:
    for model in RESOURCES:
        status = crd_for(model)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["default"] == {"observedGeneration": 0}  # kstatus: not observed yet, InProgress
        assert status["properties"]["observedGeneration"]["default"] == 0
        defaulted = [path for path, node in _walk(status) if "default" in node]
        assert defaulted == ["", ".observedGeneration"], model.info.kind


def test_inferenceservice_has_scale_subresource() -> None:
    version = crd_for(InferenceService)["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "scale" not in crd_for(TrainingJob)["spec"]["versions"][0]["subresources"]


def test_short_names_do_not_clash_with_kserve_or_kubeflow() -> None:
    taken = {
        "isvc",
        "tfjob",
        "pytorchjob",
        "ptj",
        "mpijob",
        "xgbjob",
        "trainjob",
        "sparkapp",
        "rayjob",
        "vcjob",
    }
    names = {n for m in RESOURCES for n in m.info.short_names}
    assert names and not names & taken


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_parse_with_the_models(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        resource = MODELS[doc["kind"]].model_validate(doc)
        assert resource.spec is not None


def test_models_reject_what_the_crd_rejects() -> None:
    with pytest.raises(ValueError, match="maxReplicas"):
        FeaturePipeline.model_validate(
            {
                "kind": "FeaturePipeline",
                "spec": {"source": {}, "transform": {}, "sinks": {}, "maxReplicas": 1},
            }
        )
