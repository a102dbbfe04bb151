"""The one place that talks to the Kubernetes API server.

Server-side apply with one field manager, deletes that tolerate absence, status patches,
events. Every call retries conflicts (409) and transient server errors a few times.
Thread-safe: Kopf runs sync handlers in a thread pool and they share one client.
`use(client, sleep=...)` swaps the client (anything with DynamicClient's `resources.get`) and the
pause between retries, for tests.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from loom import metrics

FIELD_MANAGER = "loom-operator"
log = logging.getLogger(__name__)
T = TypeVar("T")

_RETRYABLE = {409, 429, 500, 502, 503, 504}
_lock = threading.Lock()
_dynamic: DynamicClient | None = None
_sleep: Callable[[float], None] = time.sleep


def use(client: Any | None, *, sleep: Callable[[float], None] = time.sleep) -> None:
    """Talk through `client` from now on (None: the kubeconfig's, built on first use) and wait
    between retries with `sleep`."""
    global _dynamic, _sleep
    with _lock:
        _dynamic, _sleep = client, sleep


def load_config() -> None:
    """In-cluster config inside a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def dynamic() -> DynamicClient:
    global _dynamic
    with _lock:
        if _dynamic is None:
            load_config()
            configuration = client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = 32
            api = client.ApiClient(configuration)
            _count_responses(api)
            _dynamic = DynamicClient(api)
        return _dynamic


def _count_responses(api: client.ApiClient) -> None:
    """Count every response Loom's client gets, by HTTP method and status code
    (loom_api_responses_total; code 0: no answer, e.g. a refused connection)."""
    request: Callable[..., Any] = api.rest_client.request

    def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        try:
            response = request(method, url, *args, **kwargs)
        except ApiException as e:
            metrics.API_RESPONSES.labels(verb=method.upper(), code=str(e.status or 0)).inc()
            raise
        except Exception:
            metrics.API_RESPONSES.labels(verb=method.upper(), code="0").inc()
            raise
        metrics.API_RESPONSES.labels(verb=method.upper(), code=str(response.status)).inc()
        return response

    setattr(api.rest_client, "request", counted)  # noqa: B010 - mypy: no assigning to a method


def retrying(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        for attempt in range(5):
            try:
                return fn(*args, **kwargs)
            except ApiException as e:
                if e.status not in _RETRYABLE or attempt == 4:
                    metrics.API_ERRORS.labels(operation=fn.__name__, code=str(e.status)).inc()
                    raise
                _sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    return wrapper


def _resource(api_version: str, kind: str) -> Any:
    return dynamic().resources.get(api_version=api_version, kind=kind)


@retrying
def apply(obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
    """Server-side apply of one object; creates it or updates the fields Loom owns."""
    metrics.API_REQUESTS.labels(operation="apply", kind=obj["kind"]).inc()
    meta = obj["metadata"]
    result = _resource(obj["apiVersion"], obj["kind"]).server_side_apply(
        body=obj,
        name=meta["name"],
        namespace=meta.get("namespace"),
        field_manager=FIELD_MANAGER,
        force_conflicts=force,
    )
    applied: dict[str, Any] = result.to_dict()
    return applied


@retrying
def create(obj: dict[str, Any]) -> dict[str, Any] | None:
    """Create one object; None when it already exists (creation is idempotent by name)."""
    metrics.API_REQUESTS.labels(operation="create", kind=obj["kind"]).inc()
    try:
        result = _resource(obj["apiVersion"], obj["kind"]).create(
            body=obj, namespace=obj["metadata"].get("namespace"), field_manager=FIELD_MANAGER
        )
    except ApiException as e:
        if e.status == 409 and "AlreadyExists" in (e.body or ""):
            return None
        raise
    created: dict[str, Any] = result.to_dict()
    return created


@retrying
def delete(
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None,
    *,
    propagation: str = "Background",
    uid: str | None = None,
    grace_period_seconds: int | None = None,
) -> bool:
    """Delete one object; False when it was already gone. `uid` guards against deleting a successor:
    when the object of that name has another uid, the API server answers 409 (the precondition
    failed), which means the object meant is gone too, so it is False as well, never retried."""
    metrics.API_REQUESTS.labels(operation="delete", kind=kind).inc()
    body: dict[str, Any] = {"propagationPolicy": propagation}
    if uid:
        body["preconditions"] = {"uid": uid}
    if grace_period_seconds is not None:
        body["gracePeriodSeconds"] = grace_period_seconds
    try:
        _resource(api_version, kind).delete(name=name, namespace=namespace, body=body)
    except NotFoundError:
        return False
    except ApiException as e:
        if uid and e.status == 409:
            return False
        raise
    return True


@retrying
def patch(
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None,
    body: dict[str, Any],
    *,
    subresource: str | None = None,
) -> dict[str, Any] | None:
    """JSON merge patch of an object (or of its status / scale subresource); None when it is gone."""
    metrics.API_REQUESTS.labels(operation=f"patch{subresource or ''}", kind=kind).inc()
    resource = _resource(api_version, kind)
    if subresource:
        resource = getattr(resource, subresource)
    try:
        result = resource.patch(
            name=name,
            namespace=namespace,
            body=body,
            content_type="application/merge-patch+json",
            field_manager=FIELD_MANAGER,
        )
    except NotFoundError:
        return None
    patched: dict[str, Any] = result.to_dict()
    return patched


def event(involved: dict[str, Any], reason: str, message: str, *, type_: str = "Normal") -> None:
    """Record a Kubernetes event on an object; failures (the API server's answers, connection errors,
    an involved object without apiVersion or kind) are logged, never raised: an event is never worth
    failing a reconcile for."""
    meta = involved.get("metadata") or {}
    where = f"{meta.get('namespace')}/{meta.get('name')}" if meta.get("namespace") else str(meta.get("name"))
    try:
        create(_event_body(involved, reason, message, type_))
    except Exception as e:
        log.warning("could not record event %s on %s: %s", reason, where, getattr(e, "reason", None) or e)


def _event_body(involved: dict[str, Any], reason: str, message: str, type_: str) -> dict[str, Any]:
    meta = involved["metadata"]
    now = datetime.now(UTC)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta.get("namespace", "default")},
        "involvedObject": {
            "apiVersion": involved["apiVersion"],
            "kind": involved["kind"],
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": type_,
        "source": {"component": FIELD_MANAGER},
        "firstTimestamp": now.isoformat(),
        "lastTimestamp": now.isoformat(),
        "count": 1,
    }


@retrying
def serves(api_version: str, plural: str) -> bool:
    """Does the API server serve the resource `plural` of `api_version` now? Asks discovery itself
    (GET /apis/<group>/<version>), not the client's cached copy of it."""
    path = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    metrics.API_REQUESTS.labels(operation="discover", kind=api_version).inc()
    try:
        found = dynamic().request("GET", path)
    except NotFoundError:
        return False
    served: dict[str, Any] = found.to_dict()
    return any(r.get("name") == plural for r in served.get("resources") or [])


@retrying
def get(api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
    """One object as the API server has it now; None when it does not exist."""
    metrics.API_REQUESTS.labels(operation="get", kind=kind).inc()
    try:
        found: dict[str, Any] = _resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
    except NotFoundError:
        return None
    return found


@retrying
def patch_strategic(
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None,
    body: dict[str, Any],
    *,
    subresource: str | None = None,
) -> dict[str, Any] | None:
    """Strategic merge patch of a built-in object (lists with a merge key, such as a node's conditions,
    merge by that key: the kubelet's conditions stay); None when it is gone."""
    metrics.API_REQUESTS.labels(operation=f"patch{subresource or ''}", kind=kind).inc()
    resource = _resource(api_version, kind)
    if subresource:
        resource = getattr(resource, subresource)
    try:
        result = resource.patch(
            name=name,
            namespace=namespace,
            body=body,
            content_type="application/strategic-merge-patch+json",
            field_manager=FIELD_MANAGER,
        )
    except NotFoundError:
        return None
    patched: dict[str, Any] = result.to_dict()
    return patched


def modify(
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None,
    change: Callable[[dict[str, Any]], dict[str, Any] | None],
    *,
    attempts: int = 5,
) -> dict[str, Any] | None:
    """Read, change, write with optimistic concurrency: `change(obj)` returns the merge patch to send
    (None: nothing to change), which should carry the object's metadata.resourceVersion, so that a
    write in between is a conflict (409); then the object is read again and `change` asked again.
    Returns the object as written (or as read, when nothing changed); None when it is gone."""
    for attempt in range(attempts):
        obj = get(api_version, kind, name, namespace)
        if obj is None:
            return None
        body = change(obj)
        if body is None:
            return obj
        metrics.API_REQUESTS.labels(operation="patch", kind=kind).inc()
        try:
            result = _resource(api_version, kind).patch(
                name=name,
                namespace=namespace,
                body=body,
                content_type="application/merge-patch+json",
                field_manager=FIELD_MANAGER,
            )
        except NotFoundError:
            return None
        except ApiException as e:
            if e.status == 409 and attempt < attempts - 1:
                continue
            metrics.API_ERRORS.labels(operation="modify", code=str(e.status)).inc()
            raise
        written: dict[str, Any] = result.to_dict()
        return written
    raise AssertionError("unreachable")
