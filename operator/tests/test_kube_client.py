"""loom.kube with an injected client and clock: the requests it sends, what it retries and how
long it waits, and what each answer of the API server becomes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import NotFoundError

from loom import kube, metrics


def api_error(status: int, body: str = "") -> ApiException:
    e = ApiException(status=status, reason={404: "Not Found", 409: "Conflict"}.get(status, "Error"))
    e.body = body
    return e


class Result:
    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj

    def to_dict(self) -> dict[str, Any]:
        return self.obj


class Resource:
    """One API resource; `answers` are raised (exceptions) or returned (dicts) in turn."""

    def __init__(self, client: Client, key: tuple[str, str], sub: str = "") -> None:
        self.client, self.key, self.sub = client, key, sub

    def __getattr__(self, name: str) -> Any:
        if name in ("status", "scale"):
            return Resource(self.client, self.key, name)

        def call(**kwargs: Any) -> Result:
            self.client.calls.append((name, self.key, self.sub, kwargs))
            answer = self.client.answers.pop(0) if self.client.answers else {}
            if isinstance(answer, BaseException):
                raise answer
            return Result(answer)

        return call


class Client:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, str], str, dict[str, Any]]] = []
        self.answers: list[Any] = []
        self.resources = self

    def get(self, api_version: str, kind: str) -> Resource:
        return Resource(self, (api_version, kind))

    def request(self, method: str, path: str) -> Result:
        self.calls.append((method, (path, ""), "", {}))
        answer = self.answers.pop(0) if self.answers else {}
        if isinstance(answer, BaseException):
            raise answer
        return Result(answer)


@pytest.fixture
def client() -> Iterator[Client]:
    fake = Client()
    waits: list[float] = []
    kube.use(fake, sleep=waits.append)
    fake.waits = waits  # type: ignore[attr-defined]
    yield fake
    kube.use(None)


POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}


def test_apply_is_server_side_with_loom_as_field_manager(client: Client) -> None:
    client.answers = [{"applied": True}]
    assert kube.apply(POD) == {"applied": True}
    ((verb, key, sub, kwargs),) = client.calls
    assert (verb, key, sub) == ("server_side_apply", ("v1", "Pod"), "")
    assert kwargs["field_manager"] == "loom-operator" and kwargs["force_conflicts"] is True
    assert (kwargs["name"], kwargs["namespace"]) == ("p", "ns")


def test_conflicts_and_server_errors_are_retried_with_backoff(client: Client) -> None:
    client.answers = [api_error(409), api_error(503), {"ok": 1}]
    assert kube.apply(POD) == {"ok": 1}
    assert len(client.calls) == 3 and client.waits == [0.05, 0.1]  # type: ignore[attr-defined]


def test_a_lasting_failure_is_raised_after_five_tries_and_counted(client: Client) -> None:
    before = metrics.API_ERRORS.labels(operation="apply", code="500")._value.get()
    client.answers = [api_error(500)] * 5
    with pytest.raises(ApiException):
        kube.apply(POD)
    assert len(client.calls) == 5 and client.waits == [0.05, 0.1, 0.2, 0.4]  # type: ignore[attr-defined]
    assert metrics.API_ERRORS.labels(operation="apply", code="500")._value.get() == before + 1


def test_client_errors_are_not_retried(client: Client) -> None:
    client.answers = [api_error(422)]
    with pytest.raises(ApiException):
        kube.apply(POD)
    assert len(client.calls) == 1 and client.waits == []  # type: ignore[attr-defined]


def test_create_of_an_existing_name_is_none_not_a_retry(client: Client) -> None:
    client.answers = [api_error(409, '{"reason": "AlreadyExists"}')]
    assert kube.create(POD) is None
    assert len(client.calls) == 1
    client.answers = [api_error(409, '{"reason": "Conflict"}'), {"created": 1}]
    assert kube.create(POD) == {"created": 1}


def test_delete_sends_preconditions_and_tells_gone_from_deleted(client: Client) -> None:
    assert kube.delete("v1", "Pod", "p", "ns", uid="u1", grace_period_seconds=0) is True
    body = client.calls[-1][3]["body"]
    assert body == {
        "propagationPolicy": "Background",
        "preconditions": {"uid": "u1"},
        "gracePeriodSeconds": 0,
    }
    client.answers = [NotFoundError(api_error(404))]
    assert kube.delete("v1", "Pod", "p", "ns") is False
    client.answers = [api_error(409, "Precondition failed: UID in precondition: u1")]
    assert kube.delete("v1", "Pod", "p", "ns", uid="u1") is False
    calls = len(client.calls)
    client.answers = [api_error(409)] * 5  # without a uid a conflict is a conflict: retried, raised
    with pytest.raises(ApiException):
        kube.delete("v1", "Pod", "p", "ns")
    assert len(client.calls) - calls == 5


def test_patch_of_a_subresource_and_of_an_object_that_is_gone(client: Client) -> None:
    client.answers = [{"status": {"phase": "Running"}}]
    assert kube.patch("loom.ml/v1alpha1", "TrainingJob", "j", "ns", {"status": {}}, subresource="status")
    verb, key, sub, kwargs = client.calls[-1]
    assert (verb, key, sub) == ("patch", ("loom.ml/v1alpha1", "TrainingJob"), "status")
    assert kwargs["content_type"] == "application/merge-patch+json"
    client.answers = [NotFoundError(api_error(404))]
    assert kube.patch("v1", "Pod", "p", "ns", {"spec": {}}) is None


def test_event_names_its_object_and_is_cut_to_the_api_limit(client: Client) -> None:
    involved = {**POD, "metadata": {**POD["metadata"], "uid": "u"}}
    kube.event(involved, "Tested", "x" * 5000, type_="Warning")
    body = client.calls[-1][3]["body"]
    assert body["metadata"] == {"generateName": "p.", "namespace": "ns"}
    assert body["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "p",
        "namespace": "ns",
        "uid": "u",
    }
    assert (body["reason"], body["type"], len(body["message"])) == ("Tested", "Warning", 1024)
    client.answers = [api_error(403)]
    kube.event(involved, "Tested", "refused")  # logged, never raised


def test_serves_asks_discovery_of_the_group_version_itself(client: Client) -> None:
    """Whether PodGroups are served (kube-scheduler's gang scheduling) decides a TrainingJob's gang path."""
    client.answers = [
        {"resources": [{"name": "workloads"}, {"name": "podgroups"}, {"name": "podgroups/status"}]}
    ]
    assert kube.serves("scheduling.k8s.io/v1alpha2", "podgroups") is True
    assert client.calls[-1][:2] == ("GET", ("/apis/scheduling.k8s.io/v1alpha2", ""))
    client.answers = [{"resources": [{"name": "priorityclasses"}]}]
    assert kube.serves("scheduling.k8s.io/v1", "podgroups") is False
    client.answers = [NotFoundError(api_error(404))]  # the group version is not served at all (1.34)
    assert kube.serves("scheduling.k8s.io/v1alpha2", "podgroups") is False
    client.answers = [{"resources": [{"name": "pods"}]}]
    assert kube.serves("v1", "pods") is True
    assert client.calls[-1][:2] == ("GET", ("/api/v1", ""))
