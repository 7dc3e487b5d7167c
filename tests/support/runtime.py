"""What the runtime tests share besides fixtures: settings for a trained model, the app
in-process behind an httpx client, a real `mlmodel serve` process, and MLModel files."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from mlmodel_runtime.app import create_app
from mlmodel_runtime.dataplane import DataPlane
from mlmodel_runtime.settings import RuntimeSettings
from runtime_models import Artifact

from support.ports import free_port, wait_until
from support.processes import stop_process

# tests/runtime: a served process imports its test models (runtime_models) from there.
RUNTIME_TESTS = Path(__file__).resolve().parent.parent / "runtime"


@dataclass(frozen=True)
class Models:
    text: Artifact
    tabular: Artifact
    matrix: Artifact
    slow: Artifact


def settings_for(
    artifact: Artifact, cache_dir: Path, name: str = "model", **values: Any
) -> RuntimeSettings:
    return RuntimeSettings(
        model_name=name,
        model_uri=str(artifact.path),
        model_sha256=artifact.sha256,
        cache_dir=cache_dir,
        **values,
    )


@dataclass
class InProcess:
    client: httpx.AsyncClient
    dataplane: DataPlane
    log: io.StringIO
    app: Any = None


@contextlib.asynccontextmanager
async def running_app(
    settings: RuntimeSettings, *, dataplane: DataPlane | None = None, wait: bool = True
) -> AsyncIterator[InProcess]:
    """The app with its lifespan running, behind an httpx client; ``wait`` for the model to load."""
    log = io.StringIO()
    app = create_app(settings, dataplane, log_stream=log)
    plane: DataPlane = app.state.dataplane
    async with app.router.lifespan_context(app):
        if wait:
            await plane.wait_loaded()
            assert plane.ready, plane.readiness()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://runtime") as client:
            yield InProcess(client, plane, log, app)


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    grpc_port: int = 0

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
        """`wait_until`, with this server's log in the failure message."""
        try:
            return wait_until(predicate, timeout, what, every=0.05)
        except AssertionError as error:
            raise AssertionError(f"{error}:\n{self.logs()}") from None

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 60.0) -> None:
        self.wait_for(lambda: self.logs().count(text) >= count, f"{text!r} in the log", timeout)

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds until /v2/health/ready said 200."""
        return self._wait("/v2/health/ready", lambda response: response.status_code == 200, timeout)

    def wait_listening(self, timeout: float = 60.0) -> None:
        self._wait("/v2/health/live", lambda response: True, timeout)

    def _wait(self, path: str, answered: Callable[[httpx.Response], bool], timeout: float) -> float:
        """Seconds until GET `path` was `answered`; fails at once if the process exits."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.process.returncode}:\n{self.logs()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if answered(httpx.get(f"{self.url}{path}", timeout=2)):
                    return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"no answer from {path} after {timeout}s:\n{self.logs()}")


def launch_server(
    args: list[str], folder: Path, env: dict[str, str] | None = None
) -> ServerProcess:
    """`mlmodel serve ARGS` on free loopback ports (HTTP and gRPC), its cache and log in ``folder``."""
    port, grpc_port = free_port(), free_port()
    log_path = folder / f"server-{port}.log"
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("MLMODEL_")
    }
    environment.update(
        {
            "PYTHONPATH": os.pathsep.join([str(RUNTIME_TESTS), environment.get("PYTHONPATH", "")]),
            "MLMODEL_CACHE_DIR": str(folder / "cache"),
            "MLMODEL_HOST": "127.0.0.1",
            "MLMODEL_PORT": str(port),
            "MLMODEL_GRPC_PORT": str(grpc_port),
        }
    )
    environment.update(env or {})
    command = [sys.executable, "-m", "mlmodel_runtime.cli", "serve", *args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
    return ServerProcess(process, f"http://127.0.0.1:{port}", log_path, grpc_port)


def stop_server(server: ServerProcess, timeout: float = 10) -> None:
    stop_process(server.process, signal.SIGINT, timeout)


def write_mlmodel(
    folder: Path, name: str, artifact: Artifact, *, relative: bool = True, extra: str = ""
) -> Path:
    """An MLModel YAML beside a copy of the artifact, its uri relative to the YAML's folder."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / artifact.path.name
    target.write_bytes(artifact.path.read_bytes())
    uri = target.name if relative else str(target)
    path = folder / "mlmodel.yaml"
    path.write_text(
        f"""apiVersion: serving.mlmodel.io/v1alpha1
kind: MLModel
metadata:
  name: {name}
spec:
  model:
    uri: {uri}
    sha256: "{artifact.sha256}"
    format: sklearn
    version: "2.0.0"
{extra}"""
    )
    return path
