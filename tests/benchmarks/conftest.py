"""Fixtures for the benchmark harness tests: the benchmarks folder on the path, a real local runtime."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from benchkit.procs import ServerProcess, free_port


@pytest.fixture(scope="module")
def runtime_url(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlmodel serve` of the sentiment example on a free loopback port, stopped after the module."""
    workdir = tmp_path_factory.mktemp("runtime")
    port = free_port()
    server = ServerProcess.start(
        "mlmodel serve",
        [
            str(Path(sys.executable).with_name("mlmodel")),
            "serve",
            str(repo_root / "examples/sentiment/mlmodel.yaml"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--cache-dir",
            str(workdir / "cache"),
            "--log-format",
            "text",
        ],
        env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"},
        cwd=workdir,
        log_path=workdir / "runtime.log",
    )
    try:
        server.wait_ready(f"http://127.0.0.1:{port}/v2/models/sentiment/ready", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
