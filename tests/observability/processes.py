"""Real processes for the observability tests: the runtime (`mlmodel serve`) and Prometheus."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml
from support.ports import free_port, wait_until
from support.processes import stop_process

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


class Process:
    """A child process whose output goes to a file, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, command: list[str], log_path: Path, env: dict[str, str], cwd: Path | None = None) -> None:
        self.name, self.log_path = name, log_path
        with open(log_path, "wb") as log_file:
            self.popen = subprocess.Popen(command, env=env, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()[-5000:]}")
        return True

    def stop(self) -> int:
        return stop_process(self.popen, signal.SIGTERM, 20)


def clean_environment(**extra: str) -> dict[str, str]:
    """This environment without anything that configures our programs, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLMODEL_", "KUBERNETES_", "KOPF_"))}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


class Runtime(Process):
    """`mlmodel serve MANIFEST --port N` on loopback, logging JSON lines to a file (gRPC on a
    free port of its own too: the default one may be another server's)."""

    def __init__(self, manifest: Path, workdir: Path, name: str = "runtime", **env: str) -> None:
        self.port = free_port()
        self.grpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model = yaml.safe_load(manifest.read_text())["metadata"]["name"]
        mlmodel = Path(sys.executable).with_name("mlmodel")
        environment = clean_environment(
            MLMODEL_HOST="127.0.0.1",
            MLMODEL_GRPC_PORT=str(self.grpc_port),
            MLMODEL_CACHE_DIR=str(workdir / f"{name}-cache"),
            MLMODEL_LOG_FORMAT="json",
            MLMODEL_LOG_LEVEL="info",
            **env,
        )
        command = [str(mlmodel), "serve", str(manifest), "--host", "127.0.0.1", "--port", str(self.port)]
        super().__init__(name, command, workdir / f"{name}.log", environment)

    def get(self, path: str) -> httpx.Response | None:
        try:
            return httpx.get(self.url + path, timeout=2)
        except httpx.TransportError:
            return None

    def wait_live(self, timeout: float = 60) -> None:
        wait_until(lambda: self.alive() and (r := self.get("/v2/health/live")) is not None and r.status_code == 200,
                   timeout, f"{self.name} to answer /v2/health/live")

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until(lambda: self.alive() and (r := self.get("/v2/health/ready")) is not None and r.status_code == 200,
                   timeout, f"{self.name} to be ready")

    def json_lines(self) -> list[str]:
        return [line for line in self.log().splitlines() if line.startswith("{")]


class Prometheus(Process):
    """Prometheus from Debian's package with a temporary config, TSDB and loopback port."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        command = [
            PROMETHEUS,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        super().__init__("prometheus", command, workdir / "prometheus.log", clean_environment(), cwd=workdir)

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        return self.api("query", query=promql)["result"]

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            self.alive()
            try:
                return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout, "prometheus to be ready")

    def targets_up(self) -> dict[str, str]:
        return {t["scrapeUrl"]: t["health"] for t in self.api("targets")["activeTargets"]}
