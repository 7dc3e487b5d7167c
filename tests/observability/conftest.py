"""Fixtures for the observability tests: a real runtime (Prometheus and the operator, on the local
cluster through support.cluster and support.operator, are started by the tests that scrape them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import Runtime


@pytest.fixture(scope="session")
def runtime(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """`mlmodel serve examples/sentiment/mlmodel.yaml` on a free loopback port, ready."""
    process = Runtime(repo_root / "examples" / "sentiment" / "mlmodel.yaml", tmp_path_factory.mktemp("runtime"))
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
