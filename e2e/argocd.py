"""Loom's Argo CD health checks (manifests/argocd/resource_customizations/<group>/<Kind>/health.lua), run
the way Argo CD runs them: a Lua 5.1 interpreter (lupa's embedded Lua 5.1; Argo CD embeds gopher-lua, a Lua
5.1) with the object as the global `obj`, returning a table {status, message}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e.support import ROOT

CUSTOMIZATIONS = ROOT / "manifests" / "argocd" / "resource_customizations"
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def script(group: str, kind: str) -> Path:
    return CUSTOMIZATIONS / group / kind / "health.lua"


def health(kind: str, obj: dict[str, Any], group: str = "loom.ml") -> dict[str, str]:
    """What Argo CD's health check of `kind` says of `obj`: {"status": ..., "message": ...}."""
    from lupa import lua51  # the test extra; imported here so that collecting the suite does not need it

    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script(group, kind).read_text())
    assert result is not None, f"{script(group, kind)} returned nothing"
    out = {"status": str(result["status"]), "message": str(result["message"] or "")}
    assert out["status"] in STATUSES, out
    return out
