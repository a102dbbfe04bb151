"""The feature-pipeline runtime: computes one window (or a stream) of a FeaturePipeline and writes its sinks.

It runs inside pipeline pods (a Job, a Spark driver and executors, a Ray job, stream consumers) and by hand
(`loom features run`). Rule: it imports `loom.api` and the data libraries (pyarrow, DuckDB, redis-py;
PySpark and Ray only in their engine adapters), and nothing of `loom.controllers`, `loom.kube`,
`loom.builders`, kopf or kubernetes (an import-linter contract): a pipeline pod needs no access to the API
server.
"""
