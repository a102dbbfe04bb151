"""Kopf handlers, one module per kind. Thin: read what is observed, call a pure decision
(builders, autoscaling, health), apply through `loom.kube`, patch status once.
"""
