"""Fixtures for the observability tests: a real runtime, Prometheus, and the operator fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_fixture_loader import export_operator_fixtures
from processes import Runtime

# The API emulator, kubeconfig and real operator process of tests/operator, reused as they are.
operator_fixtures = export_operator_fixtures(globals())


@pytest.fixture(scope="session")
def runtime(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """`mlmodel serve examples/sentiment/mlmodel.yaml` on a free loopback port, ready."""
    process = Runtime(repo_root / "examples" / "sentiment" / "mlmodel.yaml", tmp_path_factory.mktemp("runtime"))
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
