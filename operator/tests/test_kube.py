"""loom.kube without a cluster: what it promises when the API server cannot be reached."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
from kubernetes import client

from loom import kube


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens once the socket is closed


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """kube pointed at a loopback port where nothing listens: every request is refused."""
    host = f"http://127.0.0.1:{_closed_port()}"

    def load_config() -> None:
        configuration = client.Configuration()
        configuration.host = host
        configuration.retries = 0
        client.Configuration.set_default(configuration)

    monkeypatch.setattr(kube, "load_config", load_config)
    monkeypatch.setattr(kube, "_dynamic", None)
    yield host
    monkeypatch.setattr(kube, "_dynamic", None)
    client.Configuration.set_default(None)


def test_event_never_raises_when_the_api_server_is_unreachable(
    unreachable: str, caplog: pytest.LogCaptureFixture
) -> None:
    involved = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "uid": "u"}}
    with caplog.at_level(logging.WARNING, logger="loom.kube"):
        kube.event(involved, "Tested", "never delivered")
    assert "could not record event Tested on ns/p" in caplog.text


def test_event_never_raises_on_an_odd_involved_object(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="loom.kube"):
        kube.event({"metadata": {"name": "p"}}, "Tested", "no apiVersion or kind")
    assert "could not record event Tested" in caplog.text
