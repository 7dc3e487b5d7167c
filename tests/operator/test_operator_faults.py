"""Faults survived: a misbehaving API server, an operator killed mid-reconcile, two operators."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import yaml
from conftest import condition, make_mlmodel, wait_for
from emulator import ApiCall, ClusterEmulator

NS = "default"
MLMODEL = "serving.mlmodel.io/v1alpha1/mlmodels"
DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
PDBS = "policy/v1/poddisruptionbudgets"
CHILD_PATHS = (DEPLOYMENTS, SERVICES, PDBS)


def ours(call: ApiCall) -> bool:
    """Requests of the operator's own client (not kopf's)."""
    return call.user_agent.startswith("mlmodel-operator/")


def one_of_each(cluster: ClusterEmulator) -> bool:
    return all(len(cluster.list_objects(path, NS)[0]) == 1 for path in CHILD_PATHS)


async def converged(cluster: ClusterEmulator, *, replicas: int = 2, timeout: float = 30) -> dict:
    return await wait_for(
        lambda: (
            (m := cluster.get(MLMODEL, NS, "sentiment"))
            and all(cluster.get(path, NS, "sentiment") for path in CHILD_PATHS)
            and cluster.get(DEPLOYMENTS, NS, "sentiment")["spec"]["replicas"] == replicas
            and (m.get("status") or {}).get("replicaSummary") == f"0/{replicas}"
            and condition(m, "Progressing").get("status") == "True"
            and m
        ),
        timeout=timeout,
        what="children and status converged",
    )


async def test_a_flaky_api_server_is_survived_without_duplicates(cluster, start_operator):
    operator = await start_operator(resync=1, MLMODEL_OPERATOR_API_TIMEOUT_SECONDS="1")
    pid = operator.process.pid
    faults = [
        # Writes: server errors, a create answered "already exists" for an object that is not
        # there, lost races on the status precondition.
        cluster.fail(lambda c: c.verb == "create" and c.resource == "deployments", 500, times=2),
        cluster.fail(lambda c: c.verb == "create" and c.resource == "services", 409, times=1),
        cluster.fail(lambda c: c.verb == "patch" and c.subresource == "status", 409, times=2),
        # Reads: throttling with Retry-After, and answers slower than the client's timeout.
        cluster.fail(
            lambda c: c.verb == "get" and c.resource == "services" and ours(c),
            429,
            times=2,
            retry_after=2,
        ),
        cluster.fail(
            lambda c: c.verb == "get" and c.resource == "poddisruptionbudgets" and ours(c),
            504,
            times=2,
            delay=1.5,
        ),
        # A write that times out on the client but was carried out by the server.
        cluster.fail(
            lambda c: c.verb == "create" and c.resource == "poddisruptionbudgets",
            0,
            times=1,
            delay=1.5,
        ),
        # kopf's own requests too: its annotation patches.
        cluster.fail(
            lambda c: c.verb == "patch" and c.resource == "mlmodels" and not c.subresource,
            500,
            times=1,
        ),
    ]
    cluster.create(make_mlmodel())
    await converged(cluster)
    assert [fault.hits for fault in faults] == [fault.times for fault in faults]
    assert one_of_each(cluster)
    assert operator.process.poll() is None and operator.process.pid == pid, "the operator restarted"

    # Throttled: the next read of the Service came only after the Retry-After it was given.
    service_reads = [
        c
        for c in cluster.operator_calls()
        if ours(c) and c.verb == "get" and c.resource == "services"
    ]
    first_429 = next(i for i, c in enumerate(service_reads) if c.code == 429)
    assert service_reads[first_429 + 1].at - service_reads[first_429].at >= 1.9
    # Backed off, not hammered: a handful of deployment creates in all.
    creates = [
        c for c in cluster.operator_calls() if c.verb == "create" and c.resource == "deployments"
    ]
    assert [c.code for c in creates] == [500, 500, 201]

    # Faults for a while during normal running: drift repair keeps working once they stop.
    since = len(cluster.calls)
    storm = cluster.fail(lambda c: ours(c) and c.verb in ("get", "list"), 500, times=6)
    cluster.delete(SERVICES, NS, "sentiment")
    await wait_for(
        lambda: cluster.get(SERVICES, NS, "sentiment"), timeout=20, what="service repaired"
    )
    assert storm.hits == 6
    assert one_of_each(cluster)
    assert operator.process.poll() is None and operator.process.pid == pid
    # Every fault was an expected, handled error: no traceback of a crash or a bug.
    assert "Traceback (most recent call last)" not in operator.log()
    assert len(cluster.operator_calls(since)) < 200, "retried in a tight loop"


async def test_killed_mid_reconcile_the_restarted_operator_resumes(cluster, start_operator):
    operator = await start_operator(resync=1)
    # The Deployment is created, but the answer never reaches the operator: it is killed first.
    held = cluster.fail(
        lambda c: c.verb == "create" and c.resource == "deployments", 0, times=1, delay=4
    )
    cluster.create(make_mlmodel())
    await wait_for(
        lambda: held.hits == 1 and cluster.get(DEPLOYMENTS, NS, "sentiment"), what="the held create"
    )
    assert cluster.get(PDBS, NS, "sentiment") is None  # the pass stopped half-way
    operator.process.send_signal(signal.SIGKILL)
    operator.process.wait(timeout=10)

    since = len(cluster.calls)
    restarted = await start_operator(resync=1)
    await converged(cluster)
    assert one_of_each(cluster)
    # It found the Deployment there and did not create another.
    creates = [
        c
        for c in cluster.operator_calls(since)
        if c.verb == "create" and c.resource == "deployments"
    ]
    assert all(c.code == 409 for c in creates)
    assert restarted.process.poll() is None


def install_peering(cluster: ClusterEmulator, repo_root: Path) -> None:
    with open(repo_root / "operator" / "deploy" / "peering.yaml", encoding="utf-8") as stream:
        for doc in yaml.safe_load_all(stream):
            if doc and doc["kind"] == "CustomResourceDefinition":
                cluster.install_crd(doc)
            elif doc:
                cluster.create(doc)


def acting_writes(cluster: ClusterEmulator, since: int) -> list[ApiCall]:
    """Writes that act on the cluster: everything but the peering keep-alives."""
    return [c for c in cluster.writes(since) if c.resource != "clusterkopfpeerings"]


async def test_two_operators_with_peering_only_one_acts(cluster, start_operator, repo_root):
    install_peering(cluster, repo_root)
    peering = ["--peering=mlmodel-operator"]
    # B runs alone first: it acts, and its resync loop runs.
    lifetime = {"MLMODEL_OPERATOR_PEERING_LIFETIME_SECONDS": "3"}
    b = await start_operator(
        resync=0.3,
        args=[*peering, "--priority=10"],
        token="operator-b",
        POD_ID="operator-b",
        **lifetime,
    )
    cluster.create(make_mlmodel())
    await converged(cluster)
    assert {c.user for c in acting_writes(cluster, 0)} == {"operator-b"}

    # A, of higher priority, arrives: B pauses, kopf's handlers and B's resync loop alike.
    a = await start_operator(
        resync=1.0,
        args=[*peering, "--priority=100"],
        token="operator-a",
        POD_ID="operator-a",
        wait=False,
        **lifetime,
    )
    await wait_for(lambda: "Pausing operations" in b.log(), timeout=20, what="kopf pausing B")
    await wait_for(lambda: "resync paused" in b.log(), timeout=10, what="B's resync loop pausing")
    await wait_for(
        lambda: any(
            c.user == "operator-a" and c.verb == "watch" and c.resource == "mlmodels"
            for c in cluster.calls
        ),
        timeout=20,
        what="A watching",
    )
    await asyncio.sleep(1.0)  # whatever B had in flight when it paused is over

    since = len(cluster.calls)
    # A change (handled by kopf) and a drift (repaired by the resync loop only): A does both.
    cluster.patch(MLMODEL, NS, "sentiment", {"spec": {"replicas": 3}})
    cluster.delete(SERVICES, NS, "sentiment")
    await converged(cluster, replicas=3)
    await asyncio.sleep(1.5)  # several of B's resync periods
    writers = {c.user for c in acting_writes(cluster, since)}
    assert writers == {"operator-a"}, [
        (c.user, c.verb, c.path) for c in acting_writes(cluster, since)
    ]
    assert one_of_each(cluster)

    # A's node dies: no goodbye. Once its keep-alive expires, B takes over and acts again.
    a.process.send_signal(signal.SIGKILL)
    a.process.wait(timeout=10)
    await wait_for(lambda: "resync resumed" in b.log(), timeout=20, what="B's resync loop resuming")
    since = len(cluster.calls)
    cluster.patch(MLMODEL, NS, "sentiment", {"spec": {"replicas": 4}})
    await converged(cluster, replicas=4)
    assert {c.user for c in acting_writes(cluster, since)} == {"operator-b"}
