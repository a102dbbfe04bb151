"""Peering options: replicas of one Deployment get distinct priorities, the oldest the highest."""

from __future__ import annotations

import pytest

from loom.cli import main
from loom.controllers.peering import DEFAULT_LIFETIME, Peering, age_priority


def test_the_older_replica_has_the_higher_priority() -> None:
    assert age_priority(1_000.0) > age_priority(1_000.000001) > age_priority(2_000.0)


def test_defaults_are_by_age_and_ten_seconds() -> None:
    p = Peering()
    p.configure(priority=None, lifetime=None, now=1_700_000_000.5)
    assert (p.priority, p.lifetime) == (-1_700_000_000_500_000, DEFAULT_LIFETIME)
    assert p.describe() == "priority -1700000000500000, lifetime 10 s"


def test_explicit_values_win_and_a_lifetime_too_short_is_refused() -> None:
    p = Peering()
    p.configure(priority=100, lifetime=30)
    assert (p.priority, p.lifetime) == (100, 30)
    with pytest.raises(ValueError, match="at least 2 s"):
        p.configure(priority=None, lifetime=1)


def test_the_cli_takes_priority_and_lifetime(monkeypatch: pytest.MonkeyPatch) -> None:
    from loom.controllers import runner

    seen: dict[str, object] = {}
    monkeypatch.setattr(runner, "run", lambda **kw: seen.update(kw))
    main(["run", "--peering", "loom", "--peering-priority", "7", "--peering-lifetime", "12"])
    assert (seen["peering"], seen["peering_priority"], seen["peering_lifetime"]) == ("loom", 7, 12)
