"""GPU agent: `loom gpu-agent`, one per GPU node (a DaemonSet, or by hand on a host).

It reads NVML, exports DCGM exporter's metric names and labels plus Loom's `loom_gpu_*` health series,
and puts a fatal GPU fault on its node where schedulers and controllers can act: the condition
GPUHealthy=False and the taint loom.ml/gpu-unhealthy:NoSchedule, both cleared only after a healthy period.

The package's rule (import-linter contracts in pyproject.toml):
- NVML is reached only through the `nvml.Nvml` interface; only `pynvml_backend` imports `pynvml`
  (lazily: no driver means `NvmlUnavailable`, never an ImportError), and tests use `fake.FakeNvml`.
- `policy` (faults and the health verdict) and `node` (what to write to the node) are pure: no I/O,
  no clock (`now` is a parameter), nothing of kubernetes, prometheus_client or pynvml.
- The agent writes only its own node, and only through `loom.kube`; nothing here imports kopf, the
  controllers, builders, autoscaling or the feature runtime.
"""
