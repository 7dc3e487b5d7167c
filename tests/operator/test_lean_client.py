"""The operator imports kubernetes_asyncio's generated client lazily (mlmodel_operator/lean_client.py):
every name the real packages export resolves to the same class, from the same module, and the
operator's own imports load only the few model classes it uses. Each check runs in a fresh
interpreter, as the import order is the point."""

from __future__ import annotations

import importlib.util
import json
import py_compile
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlmodel_operator.lean_client import PACKAGES

# Every public name of the three packages (read from the full import when no names are given on
# stdin), as the module and qualified name of what it resolves to.
_RESOLVE = textwrap.dedent(
    """
    import importlib, inspect, json, sys
    names = json.load(sys.stdin)
    if names is not None:
        import mlmodel_operator
    found = {}
    for package in sys.argv[1:]:
        module = importlib.import_module(package)
        public = names[package] if names is not None else [
            n for n in dir(module) if not n.startswith("_")
            and not (inspect.ismodule(getattr(module, n)) and n not in getattr(module, "__all__", ()))
        ]
        found[package] = {
            n: [getattr(getattr(module, n), "__module__", None), getattr(getattr(module, n), "__qualname__", None)]
            for n in public
        }
    print(json.dumps(found))
    """
)


def _python(program: str, *args: str, stdin: str = "null") -> str:
    done = subprocess.run(
        [sys.executable, "-c", program, *args],
        input=stdin, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_public_name_resolves_to_what_the_full_import_gives() -> None:
    full = json.loads(_python(_RESOLVE, *PACKAGES))
    names = {package: sorted(found) for package, found in full.items()}
    lean = json.loads(_python(_RESOLVE, *PACKAGES, stdin=json.dumps(names)))
    assert len(full["kubernetes_asyncio.client.models"]) > 700
    assert len(full["kubernetes_asyncio.client.api"]) > 50
    assert {"ApiClient", "Configuration", "ApiException"} <= set(full["kubernetes_asyncio.client"])
    assert lean == full


def test_the_operator_loads_a_few_of_the_clients_models_and_still_works_with_them() -> None:
    program = textwrap.dedent(
        """
        import asyncio, json, sys
        import mlmodel_operator.main
        import kubernetes_asyncio
        from kubernetes_asyncio import client
        loaded = sorted(m for m in sys.modules if m.startswith("kubernetes_asyncio.client.models."))
        apis = sorted(m for m in sys.modules if m.startswith("kubernetes_asyncio.client.api."))
        # The generated client's typed path still works: deserialise a response into a model.
        class Response:
            data = json.dumps({"metadata": {"name": "x", "labels": {"a": "b"}}})
        async def deserialise():
            async with client.ApiClient() as api:
                return api.deserialize(Response(), "V1Pod")
        pod = asyncio.run(deserialise())
        print(json.dumps({
            "models": loaded, "apis": apis, "pod": [type(pod).__name__, pod.metadata.name, pod.metadata.labels],
            "same": kubernetes_asyncio.client is client and client.models is sys.modules["kubernetes_asyncio.client.models"],
            "version": client.__version__ == kubernetes_asyncio.__version__,
        }))
        """
    )
    found = json.loads(_python(program))
    assert 0 < len(found["models"]) < 20, found["models"]  # kopf's V1ObjectMeta and V1OwnerReference
    assert "kubernetes_asyncio.client.models.v1_object_meta" in found["models"]
    assert found["apis"] == []
    assert found["pod"] == ["V1Pod", "x", {"a": "b"}]
    assert found["same"] and found["version"]


def test_a_client_imported_before_the_operator_is_left_as_it_is() -> None:
    program = textwrap.dedent(
        """
        import json, sys
        import kubernetes_asyncio.client
        full = sum(1 for m in sys.modules if m.startswith("kubernetes_asyncio.client.models."))
        from mlmodel_operator import lean_client
        print(json.dumps([lean_client.install(), full, hasattr(sys.modules["kubernetes_asyncio.client"], "__getattr__")]))
        """
    )
    registered, full, lazy = json.loads(_python(program))
    assert registered == []
    assert full > 500  # the real package imported every model
    assert lazy is False


def test_a_package_of_another_shape_or_without_sources_is_left_to_the_normal_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlmodel_operator.lean_client import _lazy_package

    for package, init in {
        "lean_generated": "from lean_generated.things import Thing\n__all__ = ['Thing']\n",
        "lean_other": "import os\nTHING = os.sep\n",
    }.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(init)
        (tmp_path / package / "things.py").write_text("class Thing:\n    pass\n")
    sourceless = tmp_path / "lean_compiled"
    sourceless.mkdir()
    (sourceless / "__init__.py").write_text("from lean_compiled.things import Thing\n")
    py_compile.compile(str(sourceless / "__init__.py"), cfile=str(sourceless / "__init__.pyc"))
    (sourceless / "__init__.py").unlink()
    monkeypatch.syspath_prepend(str(tmp_path))
    lazy = _lazy_package("lean_generated")
    assert lazy is not None and lazy.__all__ == ["Thing"]
    assert "lean_generated.things" not in sys.modules
    monkeypatch.setitem(sys.modules, "lean_generated", lazy)
    try:
        assert lazy.Thing.__module__ == "lean_generated.things"
        assert lazy.things is sys.modules["lean_generated.things"]
        with pytest.raises(AttributeError, match="has no attribute 'Other'"):
            lazy.Other  # noqa: B018
    finally:
        sys.modules.pop("lean_generated.things", None)
    assert _lazy_package("lean_other") is None
    compiled = importlib.util.find_spec("lean_compiled")
    assert compiled is not None and str(compiled.origin).endswith("__init__.pyc")
    assert _lazy_package("lean_compiled") is None
