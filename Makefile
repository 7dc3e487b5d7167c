# One entry point for people and CI. `make serve` and `make test` are the README's quick start.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8080

.PHONY: help install serve test test-fast lint typecheck examples images bench bench-operator clean

help:
	@echo "make serve      serve the sentiment example locally (trains it first if needed)"
	@echo "make test       install what the tests need (Debian packages too) and run them all"
	@echo "make test-fast  run the tests that need no Docker engine"
	@echo "make lint       ruff over the code"
	@echo "make typecheck  mypy over the runtime and operator packages"
	@echo "make examples   retrain both example models"
	@echo "make bench      serving benchmark: ours vs MLServer, FastAPI, Flask (about 12 min; BENCH_ARGS=--quick)"
	@echo "make bench-operator  the operator with 500 MLModels against the API emulator"
	@echo "make images     build the runtime and operator images (BASE_IMAGE=... to change the base)"

$(BIN)/mlmodel: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(BIN)/mlmodel

examples/sentiment/model.joblib: | $(BIN)/mlmodel
	$(BIN)/python examples/sentiment/train.py

serve: $(BIN)/mlmodel examples/sentiment/model.joblib
	@echo "Serving the sentiment example on http://127.0.0.1:$(PORT). In another terminal, try:"
	@echo "  curl -s http://127.0.0.1:$(PORT)/v2/models/sentiment/infer -H 'content-type: application/json' -d @examples/sentiment/request.json"
	@echo "  curl -s http://127.0.0.1:$(PORT)/v1/models/sentiment:predict -d '{\"instances\": [\"a wonderful, moving film\"]}'"
	$(BIN)/mlmodel serve examples/sentiment/mlmodel.yaml --port $(PORT)

examples: $(BIN)/mlmodel
	$(BIN)/python examples/sentiment/train.py
	$(BIN)/python examples/house-prices/train.py

# Builds benchmarks/.venv-mlserver and .venv-baselines on first use; writes benchmarks/results/.
bench: $(BIN)/mlmodel examples/sentiment/model.joblib
	$(BIN)/python benchmarks/serving.py $(BENCH_ARGS)

bench-operator: $(BIN)/mlmodel
	$(BIN)/python benchmarks/operator_scale.py $(BENCH_ARGS)

test: $(BIN)/mlmodel
	bash .ci/system-packages.sh
	$(BIN)/python -m pytest

test-fast: $(BIN)/mlmodel
	$(BIN)/python -m pytest -m "not docker"

lint: $(BIN)/mlmodel
	$(BIN)/ruff check runtime operator tests benchmarks examples

typecheck: $(BIN)/mlmodel
	$(BIN)/mypy

# BASE_IMAGE=mlmodel-local/python:3.11-slim-bookworm (from .ci/build-base-image.sh) where no
# registry is reachable.
BASE_IMAGE ?= python:3.11-slim
images:
	bash .ci/start-docker.sh
	DOCKER_BUILDKIT=0 docker build -f Dockerfile.runtime --build-arg BASE_IMAGE=$(BASE_IMAGE) -t mlmodel-runtime:dev .
	DOCKER_BUILDKIT=0 docker build -f Dockerfile.operator --build-arg BASE_IMAGE=$(BASE_IMAGE) -t mlmodel-operator:dev .

clean:
	rm -rf $(VENV) .pytest_cache
