"""Loom: a Kubernetes operator for ML workloads on GPU clusters.

Layers (enforced by import-linter, see pyproject.toml):
  controllers (Kopf handlers) > builders, autoscaling, health (pure decisions) > api (pydantic models).
Only `loom.kube` talks to the API server.
"""

__version__ = "0.1.0"
