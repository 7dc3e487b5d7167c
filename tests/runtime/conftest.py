"""Runtime test fixtures: small models trained once per session and a real `mlmodel serve`
process on a free loopback port (the helpers behind them are in `support.runtime`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import runtime_models
from support.runtime import Models, ServerProcess, launch_server, stop_server


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    folder = tmp_path_factory.mktemp("models")
    return Models(
        text=runtime_models.train_text_classifier(folder / "text.joblib"),
        tabular=runtime_models.train_tabular_regressor(folder / "tabular.joblib"),
        matrix=runtime_models.train_matrix_classifier(folder / "matrix.joblib"),
        slow=runtime_models.slow_doubler(folder / "slow.joblib", delay=0.2),
    )


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Any]:
    """Start `mlmodel serve ARGS` on a free loopback port; every process is stopped at teardown."""
    started: list[ServerProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> ServerProcess:
        started.append(launch_server(args, tmp_path, env))
        return started[-1]

    yield start
    for server in started:
        stop_server(server)
