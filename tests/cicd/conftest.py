"""Fixtures for the CI/CD and GitOps tests: the workflows and the tools that check them."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
from cicd_support import REPO_ROOT, load_workflow, workflow_paths


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
    """The CRD-schema + CEL checker of the operator tests, loaded by path (no package import)."""
    if "crd_check" in sys.modules:
        return sys.modules["crd_check"]
    spec = importlib.util.spec_from_file_location(
        "crd_check", REPO_ROOT / "tests" / "operator" / "crd_check.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["crd_check"] = module
    spec.loader.exec_module(module)
    return module
