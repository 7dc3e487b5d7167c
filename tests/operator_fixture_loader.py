"""Reuse of the operator tests' fixtures (API emulator, kubeconfig, operator process) elsewhere.

Every conftest module is named `conftest`, so the operator one is loaded under its own name and
each of its fixtures is re-exported into the calling conftest's namespace.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

OPERATOR_TESTS = Path(__file__).resolve().parent / "operator"
MODULE_NAME = "operator_test_fixtures"


def load_operator_fixtures() -> ModuleType:
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    if str(OPERATOR_TESTS) not in sys.path:
        sys.path.append(str(OPERATOR_TESTS))  # it imports its sibling `emulator`
    spec = importlib.util.spec_from_file_location(MODULE_NAME, OPERATOR_TESTS / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


def export_operator_fixtures(namespace: dict) -> ModuleType:
    """Put every fixture of the operator tests into `namespace` (a conftest's globals())."""
    module = load_operator_fixtures()
    for name, value in vars(module).items():
        if hasattr(value, "_pytestfixturefunction") or type(value).__name__ == "FixtureFunctionDefinition":
            namespace.setdefault(name, value)
    return module
