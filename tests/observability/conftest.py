"""Fixtures for the observability tests: a real runtime, Prometheus, and the operator fixtures."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import Runtime

OPERATOR_TESTS = Path(__file__).resolve().parents[1] / "operator"


def _operator_fixtures():
    """tests/operator/conftest.py (the API emulator and the real operator process), reused as is.

    Loaded under its own name: every conftest module is called `conftest`.
    """
    if str(OPERATOR_TESTS) not in sys.path:
        sys.path.insert(0, str(OPERATOR_TESTS))  # it imports its sibling `emulator`
    spec = importlib.util.spec_from_file_location("operator_test_fixtures", OPERATOR_TESTS / "conftest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


operator_fixtures = _operator_fixtures()
mlmodel_crd = operator_fixtures.mlmodel_crd
cluster = operator_fixtures.cluster
kubeconfig = operator_fixtures.kubeconfig
start_operator = operator_fixtures.start_operator


@pytest.fixture(scope="session")
def runtime(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """`mlmodel serve examples/sentiment/mlmodel.yaml` on a free loopback port, ready."""
    process = Runtime(repo_root / "examples" / "sentiment" / "mlmodel.yaml", tmp_path_factory.mktemp("runtime"))
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
