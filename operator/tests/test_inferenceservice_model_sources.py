"""model.uri schemes and model.credentials: the CRD's rules and what the sidecar is given."""

from __future__ import annotations

import re
from typing import Any

import pytest
from test_inferenceservice_factories import make_isvc

from loom.api.inferenceservice import MODEL_URI_MESSAGE, MODEL_URI_PATTERN, InferenceService
from loom.builders.inferenceservice import SidecarConfig, desired_deployment, revision_hash
from loom.builders.model_sources import CREDENTIALS_DIR, pvc_claim, sidecar_source
from loom.crd import crd_for
from loom.health.pods import SIDECAR_EXIT_CODES


def model_schema() -> dict[str, Any]:
    schema = crd_for(InferenceService)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]["properties"]["model"]


def isvc_with(**model: Any) -> InferenceService:
    return make_isvc(model={"sizeLimit": "4Gi", **model})


def pod_spec(isvc: InferenceService) -> dict[str, Any]:
    return desired_deployment(isvc, revision_hash(isvc), 1)["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("uri", "accepted"),
    [
        pytest.param("/models/ranker", True, id="path"),
        pytest.param("https://models.example.com/r.safetensors", True, id="https"),
        pytest.param("s3://models/ranker/", True, id="s3-prefix"),
        pytest.param("s3://models", True, id="s3-bucket"),
        pytest.param("gs://team.models/ranker/model.safetensors", True, id="gs"),
        pytest.param("hf://meta-llama/Llama-3.2-1B@v1.0/sub", True, id="hf-revision-path"),
        pytest.param("hf://org/repo", True, id="hf"),
        pytest.param("pvc://weights/ranker", True, id="pvc"),
        pytest.param("bucket/model.safetensors", False, id="relative"),
        pytest.param("s3://Models/x", False, id="s3-upper-case-bucket"),
        pytest.param("s3://ab/x", False, id="s3-short-bucket"),
        pytest.param("az://container/x", False, id="unknown-scheme"),
        pytest.param("hf://org", False, id="hf-no-repo"),
        pytest.param("pvc://Weights/x", False, id="pvc-bad-claim"),
        pytest.param("http://", False, id="http-no-host"),
    ],
)
def test_uri_rule_accepts_exactly_the_schemes_the_sidecar_reads(uri: str, accepted: bool) -> None:
    # The CEL rule is `self.matches(MODEL_URI_PATTERN)`; RE2 and Python agree on this pattern.
    assert bool(re.match(MODEL_URI_PATTERN, uri)) is accepted


def test_crd_carries_the_uri_rule_and_names_the_schemes() -> None:
    rules = model_schema()["properties"]["uri"]["x-kubernetes-validations"]
    assert rules[0] == {"rule": f"self.matches('{MODEL_URI_PATTERN}')", "message": MODEL_URI_MESSAGE}
    assert "'" not in MODEL_URI_PATTERN and "\\" not in MODEL_URI_PATTERN  # safe inside a CEL literal
    for scheme in ("http(s)://", "s3://", "gs://", "hf://", "pvc://"):
        assert scheme in MODEL_URI_MESSAGE
    assert model_schema()["properties"]["uri"]["maxLength"] == 2048  # bounds the rule's CEL cost
    credentials = model_schema()["properties"]["credentials"]
    assert credentials["x-kubernetes-validations"][0]["rule"] == (
        "has(self.secretName) != has(self.serviceAccountName)"
    )


def test_plain_uris_are_passed_as_they_are() -> None:
    sidecar = pod_spec(isvc_with(uri="s3://models/ranker/"))["initContainers"][0]
    assert sidecar["command"][-1] == "ranker=s3://models/ranker/"
    assert "env" not in sidecar and "envFrom" not in sidecar


def test_a_pvc_is_mounted_read_only_into_the_sidecar_only_and_read_as_a_path() -> None:
    spec = pod_spec(isvc_with(uri="pvc://weights/ranker/v2/"))
    sidecar, server = spec["initContainers"][0], spec["containers"][0]
    assert sidecar["command"][-1] == "ranker=/loom/pvc/weights/ranker/v2"
    assert {"name": "loom-model-pvc", "mountPath": "/loom/pvc/weights", "readOnly": True} in sidecar[
        "volumeMounts"
    ]
    assert all(m["name"] != "loom-model-pvc" for m in server["volumeMounts"])
    assert {
        "name": "loom-model-pvc",
        "persistentVolumeClaim": {"claimName": "weights", "readOnly": True},
    } in spec["volumes"]
    assert pvc_claim("pvc://weights") == ("weights", "")
    assert sidecar_source(isvc_with(uri="pvc://weights").spec.model).uri == "/loom/pvc/weights"
    assert pvc_claim("s3://b/x") is None


def test_a_secret_becomes_the_sidecars_environment_and_a_credentials_file() -> None:
    spec = pod_spec(isvc_with(uri="s3://models/ranker/", credentials={"secretName": "ranker-s3"}))
    sidecar, server = spec["initContainers"][0], spec["containers"][0]
    assert sidecar["envFrom"] == [{"secretRef": {"name": "ranker-s3"}}]
    assert {"name": "AWS_SHARED_CREDENTIALS_FILE", "value": f"{CREDENTIALS_DIR}/credentials"} in sidecar[
        "env"
    ]
    assert {"name": "loom-model-credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True} in sidecar[
        "volumeMounts"
    ]
    assert {"name": "loom-model-credentials", "secret": {"secretName": "ranker-s3"}} in spec["volumes"]
    # The serving container sees none of it.
    assert "envFrom" not in server
    assert all(m["name"] != "loom-model-credentials" for m in server["volumeMounts"])
    assert "serviceAccountName" not in spec


def test_a_service_account_is_the_pods_for_irsa_and_workload_identity() -> None:
    spec = pod_spec(isvc_with(uri="s3://models/ranker/", credentials={"serviceAccountName": "ranker-reader"}))
    assert spec["serviceAccountName"] == "ranker-reader"
    assert "envFrom" not in spec["initContainers"][0]


def test_endpoint_and_region_become_the_flags_of_the_uris_store() -> None:
    s3 = pod_spec(isvc_with(uri="s3://models/r/", endpoint="http://minio.storage:9000/", region="eu-west-1"))
    command = s3["initContainers"][0]["command"]
    assert command[-5:] == [
        "--s3-endpoint",
        "http://minio.storage:9000",
        "--s3-region",
        "eu-west-1",
        "ranker=s3://models/r/",
    ]
    gs = pod_spec(isvc_with(uri="gs://models/r/", endpoint="https://storage.example.com"))
    assert "--gcs-endpoint" in gs["initContainers"][0]["command"]
    hf = pod_spec(isvc_with(uri="hf://org/r", endpoint="https://hf-mirror.example.com"))
    assert "--hf-endpoint" in hf["initContainers"][0]["command"]


def test_credentials_change_the_revision() -> None:
    plain = isvc_with(uri="s3://models/r/")
    with_secret = isvc_with(uri="s3://models/r/", credentials={"secretName": "s"})
    assert revision_hash(plain, SidecarConfig()) != revision_hash(with_secret, SidecarConfig())


def test_forbidden_and_throttled_exits_have_reasons() -> None:
    assert SIDECAR_EXIT_CODES[9][0] == "SourceForbidden"
    assert SIDECAR_EXIT_CODES[10][0] == "SourceThrottled"
