"""Fixtures shared by every test area: paths to the repository and its examples."""

from __future__ import annotations

from pathlib import Path

import pytest

# The real PostgreSQL server fixtures (postgres_server, postgres_url) for every test area.
from postgres_server import postgres_server, postgres_url  # noqa: F401

# The local control plane (tests/cluster), the operator process run against it, a real Redis.
pytest_plugins = ["support.cluster", "support.operator", "support.redis"]

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
