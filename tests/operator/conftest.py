"""Fixtures for the operator tests: the API emulator on a loopback port and the real operator process."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from emulator import ApiCall, ClusterEmulator

SHA256 = "3f" * 32
SERVICEMONITOR_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "plural": "servicemonitors",
            "singular": "servicemonitor",
            "kind": "ServiceMonitor",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll `predicate` (the emulator lives in this event loop, so yield to it) until truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def make_mlmodel(
    name: str = "sentiment", namespace: str = "default", **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"uri": "https://models.example.com/sentiment/model.joblib", "sha256": SHA256},
        "replicas": 2,
    }
    body.update(spec)
    return {
        "apiVersion": "serving.mlmodel.io/v1alpha1",
        "kind": "MLModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for item in ((obj or {}).get("status") or {}).get("conditions") or ():
        if item.get("type") == type_:
            return item
    return {}


@pytest.fixture()
def mlmodel_crd(repo_root: Path) -> dict[str, Any]:
    with open(repo_root / "crds" / "mlmodel.yaml", encoding="utf-8") as stream:
        return next(
            doc
            for doc in yaml.safe_load_all(stream)
            if doc and doc.get("kind") == "CustomResourceDefinition"
        )


@pytest.fixture(scope="session")
def session_requests() -> list[ApiCall]:
    """Every request an operator process made to any emulator during this session (for RBAC)."""
    return []


@pytest.fixture()
async def cluster(
    mlmodel_crd: dict[str, Any], session_requests: list[ApiCall]
) -> AsyncIterator[ClusterEmulator]:
    async with ClusterEmulator() as emulator, kmock.Server(emulator):
        emulator.install_crd(mlmodel_crd)
        try:
            yield emulator
        finally:
            session_requests.extend(emulator.operator_calls())


def write_kubeconfig(path: Path, cluster: ClusterEmulator, token: str) -> Path:
    server = cluster.servers[0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "emulator",
                        "cluster": {"server": f"http://{server.host}:{server.port}"},
                    }
                ],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [
                    {"name": "emulator", "context": {"cluster": "emulator", "user": "operator"}}
                ],
                "current-context": "emulator",
            }
        )
    )
    return path


@pytest.fixture()
def kubeconfig(tmp_path: Path, cluster: ClusterEmulator) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", cluster, "operator-test-token")


def operator_command() -> list[str]:
    """`mlmodel operator` through the console script once the CLI exists, else `python -m`."""
    script = Path(sys.executable).with_name("mlmodel")
    if script.exists() and importlib.util.find_spec("mlmodel_runtime.cli") is not None:
        return [str(script), "operator"]
    return [sys.executable, "-m", "mlmodel_operator"]


def spawn(
    command: list[str], environment: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(command, env=environment, stdout=log_file, stderr=subprocess.STDOUT)


class OperatorProcess:
    def __init__(self, process: subprocess.Popen[bytes], log_path: Path, metrics_port: int) -> None:
        self.process, self.log_path, self.metrics_port = process, log_path, metrics_port

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def stop(self) -> int:
        """SIGTERM, then SIGKILL after 15 s. Waits without blocking the event loop: the emulator
        runs in it and must answer what the operator says on its way out (peering goodbye)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            while self.process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture()
async def start_operator(
    cluster: ClusterEmulator, kubeconfig: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Any]]:
    """Start `mlmodel operator --all-namespaces --standalone` against the emulator; await the result."""
    started: list[OperatorProcess] = []

    async def start(
        resync: float = 1.0,
        *,
        args: list[str] | None = None,
        wait: bool = True,
        token: str | None = None,
        **env: str,
    ) -> OperatorProcess:
        """`args` replace `--standalone` (e.g. `--peering=NAME`); `wait=False` returns at once;
        `token` gives the process its own credentials (its requests then carry that token)."""
        metrics_port = free_port()
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("MLMODEL_", "KUBERNETES_", "KOPF_"))
        }
        config = kubeconfig
        if token is not None:
            config = write_kubeconfig(tmp_path / f"kubeconfig-{token}", cluster, token)
        environment.update(
            KUBECONFIG=str(config),
            MLMODEL_OPERATOR_RESYNC_INTERVAL_SECONDS=str(resync),
            MLMODEL_OPERATOR_CRD_CHECK_INTERVAL_SECONDS="0",
            MLMODEL_OPERATOR_METRICS_PORT=str(metrics_port),
            MLMODEL_OPERATOR_LOG_FORMAT="text",
            MLMODEL_OPERATOR_RUNTIME_IMAGE="registry.example.com/mlmodel/runtime:test",
            # The metadata store's default SQLite file (~/.cache/mlmodel) stays with the test.
            HOME=str(tmp_path / "home"),
            PYTHONUNBUFFERED="1",
        )
        environment.update(env)
        log_path = tmp_path / f"operator-{len(started)}.log"
        process = spawn(
            [*operator_command(), "--all-namespaces", *(args or ["--standalone"]), "--verbose"],
            environment,
            log_path,
        )
        operator = OperatorProcess(process, log_path, metrics_port)
        started.append(operator)

        def watching() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the operator exited early:\n{operator.log()}")
            watched = {c.resource for c in cluster.operator_calls() if c.verb == "watch"}
            return {"mlmodels", "deployments"} <= watched

        if wait:
            await wait_for(
                watching, timeout=30, what="the operator to watch mlmodels and deployments"
            )
        return operator

    yield start

    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for operator in started:
        code = await operator.stop()
        if failed:
            sys.stderr.write(f"--- operator log (exit {code}) ---\n{operator.log()[-20000:]}\n")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The RBAC proof runs last, so it sees the requests of every other operator test."""
    last = [item for item in items if item.module.__name__ == "test_operator_rbac"]
    items[:] = [item for item in items if item not in last] + last
