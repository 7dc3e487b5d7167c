"""What the two images contain and how they run: user, size, labels, and each other's dependencies left out."""

from __future__ import annotations

import pytest
from container_tools import docker, inspect_image

pytestmark = pytest.mark.docker

# The targets are 400 MB (runtime) and 250 MB (operator) in all. The base is the user's
# choice (python:3.11-slim, or the ~111 MB debootstrap stand-in here), so what is asserted is what
# these Dockerfiles add on top of it: the targets less a 111 MB base.
RUNTIME_MAX_ADDED_BYTES = 289 * 10**6
OPERATOR_MAX_ADDED_BYTES = 139 * 10**6

def run_python(image: str, code: str) -> tuple[int, str]:
    result = docker("run", "--rm", "--read-only", "--entrypoint", "python", image, "-c", code, check=False)
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(params=["runtime", "operator"])
def image(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_image")


def test_image_runs_as_a_numeric_non_root_user(image: str) -> None:
    user = inspect_image(image)["Config"]["User"]
    uid, _, gid = user.partition(":")
    # Numeric, so the kubelet can enforce runAsNonRoot without a passwd lookup.
    assert uid.isdigit() and int(uid) != 0, user
    assert gid.isdigit() and int(gid) != 0, user
    identity = docker("run", "--rm", "--entrypoint", "id", image).stdout
    assert f"uid={uid}(" in identity and f"gid={gid}(" in identity


def test_image_has_oci_labels_and_the_mlmodel_entrypoint(image: str) -> None:
    config = inspect_image(image)["Config"]
    labels = config["Labels"]
    for key in ("title", "version", "revision", "licenses", "source", "base.name"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert config["Entrypoint"] == ["mlmodel"]


def test_image_ships_no_compiler_no_pip_and_precompiled_modules(image: str) -> None:
    tools = docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                   "for t in gcc cc g++ make strip; do command -v $t; done; exit 0").stdout
    assert tools.strip() == ""
    code, output = run_python(image, "import pip")
    assert code != 0 and "No module named 'pip'" in output
    # Read-only root: every module of the project must already be compiled in the image.
    missing = docker("run", "--rm", "--entrypoint", "python", image, "-c", (
        "import pathlib, importlib, importlib.util;"
        "names = ['mlmodel_cli', 'mlmodel_store', 'mlmodel_runtime', 'mlmodel_operator'];"
        "roots = [pathlib.Path(importlib.import_module(n).__file__).parent for n in names"
        " if importlib.util.find_spec(n)];"
        "assert len(roots) == 3, roots;"
        "print([str(p) for r in roots for p in r.rglob('*.py')"
        " if not pathlib.Path(importlib.util.cache_from_source(str(p))).exists()])"
    )).stdout.strip()
    assert missing == "[]"


def test_runtime_image_has_no_operator_dependencies(runtime_image: str) -> None:
    for module in ("kopf", "kubernetes", "aiohttp", "mlmodel_operator"):
        code, output = run_python(runtime_image, f"import {module}")
        assert code != 0 and f"No module named '{module}'" in output, output
    code, output = run_python(runtime_image, "import sklearn, fastapi, uvicorn, numpy; print('ok')")
    assert code == 0 and output.strip() == "ok", output


def test_operator_image_has_no_scikit_learn(operator_image: str) -> None:
    for module in ("sklearn", "scipy", "numpy", "fastapi", "mlmodel_runtime"):
        code, output = run_python(operator_image, f"import {module}")
        assert code != 0 and f"No module named '{module}'" in output, output
    code, output = run_python(operator_image, "import kopf, mlmodel_operator; print('ok')")
    assert code == 0 and output.strip() == "ok", output


def test_image_sizes_meet_the_targets(runtime_image: str, operator_image: str, base_image: str) -> None:
    base_size = inspect_image(base_image)["Size"]
    runtime_added = inspect_image(runtime_image)["Size"] - base_size
    operator_added = inspect_image(operator_image)["Size"] - base_size
    assert runtime_added < RUNTIME_MAX_ADDED_BYTES, f"runtime layers {runtime_added / 1e6:.0f} MB"
    assert operator_added < OPERATOR_MAX_ADDED_BYTES, f"operator layers {operator_added / 1e6:.0f} MB"

def test_cli_starts_on_a_read_only_root(image: str) -> None:
    result = docker("run", "--rm", "--read-only", image, "--help", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for command in ("serve", "operator"):
        assert command in result.stdout
