"""Autoscaling: the pure scaling decision, the metric sources that feed it, the actuator contract.

The decision is pure: `now` and the previous state are parameters; metric sources do the I/O.
"""
