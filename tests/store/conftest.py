"""Store fixtures: every store test runs against SQLite and a real PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mlmodel_store.database import Database
from prometheus_client import CollectorRegistry

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty database on each backend in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'metadata.sqlite3'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A migrated database for tests that read and write directly."""
    db = Database(database_url)
    db.migrate()
    yield db
    db.close()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()
