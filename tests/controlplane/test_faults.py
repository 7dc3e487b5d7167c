"""API faults the real server will not make on cue, injected by a proxy in front of it; an
operator killed mid-reconcile; two operators under kopf peering."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cluster import OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, Cluster
from support.faultproxy import Fault, FaultProxy, running_proxy
from support.operator import WRITE_VERBS, operator_requests, utc_now
from support.ports import wait_until

from controlplane.models import condition, mlmodel

pytestmark = pytest.mark.cluster
CHILDREN = ("deployment", "service", "poddisruptionbudget")


@pytest.fixture()
def proxy(installed_cluster: Cluster) -> Iterator[FaultProxy]:
    yield from running_proxy(installed_cluster.server, installed_cluster.ca_pem())


def proxied_kubeconfig(cluster: Cluster, proxy: FaultProxy, tmp_path: Path) -> Path:
    token = cluster.token(OPERATOR_SERVICE_ACCOUNT, OPERATOR_NAMESPACE)
    return cluster.kubeconfig_for_token(tmp_path / "proxied.kubeconfig", token, server=proxy.url)


def converged(cluster: Cluster, namespace: str, replicas: int = 2, timeout: float = 60) -> dict:
    return wait_until(
        lambda: (m := cluster.get("mlmodel", "sentiment", namespace))
        and condition(m, "Ready").get("status") == "True"
        and (m.get("status") or {}).get("replicaSummary") == f"{replicas}/{replicas}"
        and all(cluster.get(kind, "sentiment", namespace) for kind in CHILDREN)
        and m,
        timeout=timeout,
        what="children made and the model Ready",
    )


def one_of_each(cluster: Cluster, namespace: str) -> bool:
    return all(
        len(cluster.list(kind, namespace, "app.kubernetes.io/instance=sentiment")) == 1
        for kind in ("deployments", "services", "poddisruptionbudgets")
    )


def test_a_flaky_api_server_is_survived_without_duplicates(
    installed_cluster: Cluster, run_operator, namespace: str, proxy: FaultProxy, tmp_path: Path
):
    ns = f"/namespaces/{namespace}/"
    faults = [
        # Writes refused by server trouble; lost races on the status precondition.
        proxy.inject(Fault("PATCH", ns + r"deployments/sentiment\?", status=500, times=2)),
        proxy.inject(Fault("PATCH", ns + r"mlmodels/sentiment/status", status=409, times=2)),
        # Throttled with Retry-After, and answers slower than the client's timeout (1 s): the
        # slow apply is carried out by the server all the same.
        proxy.inject(Fault("PATCH", ns + r"services/sentiment\?", status=429, retry_after=2, times=1)),
        proxy.inject(Fault("PATCH", ns + r"poddisruptionbudgets/sentiment\?", delay=1.5, times=2)),
        # A dropped connection, and kopf's own annotation patches failing.
        proxy.inject(Fault("PATCH", ns + r"horizontalpodautoscalers", drop=True, times=1)),
        proxy.inject(Fault("PATCH", ns + r"mlmodels/sentiment$", status=500, times=1)),
    ]
    operator = run_operator(
        namespaces=[namespace],
        resync="1",
        kubeconfig=proxied_kubeconfig(installed_cluster, proxy, tmp_path),
        MLMODEL_OPERATOR_API_TIMEOUT_SECONDS="1",
    )
    pid = operator.process.pid
    installed_cluster.apply(mlmodel("sentiment", namespace, replicas=2))
    converged(installed_cluster, namespace)
    hit = [f.hits for f in faults]
    assert hit[:4] == [2, 2, 1, 2] and hit[5] == 1, hit  # (no HPA here: the drop never fired)
    assert one_of_each(installed_cluster, namespace)
    assert operator.process.poll() is None and operator.process.pid == pid, "the operator restarted"
    # Throttled: the Service was asked again only after the Retry-After it was given.
    service = proxy.seen("PATCH", ns + r"services/sentiment\?")
    first = next(i for i, (code, _) in enumerate(service) if code == 429)
    assert service[first + 1][1] - service[first][1] >= 1.9

    # Dropped connections and server errors for a while: drift repair works once they stop.
    proxy.inject(Fault("GET", r"/mlmodels(\?|$)", drop=True, times=2))
    storm = proxy.inject(Fault("PATCH", ns + r"services/sentiment\?", status=500, times=3))
    since = utc_now()
    installed_cluster.kubectl("delete", "service", "sentiment", "-n", namespace)
    wait_until(lambda: installed_cluster.get("service", "sentiment", namespace), timeout=30, what="service repaired")
    assert storm.hits == 3
    assert one_of_each(installed_cluster, namespace)
    assert operator.process.poll() is None and operator.process.pid == pid
    # Every fault was an expected, handled error: no traceback of a crash or a bug.
    assert "Traceback (most recent call last)" not in operator.log()
    assert len(operator_requests(installed_cluster, since)) < 200, "retried in a tight loop"


def test_a_burst_of_models_holds_no_more_write_connections_than_configured(
    installed_cluster: Cluster, run_operator, namespace: str, proxy: FaultProxy, tmp_path: Path
):
    # Slow answers to the operator's applies: with an unbounded pool, a burst of models would
    # hold one connection (about 0.3 MB with TLS) per apply in flight.
    children = rf"/namespaces/{namespace}/(deployments|services|poddisruptionbudgets)/"
    proxy.inject(Fault("PATCH", children, delay=0.3))
    in_flight = proxy.count_in_flight("PATCH", children)
    run_operator(
        namespaces=[namespace],
        kubeconfig=proxied_kubeconfig(installed_cluster, proxy, tmp_path),
        MLMODEL_OPERATOR_MAX_API_CONNECTIONS="2",
    )
    names = [f"burst-{index}" for index in range(12)]
    for name in names:
        installed_cluster.apply(mlmodel(name, namespace))
    wait_until(
        lambda: all(
            condition(installed_cluster.get("mlmodel", name, namespace), "Ready").get("status") == "True"
            for name in names
        ),
        timeout=120,
        what="every model of the burst Ready",
    )
    assert in_flight.peak == 2, in_flight  # used to the bound, never past it


def test_killed_mid_reconcile_the_restarted_operator_resumes(
    installed_cluster: Cluster, run_operator, namespace: str, proxy: FaultProxy, tmp_path: Path
):
    kubeconfig = proxied_kubeconfig(installed_cluster, proxy, tmp_path)
    # The Deployment's apply reaches the server, but its answer is held until the operator dies.
    held = proxy.inject(Fault("PATCH", rf"/namespaces/{namespace}/deployments/sentiment\?", delay=30, times=1))
    operator = run_operator(namespaces=[namespace], resync="1", kubeconfig=kubeconfig)
    installed_cluster.apply(mlmodel("sentiment", namespace, replicas=2))
    wait_until(lambda: held.hits == 1, what="the held apply")
    assert installed_cluster.get("poddisruptionbudget", "sentiment", namespace) is None
    operator.process.send_signal(signal.SIGKILL)
    operator.process.wait(timeout=10)

    run_operator(namespaces=[namespace], resync="1", kubeconfig=kubeconfig)
    converged(installed_cluster, namespace)
    assert one_of_each(installed_cluster, namespace)


def acting_writes(cluster: Cluster, since, user: str) -> list[str]:
    """The writes of `user` that act on the cluster: all but kopf's peering keep-alives."""
    return [
        f"{e['verb']} {e['requestURI']}"
        for e in operator_requests(cluster, since, user)
        if e["verb"] in WRITE_VERBS and (e.get("objectRef") or {}).get("resource") != "clusterkopfpeerings"
    ]


def service_account_kubeconfig(cluster: Cluster, name: str, tmp_path: Path) -> tuple[Path, str]:
    """A kubeconfig for a ServiceAccount `name` bound to the operator's ClusterRole."""
    cluster.apply(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "mlmodel-operator"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": OPERATOR_NAMESPACE}],
        },
    )
    token = cluster.token(name, OPERATOR_NAMESPACE)
    return (
        cluster.kubeconfig_for_token(tmp_path / f"{name}.kubeconfig", token),
        f"system:serviceaccount:{OPERATOR_NAMESPACE}:{name}",
    )


def test_two_operators_with_peering_only_one_acts(
    installed_cluster: Cluster, run_operator, namespace: str, tmp_path: Path
):
    peering = "--peering=mlmodel-operator"
    lifetime = {"MLMODEL_OPERATOR_PEERING_LIFETIME_SECONDS": "3"}
    config_a, user_a = service_account_kubeconfig(installed_cluster, "operator-a", tmp_path)
    config_b, user_b = service_account_kubeconfig(installed_cluster, "operator-b", tmp_path)
    # B runs alone first: it acts.
    b = run_operator(peering, "--priority=10", kubeconfig=config_b, user=user_b, resync="0.3", POD_ID="operator-b", **lifetime)
    installed_cluster.apply(mlmodel("sentiment", namespace, replicas=2))
    converged(installed_cluster, namespace)
    # A, of higher priority, arrives: B pauses, kopf's handlers and B's resync loop alike.
    a = run_operator(peering, "--priority=100", kubeconfig=config_a, user=user_a, resync="1", POD_ID="operator-a", **lifetime)
    wait_until(lambda: "Pausing operations" in b.log(), timeout=20, what="kopf pausing B")
    wait_until(lambda: "resync paused" in b.log(), timeout=10, what="B's resync loop pausing")
    time.sleep(1.0)  # whatever B had in flight when it paused is over
    since = utc_now()
    # A change (handled by kopf) and a drift (repaired by the resync loop only): A does both.
    installed_cluster.kubectl("patch", "mlmodel", "sentiment", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": {"replicas": 3}}))
    installed_cluster.kubectl("delete", "service", "sentiment", "-n", namespace)
    converged(installed_cluster, namespace, replicas=3)
    time.sleep(1.5)  # several of B's resync periods
    assert acting_writes(installed_cluster, since, user_b) == []
    assert acting_writes(installed_cluster, since, user_a)
    # A's node dies without a goodbye: once its keep-alive expires, B takes over.
    a.kill()
    wait_until(lambda: "resync resumed" in b.log(), timeout=30, what="B's resync loop resuming")
    since = utc_now()
    installed_cluster.kubectl("patch", "mlmodel", "sentiment", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": {"replicas": 4}}))
    converged(installed_cluster, namespace, replicas=4)
    assert acting_writes(installed_cluster, since, user_b)
    assert acting_writes(installed_cluster, since, user_a) == []
