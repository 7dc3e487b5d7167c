"""The real `mlmodel operator` process, run against the local cluster with its own ServiceAccount.

Its credentials are a TokenRequest token of the install's `mlmodel-operator` ServiceAccount, so
the API server's RBAC authorizer enforces operator/deploy/rbac.yaml on every request it makes.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.cluster import (
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    Cluster,
)
from support.ports import free_port, wait_until

OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
TEST_RUNTIME_IMAGE = "registry.example.com/mlmodel/runtime:test"


def operator_command() -> list[str]:
    return [str(Path(sys.executable).with_name("mlmodel")), "operator"]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def audit_time(event: dict[str, Any]) -> datetime.datetime:
    return datetime.datetime.fromisoformat(event["requestReceivedTimestamp"])


class OperatorProcess:
    def __init__(
        self,
        process: subprocess.Popen[bytes],
        log_path: Path,
        metrics_port: int,
        started: datetime.datetime,
        user: str = OPERATOR_USER,
    ) -> None:
        self.process, self.log_path, self.metrics_port = process, log_path, metrics_port
        self.started, self.user = started, user

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def operator_requests(
    cluster: Cluster, since: datetime.datetime | None = None, user: str = OPERATOR_USER
) -> list[dict[str, Any]]:
    """The audit events of the operator's requests (since a time, if given)."""
    return [
        event
        for event in cluster.audit_events(user)
        if since is None or audit_time(event) >= since
    ]


def denied(events: list[dict[str, Any]]) -> list[str]:
    return [
        f"{e['verb']} {e['requestURI']}"
        for e in events
        if (e.get("responseStatus") or {}).get("code") == 403
    ]


@pytest.fixture()
def run_operator(
    installed_cluster: Cluster, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start `mlmodel operator` with the install's ServiceAccount token; stopped after the test.

    The test fails if the API server denied the operator any request (RBAC too narrow).
    """
    started: list[OperatorProcess] = []
    cluster = installed_cluster

    def start(
        *args: str,
        namespaces: list[str] | None = None,
        resync: float = 2.0,
        kubeconfig: Path | None = None,
        user: str = OPERATOR_USER,
        wait: bool = True,
        **env: str,
    ) -> OperatorProcess:
        """`args` are passed to `mlmodel operator` (default: `--standalone`); `namespaces`
        (default: every namespace) become `-n` flags; `user` is who `kubeconfig` logs in as."""
        if kubeconfig is None:
            token = cluster.token(OPERATOR_SERVICE_ACCOUNT, OPERATOR_NAMESPACE)
            kubeconfig = cluster.kubeconfig_for_token(tmp_path / f"operator-{uuid.uuid4().hex[:6]}.kubeconfig", token)
        metrics_port = free_port()
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("MLMODEL_", "KUBERNETES_", "KOPF_"))
        }
        environment.update(
            KUBECONFIG=str(kubeconfig),
            MLMODEL_OPERATOR_RESYNC_INTERVAL_SECONDS=str(resync),
            MLMODEL_OPERATOR_CRD_CHECK_INTERVAL_SECONDS="0",
            MLMODEL_OPERATOR_METRICS_PORT=str(metrics_port),
            MLMODEL_OPERATOR_LOG_FORMAT="text",
            MLMODEL_OPERATOR_RUNTIME_IMAGE=TEST_RUNTIME_IMAGE,
            HOME=str(tmp_path / "home"),
            PYTHONUNBUFFERED="1",
        )
        environment.update(env)
        scope = [f"--namespace={ns}" for ns in namespaces] if namespaces else ["--all-namespaces"]
        log_path = tmp_path / f"operator-{len(started)}.log"
        begun = utc_now() - datetime.timedelta(seconds=1)
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                [*operator_command(), *scope, *(args or ("--standalone",)), "--verbose"],
                env=environment,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        operator = OperatorProcess(process, log_path, metrics_port, begun, user)
        started.append(operator)

        def watching() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the operator exited early:\n{operator.log()}")
            watched = {
                (e.get("objectRef") or {}).get("resource")
                for e in operator_requests(cluster, begun, user)
                if e["verb"] == "watch"
            }
            return {"mlmodels", "deployments"} <= watched

        if wait:
            wait_until(watching, timeout=60, what="the operator to watch mlmodels and deployments")
        return operator

    yield start

    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for operator in started:
        code = operator.stop()
        if failed:
            sys.stderr.write(f"--- operator log (exit {code}) ---\n{operator.log()[-20000:]}\n")
    for operator in started:
        refused = denied(operator_requests(cluster, operator.started, operator.user))
        assert not refused, f"the API server denied the operator: {refused}"


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each test's call report on its item, so fixtures can print logs for failures."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The RBAC proof runs last, so the audit log holds the requests of every other test."""
    last = [item for item in items if item.nodeid.startswith("tests/controlplane/test_rbac.py")]
    items[:] = [item for item in items if item not in last] + last
