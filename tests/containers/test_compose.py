"""docker-compose.yml: the whole file is valid; the services buildable here really come up healthy.

Prometheus and Grafana need images from a registry, so they are checked by `config` (and
Prometheus's file by promtool) only; the runtime and the locally built PostgreSQL run for real.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from container_tools import compose_command, container_logs, run, wait_healthy
from support.ports import free_port

pytestmark = pytest.mark.docker


def compose(repo_root: Path, env: dict[str, str], *args: str, timeout: float = 300) -> str:
    return run(
        *compose_command(), "-f", str(repo_root / "docker-compose.yml"), *args,
        env=env, cwd=repo_root, timeout=timeout,
    ).stdout


def volume_parts(volume: str | dict) -> tuple[str, str, bool]:
    """(source, target, read-only) from Compose v1's short strings or v2's long form."""
    if isinstance(volume, dict):
        return volume["source"], volume["target"], bool(volume.get("read_only"))
    source, target, *mode = volume.split(":")
    return source, target, mode == ["ro"]


def test_compose_file_is_valid_and_wires_the_stack(repo_root: Path) -> None:
    env = {
        "BASE_IMAGE": "example.org/python:3.11-slim",
        "GO_IMAGE": "example.org/golang:1.26-bookworm",
        "DEBIAN_BASE_IMAGE": "example.org/debian:bookworm",
    }
    config = yaml.safe_load(compose(repo_root, env, "config"))
    services = config["services"]
    assert set(services) == {"runtime", "postgres", "prometheus", "grafana"}

    runtime = services["runtime"]
    assert runtime["build"]["args"]["BASE_IMAGE"] == env["BASE_IMAGE"]
    assert runtime["build"]["args"]["GO_IMAGE"] == env["GO_IMAGE"]
    assert services["postgres"]["build"]["args"]["BASE_IMAGE"] == env["DEBIAN_BASE_IMAGE"]
    assert runtime["read_only"] is True and "/var/cache/mlmodel" in runtime["tmpfs"]
    assert runtime["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The example's own MLModel YAML (which holds the sha256) configures the runtime.
    assert runtime["command"] == ["serve", "/models/mlmodel.yaml"]
    models = [volume_parts(v) for v in runtime["volumes"] if volume_parts(v)[1] == "/models"]
    assert models == [(str(repo_root / "examples" / "sentiment"), "/models", True)]
    assert runtime["environment"]["MLMODEL_DATABASE_URL"].startswith("postgresql://mlmodel:")
    for service in services.values():  # nothing published beyond loopback by default
        for port in service.get("ports", []):
            host_ip = port["host_ip"] if isinstance(port, dict) else port.split(":")[0]
            assert host_ip == "127.0.0.1", port

    # Every file the services mount exists in the repository.
    for name in ("prometheus", "grafana"):
        for source, _, read_only in map(volume_parts, services[name]["volumes"]):
            assert Path(source).exists() and read_only, source
    # Grafana provisions every dashboard in examples/monitoring (the observability work).
    assert list((repo_root / "examples" / "monitoring").glob("*.json")), "no dashboard JSON to provision"
    prometheus = yaml.safe_load((repo_root / "examples/compose/prometheus/prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["runtime:8080"]
    datasource = yaml.safe_load(
        (repo_root / "examples/compose/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and datasource["uid"] == "prometheus"


def test_prometheus_config_passes_promtool(repo_root: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run .ci/system-packages.sh (Debian package 'prometheus')"
    result = run(promtool, "check", "config", str(repo_root / "examples/compose/prometheus/prometheus.yml"))
    assert "SUCCESS" in result.stdout + result.stderr


@pytest.fixture
def compose_stack(
    repo_root: Path, runtime_image: str, postgres_image: str, base_image: str, unique_name: str
) -> Iterator[dict[str, str]]:
    env = {
        "COMPOSE_PROJECT_NAME": unique_name.replace("-", ""),
        "BASE_IMAGE": base_image,
        "DEBIAN_BASE_IMAGE": base_image,
        "RUNTIME_IMAGE": runtime_image,
        "POSTGRES_IMAGE": postgres_image,
        "RUNTIME_PORT": str(free_port()),
        "POSTGRES_PORT": str(free_port()),
    }
    try:
        started = time.monotonic()
        # The images were built by the fixtures: compose must not build (or pull) anything.
        compose(repo_root, env, "up", "-d", "--no-build", "runtime", "postgres")
        env["up_seconds"] = f"{time.monotonic() - started:.1f}"
        yield env
    finally:
        compose(repo_root, env, "down", "-v", "--remove-orphans", timeout=120)


def test_compose_up_runs_runtime_and_postgres_healthy(repo_root: Path, compose_stack: dict[str, str]) -> None:
    containers = {
        service: compose(repo_root, compose_stack, "ps", "-q", service).strip()
        for service in ("postgres", "runtime")
    }
    for container in containers.values():
        assert container
        wait_healthy(container, timeout=120)

    base_url = f"http://127.0.0.1:{compose_stack['RUNTIME_PORT']}"
    with httpx.Client(base_url=base_url, timeout=10) as client:
        answer = client.post("/v1/models/sentiment:predict", json={"instances": ["What a great, fun movie!"]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == ["positive"]

    # The runtime reached PostgreSQL over the compose network and recorded itself there (the
    # metadata writer is asynchronous: give it a few seconds).
    query = "select count(*) from information_schema.tables where table_schema = 'public'"
    tables = 0
    for _ in range(20):
        tables = int(run(
            "docker", "exec", containers["postgres"], "psql", "-U", "mlmodel", "-d", "mlmodel", "-tAc", query,
        ).stdout.strip())
        if tables:
            break
        time.sleep(0.5)
    assert tables > 0, container_logs(containers["runtime"])
