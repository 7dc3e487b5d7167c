"""The layers point one way: the operator and the runtime share only common/ (mlmodel_spec,
mlmodel_store, mlmodel_cli), so each image runs without the other's package, as the images are
built (tests/containers checks the images themselves where Docker runs)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Run in a fresh interpreter where the named packages cannot be imported, as in an image that
# does not carry them; every module of the given packages is imported there.
_PROGRAM = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys

    missing, packages = sys.argv[1].split(","), sys.argv[2].split(",")

    class Missing(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in missing:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Missing())
    for package in packages:
        root = importlib.import_module(package)
        for module in pkgutil.walk_packages(root.__path__, package + "."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    from mlmodel_cli import main
    sys.exit(main(sys.argv[3:]))
    """
)


def _run(missing: list[str], packages: list[str], *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PROGRAM, ",".join(missing), ",".join(packages), *command],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_operator_and_common_run_without_the_runtime_package():
    result = _run(
        ["mlmodel_runtime", "fastapi", "sklearn", "numpy"],
        ["mlmodel_operator", "mlmodel_spec", "mlmodel_store", "mlmodel_cli"],
        "render", "--model-uri", "https://models.example.com/m.joblib", "examples/sentiment/mlmodel.yaml",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "kind: Deployment" in result.stdout
    serve = _run(["mlmodel_runtime"], ["mlmodel_cli"], "serve", "--help")
    assert serve.returncode == 2
    assert "mlmodel serve: not installed here (mlmodel_runtime.cli is missing)" in serve.stderr
    assert "Traceback" not in serve.stderr


def test_the_runtime_and_common_run_without_the_operator_package():
    result = _run(
        ["mlmodel_operator", "kopf", "kubernetes_asyncio", "aiohttp"],
        ["mlmodel_runtime", "mlmodel_spec", "mlmodel_store", "mlmodel_cli"],
        "serve", "--help",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "FILE.yaml" in result.stdout
    render = _run(["mlmodel_operator"], ["mlmodel_cli"], "render", "--help")
    assert render.returncode == 2
    assert "not installed here (mlmodel_operator.render is missing)" in render.stderr
