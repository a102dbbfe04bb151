# Loom: every entry point. `make demo` and `make test` install what they need on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export LOOM_HOME ?= $(HOME)/.cache/loom
VENV ?= .venv
PY := $(VENV)/bin/python
KUBECONFIG_LOCAL := $(LOOM_HOME)/cluster/kubeconfig
GPU_NODES ?= 4
CPU_NODES ?= 2
GPUS_PER_NODE ?= 8

.PHONY: help deps venv crds lint test test-unit test-e2e test-sidecar sidecar fuzz bench bench-sidecar \
        bench-training bench-inference bench-features cluster-build cluster-up cluster-down demo demo-stop gpu-check clean

help:
	@echo "make demo    local cluster + CRDs + operator + examples, then kubectl get of the three kinds"
	@echo "make test    lint, unit tests, C++ sidecar tests, e2e against the local cluster"
	@echo "make bench   all benchmarks (bench-sidecar, bench-training, bench-inference, bench-features)"
	@echo "make cluster-up / cluster-down   start / remove the local KWOK cluster"

deps:  ## system packages (Debian): compilers and libraries for the sidecar, redis for the feature tests
	@./scripts/install-deps.sh

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

crds: venv
	$(VENV)/bin/loom crds --out crds

lint: venv
	$(VENV)/bin/ruff check operator e2e
	$(VENV)/bin/ruff format --check operator e2e
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test-unit: venv
	$(VENV)/bin/pytest -q operator/tests --ignore-glob='operator/tests/test_shm*'  # run by test-sidecar against the built binary

sidecar: deps
	./sidecar_native/scripts/build.sh release

test-sidecar: deps
	./sidecar_native/scripts/test.sh

fuzz: deps
	./sidecar_native/scripts/fuzz.sh

cluster-build:
	./e2e/cluster/build.sh

cluster-up: cluster-build
	GPU_NODES=$(GPU_NODES) CPU_NODES=$(CPU_NODES) GPUS_PER_NODE=$(GPUS_PER_NODE) ./e2e/cluster/up.sh

cluster-down:
	./e2e/cluster/down.sh

test-e2e: venv cluster-build
	$(VENV)/bin/pytest -q e2e

test: deps venv lint test-unit test-sidecar test-e2e

# The examples ask for more GPUs than the default 4 nodes have: the demo cluster has 8 GPU nodes.
demo: GPU_NODES = 8
demo: deps venv cluster-up
	./scripts/demo.sh

demo-stop:
	./scripts/demo.sh stop
	./e2e/cluster/down.sh

bench: bench-sidecar bench-training bench-inference bench-features

bench-sidecar: deps venv
	$(VENV)/bin/pip install -q -e '.[bench]'
	./sidecar_native/scripts/bench.sh

bench-training: venv cluster-build
	$(VENV)/bin/python e2e/bench/training_bench.py

bench-inference: venv cluster-build
	$(VENV)/bin/python e2e/bench/inference_bench.py

# FeaturePipeline runtime vs bare DuckDB, redis-benchmark, Feast's materialize, Spark, Ray (issues 8, 9)
bench-features: deps venv
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(VENV)/bin/python bench/features/features_bench.py

# Needs an NVIDIA GPU, so never part of `make test`: the GPU agent read against NVML while PyTorch loads
# GPU 0 (scripts/gpu_agent_check.py), then the sidecar's CUDA path. Without a GPU it fails at once, saying so.
gpu-check: deps venv
	$(PY) scripts/gpu_agent_check.py
	./sidecar_native/scripts/gpu_check.sh

clean:
	rm -rf $(VENV) build dist *.egg-info
