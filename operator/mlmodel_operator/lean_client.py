"""Import kubernetes_asyncio's generated client lazily: only the classes something asks for.

``kubernetes_asyncio.client`` is generated code whose ``__init__`` imports all of its API classes
and about 800 model classes, 60-70 MB of RSS in every operator process, while the operator uses a
handful (ApiClient, Configuration, the exceptions, and the two models kopf checks for).
:func:`install` registers the client's three generated packages (``client``, ``client.api``,
``client.models``) in ``sys.modules`` without running their ``__init__``; each resolves a name on
first access by importing the one submodule its real ``__init__`` would have taken it from. The
names, classes and modules are the library's own: the map is read from those ``__init__`` files,
so a new release brings its own names with it.

It must run before anything imports ``kubernetes_asyncio`` (kopf does, through its third-party
helpers): the package ``mlmodel_operator`` calls it first. If a package is already imported, or
its ``__init__`` does not have the generated shape, it is left to the normal import.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

PACKAGES = (
    "kubernetes_asyncio.client",
    "kubernetes_asyncio.client.api",
    "kubernetes_asyncio.client.models",
)


def install() -> list[str]:
    """Register the lazy packages; returns the names it registered (none when kubernetes_asyncio
    is missing or already imported)."""
    registered = []
    for name in PACKAGES:
        module = _lazy_package(name)
        if module is not None:
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent in sys.modules:  # what the import system does for a package it loads
                setattr(sys.modules[parent], child, module)
            registered.append(name)
    if registered:
        # The package itself, now: a normal import runs it before its client, and the client's
        # modules import one another through it (api_client -> kubernetes_asyncio -> config ->
        # client.ApiClient), an order that only holds when it starts here.
        importlib.import_module(PACKAGES[0].partition(".")[0])
    return registered


def _locations(package: str) -> list[str] | None:
    """Where a package's submodules are, without importing the package (its ``__init__`` is
    what must not run)."""
    if package in sys.modules:
        return list(getattr(sys.modules[package], "__path__", []) or []) or None
    parent, _, _ = package.rpartition(".")
    spec = (
        importlib.machinery.PathFinder.find_spec(package, _locations(parent))
        if parent
        else importlib.util.find_spec(package)
    )
    if spec is None or spec.submodule_search_locations is None:
        return None
    return list(spec.submodule_search_locations)


def _generated_init(path: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """What a generated ``__init__`` imports (name: module it comes from) and the constants it
    assigns, read from its source without running it."""
    origins: dict[str, str] = {}
    constants: dict[str, Any] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            for alias in node.names:
                origins[alias.asname or alias.name] = node.module or ""
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in ("__all__", "__version__"):
                constants[target.id] = ast.literal_eval(node.value)
    return origins, constants


def _lazy_package(name: str) -> types.ModuleType | None:
    if name in sys.modules:
        return None
    parent, _, _ = name.rpartition(".")
    spec = importlib.machinery.PathFinder.find_spec(name, _locations(parent) if parent else None)
    if spec is None or spec.submodule_search_locations is None or not str(spec.origin).endswith(".py"):
        return None  # not there, or installed without sources
    try:
        origins, constants = _generated_init(Path(str(spec.origin)))
    except (OSError, SyntaxError, ValueError):
        return None
    if not origins:
        return None  # not the generated shape: let the normal import run it
    module = importlib.util.module_from_spec(spec)
    for constant, value in constants.items():  # __version__, __all__
        setattr(module, constant, value)

    def resolve(attribute: str) -> Any:
        origin = origins.get(attribute)
        if attribute.startswith("__"):
            raise AttributeError(f"module {name!r} has no attribute {attribute!r}")
        if origin is not None:
            value = getattr(importlib.import_module(origin), attribute)
        elif importlib.machinery.PathFinder.find_spec(f"{name}.{attribute}", module.__path__):
            value = importlib.import_module(f"{name}.{attribute}")  # a submodule, as __init__ had
        else:
            raise AttributeError(f"module {name!r} has no attribute {attribute!r}")
        setattr(module, attribute, value)  # the next access is a plain attribute
        return value

    module.__getattr__ = resolve  # type: ignore[method-assign]
    return module
