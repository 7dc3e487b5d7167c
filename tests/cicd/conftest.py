"""Fixtures for the CI/CD and GitOps tests: the workflows and the tools that check them."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
from cicd_support import load_workflow, workflow_paths


@pytest.fixture(scope="session")
def workflows() -> dict[str, dict]:
    return {path.stem: load_workflow(path) for path in workflow_paths()}


def _tool(name: str) -> str:
    # The venv's bin first: actionlint comes from the dev extra, not from the system.
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: `pip install -e '.[dev]'` / .ci/system-packages.sh")
    return found


@pytest.fixture(scope="session")
def actionlint() -> str:
    return _tool("actionlint")


@pytest.fixture(scope="session")
def shellcheck() -> str:
    return _tool("shellcheck")


@pytest.fixture(scope="session")
def lua() -> str:
    return _tool("lua5.1")


@pytest.fixture(scope="session")
def crd_check() -> ModuleType:
    """The CRD-schema + CEL checker the operator tests use."""
    from support import crd

    return crd
