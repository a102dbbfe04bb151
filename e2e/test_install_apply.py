"""The production install applied as a GitOps tool applies it: `kubectl apply --server-side -k` of each
overlay, then again: the second apply changes nothing (server-side diff empty; no object's generation or
managed fields move) in the live cluster."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from e2e.support import KUBECTL, ROOT, kubectl, wait_established

pytestmark = pytest.mark.timeout(240)

MANAGER = "e2e-install"


def ours(overlay: str) -> dict[str, dict[str, Any]]:
    """Each object of the overlay, as live: its generation and this field manager's entry."""
    out: dict[str, dict[str, Any]] = {}
    rendered = kubectl("kustomize", str(ROOT / "manifests" / "overlays" / overlay))
    live = json.loads(kubectl("get", "-f", "-", "-o", "json", "--show-managed-fields", input=rendered))
    for obj in live.get("items", [live]):
        meta = obj["metadata"]
        key = f"{obj['kind']} {meta.get('namespace', '')}/{meta['name']}"
        entries = [m for m in meta.get("managedFields") or [] if m.get("manager") == MANAGER]
        assert entries, f"{key}: no managed fields of {MANAGER}"
        out[key] = {"generation": meta.get("generation"), "managed": entries}
    return out


@pytest.mark.parametrize("overlay", ["prod", "dev"])
def test_applying_an_overlay_twice_changes_nothing(kubeconfig: str, overlay: str) -> None:
    path = str(ROOT / "manifests" / "overlays" / overlay)
    apply = ["apply", "--server-side", f"--field-manager={MANAGER}", "-k", path]
    try:
        kubectl(*apply, "--force-conflicts")  # the suite applied the CRDs with another manager
        rendered = [d for d in yaml.safe_load_all(kubectl("kustomize", path)) if d]
        wait_established(
            *(d["metadata"]["name"] for d in rendered if d["kind"] == "CustomResourceDefinition")
        )
        before = ours(overlay)
        diff = subprocess.run(
            [KUBECTL, "diff", "--server-side", f"--field-manager={MANAGER}", "-k", path],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert diff.returncode == 0 and not diff.stdout.strip(), (
            f"a second apply would change:\n{diff.stdout}"
        )
        kubectl(*apply)  # no conflicts either: every field this manager sets, it owns
        after = ours(overlay)
        moved = [k for k in before if before[k] != after[k]]
        assert not moved, f"the second apply changed {moved}: " + "; ".join(
            f"{before[k]} -> {after[k]}" for k in moved
        )
        assert len(before) > 10, sorted(before)
    finally:
        # as test_crds: the operator Deployment's (KWOK) pods would only hold the cluster's fake nodes
        kubectl("delete", "deployment", "loom-operator", "-n", "loom-system", "--wait=false", check=False)
