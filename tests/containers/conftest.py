"""Session fixtures for the container tests: the Docker engine, the local base image, both images.

The Dockerfiles are built unchanged, with only `--build-arg BASE_IMAGE=<local base>` (and the
runtime's `GO_IMAGE=<local Go image>`) because no registry is reachable here. Build times and image sizes are printed in the terminal summary.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from container_tools import build_image, inspect_image, run

LOCAL_BASE_PREFIX = "mlmodel-local/"
BASE_IMAGE = os.environ.get("MLMODEL_TEST_BASE_IMAGE", f"{LOCAL_BASE_PREFIX}python:3.11-slim-bookworm")
GO_IMAGE = os.environ.get("MLMODEL_TEST_GO_IMAGE", f"{LOCAL_BASE_PREFIX}golang:1.26-bookworm")
RUNTIME_TAG = "mlmodel-runtime:test"
OPERATOR_TAG = "mlmodel-operator:test"
POSTGRES_TAG = "mlmodel-postgres:test"

# What the terminal summary reports: step name -> seconds, image tag -> bytes.
TIMINGS: dict[str, float] = {}
SIZES: dict[str, int] = {}


def pytest_terminal_summary(terminalreporter) -> None:
    if not TIMINGS and not SIZES:
        return
    terminalreporter.section("container images")
    for step, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{step:<44} {seconds:7.1f} s")
    for tag, size in SIZES.items():
        terminalreporter.write_line(f"{tag:<44} {size / 1e6:7.1f} MB")


def timed_script(repo_root: Path, name: str, *args: str) -> None:
    started = time.monotonic()
    run("bash", str(repo_root / ".ci" / name), *args, timeout=1200)
    TIMINGS[name] = time.monotonic() - started


@pytest.fixture(scope="session")
def docker_engine(repo_root: Path) -> None:
    """A running dockerd (started in the background by .ci/start-docker.sh when none answers)."""
    timed_script(repo_root, "start-docker.sh")


@pytest.fixture(scope="session")
def base_image(repo_root: Path, docker_engine: None) -> str:
    """The local stand-in for python:3.11-slim (debootstrap + docker import; reused when present),
    or, where a registry is reachable, the real image named by MLMODEL_TEST_BASE_IMAGE."""
    if BASE_IMAGE.startswith(LOCAL_BASE_PREFIX):
        timed_script(repo_root, "build-base-image.sh", BASE_IMAGE)
    elif run("docker", "image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        run("docker", "pull", "--quiet", BASE_IMAGE, timeout=600)
    SIZES[BASE_IMAGE] = inspect_image(BASE_IMAGE)["Size"]
    return BASE_IMAGE


def built_image(
    repo_root: Path, dockerfile: str, tag: str, base: str, context: Path | None = None, **args: str
) -> str:
    TIMINGS[f"docker build {tag}"] = build_image(
        repo_root, dockerfile, tag, {"BASE_IMAGE": base, **args}, context=context
    )
    SIZES[tag] = inspect_image(tag)["Size"]
    return tag


@pytest.fixture(scope="session")
def go_image(repo_root: Path, base_image: str) -> str:
    """The local stand-in for golang:1.26-bookworm (the base image and the host's Go), or the real
    image named by MLMODEL_TEST_GO_IMAGE."""
    if GO_IMAGE.startswith(LOCAL_BASE_PREFIX):
        timed_script(repo_root, "build-go-image.sh", GO_IMAGE)
    return GO_IMAGE


@pytest.fixture(scope="session")
def runtime_image(repo_root: Path, base_image: str, go_image: str) -> str:
    return built_image(repo_root, "Dockerfile.runtime", RUNTIME_TAG, base_image, GO_IMAGE=go_image)


@pytest.fixture(scope="session")
def operator_image(repo_root: Path, base_image: str) -> str:
    return built_image(repo_root, "Dockerfile.operator", OPERATOR_TAG, base_image)


@pytest.fixture(scope="session")
def postgres_image(repo_root: Path, base_image: str) -> str:
    context = repo_root / "examples" / "compose" / "postgres"
    return built_image(repo_root, str(context / "Dockerfile"), POSTGRES_TAG, base_image, context)


@pytest.fixture(scope="session")
def sentiment_sha256(repo_root: Path) -> str:
    return (repo_root / "examples" / "sentiment" / "model.joblib.sha256").read_text().split()[0]


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A container/project name no parallel run shares."""
    yield f"mlmodel-test-{os.getpid()}-{abs(hash(request.node.nodeid)) % 10**8}"

