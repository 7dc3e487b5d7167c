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
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.cluster import (
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    Cluster,
)
from support.ports import free_port, wait_until
from support.processes import stop_process

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
        return stop_process(self.process, signal.SIGTERM, timeout)

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
    """The requests the authorizer refused. A 403 that the authorizer allowed came after it: an
    apply creating a custom resource whose CRD is being deleted (a test deletes the HTTPRoute CRD
    while the operator still reconciles) or writing into a namespace being deleted is refused by
    the API server, not by RBAC."""
    return [
        f"{e['verb']} {e['requestURI']}"
        for e in events
        if (e.get("responseStatus") or {}).get("code") == 403
        and (e.get("annotations") or {}).get("authorization.k8s.io/decision") != "allow"
    ]


def start_operator(
    cluster: Cluster,
    workdir: Path,
    *args: str,
    namespaces: Sequence[str] | None = None,
    kubeconfig: Path | None = None,
    user: str = OPERATOR_USER,
    log_path: Path | None = None,
    verbose: bool = True,
    wait: bool = True,
    **env: str | None,
) -> OperatorProcess:
    """`mlmodel operator ARGS` (default `--standalone`) as a process of its own: the one way the
    tests and the benchmarks run it.

    It logs in with a TokenRequest token of the install's ServiceAccount unless `kubeconfig` is
    given (`user` is who that logs in as); `namespaces` (default: every namespace) become
    `--namespace` flags. Its environment is the caller's without any `MLMODEL_`, `KUBERNETES_`
    or `KOPF_` variable, plus a 2 s resync, no caching of the ServiceMonitor CRD check, text logs
    and a free metrics port; `env` adds to or overrides those (None: the operator's default).
    With `wait`, returns once the API server has seen it watch MLModels and Deployments.
    """
    suffix = uuid.uuid4().hex[:6]
    if kubeconfig is None:
        token = cluster.token(OPERATOR_SERVICE_ACCOUNT, OPERATOR_NAMESPACE)
        kubeconfig = cluster.kubeconfig_for_token(workdir / f"operator-{suffix}.kubeconfig", token)
    log_path = log_path or workdir / f"operator-{suffix}.log"
    metrics_port = free_port()
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLMODEL_", "KUBERNETES_", "KOPF_"))
    }
    settings: dict[str, str | None] = {
        "KUBECONFIG": str(kubeconfig),
        "MLMODEL_OPERATOR_RESYNC_INTERVAL_SECONDS": "2",
        "MLMODEL_OPERATOR_CRD_CHECK_INTERVAL_SECONDS": "0",
        "MLMODEL_OPERATOR_METRICS_PORT": str(metrics_port),
        "MLMODEL_OPERATOR_LOG_FORMAT": "text",
        "HOME": str(workdir / "home"),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    environment.update({key: value for key, value in settings.items() if value is not None})
    scope = [f"--namespace={ns}" for ns in namespaces] if namespaces else ["--all-namespaces"]
    flags = [*scope, *(args or ("--standalone",)), *(["--verbose"] if verbose else [])]
    begun = utc_now() - datetime.timedelta(seconds=1)  # audit timestamps are in microseconds
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [*operator_command(), *flags], env=environment, stdout=log_file, stderr=subprocess.STDOUT
        )
    operator = OperatorProcess(process, log_path, metrics_port, begun, user)

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


@pytest.fixture()
def run_operator(
    installed_cluster: Cluster, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start `mlmodel operator` with the install's ServiceAccount token; stopped after the test.

    The test fails if the API server denied the operator any request (RBAC too narrow).
    """
    started: list[OperatorProcess] = []

    def start(*args: str, resync: float = 2.0, **options: Any) -> OperatorProcess:
        """`start_operator` on the session's cluster, runtime image TEST_RUNTIME_IMAGE."""
        options.setdefault("MLMODEL_OPERATOR_RUNTIME_IMAGE", TEST_RUNTIME_IMAGE)
        operator = start_operator(
            installed_cluster,
            tmp_path,
            *args,
            log_path=tmp_path / f"operator-{len(started)}.log",
            MLMODEL_OPERATOR_RESYNC_INTERVAL_SECONDS=str(resync),
            **options,
        )
        started.append(operator)
        return operator

    yield start

    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for operator in started:
        code = operator.stop()
        if failed:
            sys.stderr.write(f"--- operator log (exit {code}) ---\n{operator.log()[-20000:]}\n")
    for operator in started:
        refused = denied(operator_requests(installed_cluster, operator.started, operator.user))
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


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """The samples the operator's /metrics serves on `port`, by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def mlmodel_history(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`mlmodel history ...` as a user runs it: the console script in its own process."""
    script = Path(sys.executable).with_name("mlmodel")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLMODEL_")}
    environment.update(env or {})
    return subprocess.run(
        [str(script), "history", *args],
        capture_output=True, text=True, timeout=60, env=environment, check=False,
    )
