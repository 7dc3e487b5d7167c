"""Thin helpers over the `docker` and `docker-compose` command lines for the container tests.

The tests drive the real CLIs (what users and CI run), not a Python client: a failure here reads
like a failure a user would see.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

# The classic builder: Debian's docker.io has no buildx, and the Dockerfiles avoid BuildKit syntax.
BUILD_ENV = {"DOCKER_BUILDKIT": "0"}


class DockerError(AssertionError):
    """A docker command failed; the message carries its output so the test report says why."""


def run(
    *args: str,
    check: bool = True,
    timeout: float = 600,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(args),
        check=False,  # checked below, with the output in the message
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    if check and result.returncode != 0:
        raise DockerError(
            f"command failed ({result.returncode}): {' '.join(args)}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
        )
    return result


def docker(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return run("docker", *args, check=check, timeout=timeout)


def compose_command() -> list[str]:
    """`docker-compose` (Compose v1, Debian bookworm's package) or the `docker compose` plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if run("docker", "compose", "version", check=False).returncode == 0:
        return ["docker", "compose"]
    raise DockerError("neither docker-compose nor the docker compose plugin is installed")


def build_image(
    repo_root: Path, dockerfile: str, tag: str, build_args: dict[str, str], context: Path | None = None
) -> float:
    """Build one image with the classic builder; returns the seconds it took."""
    arguments = [arg for key, value in build_args.items() for arg in ("--build-arg", f"{key}={value}")]
    started = time.monotonic()
    run(
        "docker", "build", "-f", str(repo_root / dockerfile), "-t", tag, *arguments,
        str(context or repo_root),
        env=BUILD_ENV,
        timeout=1500,
    )
    return time.monotonic() - started


def inspect_image(tag: str) -> dict[str, Any]:
    return json.loads(docker("image", "inspect", tag).stdout)[0]


def container_state(container: str) -> dict[str, Any]:
    return json.loads(docker("inspect", "-f", "{{json .State}}", container).stdout)


def container_logs(container: str) -> str:
    result = docker("logs", "--tail", "200", container, check=False)
    return result.stdout + result.stderr


def wait_healthy(container: str, timeout: float = 90) -> None:
    """Wait for the image's HEALTHCHECK to report healthy; fail early if the container exits."""
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = container_state(container)
        if not state.get("Running"):
            raise DockerError(
                f"container {container} exited (code {state.get('ExitCode')}):\n{container_logs(container)}"
            )
        if (state.get("Health") or {}).get("Status") == "healthy":
            return
        time.sleep(0.5)
    raise DockerError(
        f"container {container} not healthy after {timeout}s: {state.get('Health')}\n"
        f"{container_logs(container)}"
    )


def published_port(container: str, container_port: int) -> int:
    """The loopback port Docker picked for `-p 127.0.0.1::PORT`."""
    mapping = docker("port", container, str(container_port)).stdout.split()[0]
    return int(mapping.rsplit(":", 1)[1])


def remove_container(container: str) -> None:
    docker("rm", "-f", "-v", container, check=False)
