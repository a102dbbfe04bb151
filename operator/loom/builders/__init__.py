"""Builders: resource spec (+ observed children) -> desired child objects as plain dicts.

Pure: no I/O, no clock (`now` is a parameter), deterministic names. Unit-tested without a cluster.
"""
