"""The real operator process against the API emulator: drift repair, idle resyncs, bad input, faults."""

from __future__ import annotations

import asyncio
import urllib.request

from conftest import SERVICEMONITOR_CRD, condition, make_mlmodel, wait_for
from emulator import ClusterEmulator

NS = "default"
MLMODEL = "serving.mlmodel.io/v1alpha1/mlmodels"
DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
SERVICEMONITORS = "monitoring.coreos.com/v1/servicemonitors"


async def ready_model(cluster: ClusterEmulator, name: str = "sentiment") -> dict:
    """Create an MLModel, roll its Deployment out as the controller would, wait for Ready."""
    cluster.create(make_mlmodel(name))
    await wait_for(lambda: cluster.get(DEPLOYMENTS, NS, name), what="deployment")
    cluster.set_deployment_rollout(NS, name)
    return await wait_for(
        lambda: (
            (m := cluster.get(MLMODEL, NS, name))
            and condition(m, "Ready").get("status") == "True"
            and "serving.mlmodel.io/last-handled-configuration"
            in m["metadata"].get("annotations", {})
            and m
        ),
        what="Ready=True",
    )


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def resync_reads(cluster: ClusterEmulator, since: int) -> int:
    return sum(
        1
        for c in cluster.operator_calls(since)
        if c.verb == "list"
        and c.resource == "mlmodels"
        and c.user_agent.startswith("mlmodel-operator/")
    )


async def test_idle_resync_makes_no_write_at_all(cluster, start_operator):
    operator = await start_operator(resync=1)
    await ready_model(cluster)
    await asyncio.sleep(1.5)  # let the Ready event and last status write settle

    since = len(cluster.calls)
    await asyncio.sleep(2.6)  # more than two resync periods
    assert resync_reads(cluster, since) >= 2, "the resync loop did not run"
    # It did read every child...
    assert any(
        c.verb == "get" and c.resource == "deployments" for c in cluster.operator_calls(since)
    )
    # ...and wrote nothing: no patch, no create, no status, no Event.
    assert cluster.writes(since) == []

    # The operator's metrics tell the same story.
    text = await asyncio.to_thread(scrape, operator.metrics_port)
    assert 'mlmodel_operator_reconciles_total{result="success"}' in text
    assert 'mlmodel_operator_mlmodels{condition="Ready",status="True"} 1.0' in text
    assert "mlmodel_operator_time_to_ready_seconds_count 1.0" in text


async def test_child_deleted_or_edited_by_hand_is_repaired(cluster, start_operator):
    await start_operator(resync=1)
    await ready_model(cluster)
    deployment = cluster.get(DEPLOYMENTS, NS, "sentiment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]

    cluster.delete(SERVICES, NS, "sentiment")
    service = await wait_for(
        lambda: cluster.get(SERVICES, NS, "sentiment"), what="the service re-created"
    )
    assert service["metadata"]["ownerReferences"][0]["kind"] == "MLModel"

    # Someone edits the image and the replicas by hand (kubectl edit); both are put back.
    patched = deployment["spec"]["template"]["spec"]["containers"][0] | {
        "image": "evil.example.com/x:1"
    }
    cluster.patch(
        DEPLOYMENTS,
        NS,
        "sentiment",
        {"spec": {"replicas": 7, "template": {"spec": {"containers": [patched]}}}},
    )
    await wait_for(
        lambda: (
            (d := cluster.get(DEPLOYMENTS, NS, "sentiment"))["spec"]["replicas"] == 2
            and d["spec"]["template"]["spec"]["containers"][0]["image"] == image
        ),
        what="the deployment repaired",
    )
    # A label the operator does not own is left alone; a label it owns is put back.
    cluster.patch(
        DEPLOYMENTS,
        NS,
        "sentiment",
        {
            "metadata": {
                "labels": {"team": "search", "app.kubernetes.io/managed-by": "someone-else"}
            }
        },
    )
    labels = await wait_for(
        lambda: (
            (lb := cluster.get(DEPLOYMENTS, NS, "sentiment")["metadata"]["labels"]).get(
                "app.kubernetes.io/managed-by"
            )
            == "mlmodel-operator"
            and lb
        ),
        what="the managed-by label repaired",
    )
    assert labels["team"] == "search"


async def test_servicemonitor_only_when_its_crd_is_installed(cluster, start_operator):
    await start_operator(resync=1)
    cluster.create(make_mlmodel())
    stored = await wait_for(
        lambda: (
            (m := cluster.get(MLMODEL, NS, "sentiment"))
            and m.get("status", {}).get("monitoring")
            and m
        ),
        what="monitoring status",
    )
    assert stored["status"]["monitoring"]["serviceMonitor"] is False
    assert "servicemonitors.monitoring.coreos.com" in stored["status"]["monitoring"]["message"]

    # The Prometheus Operator gets installed: the next resync creates the ServiceMonitor.
    cluster.install_crd(SERVICEMONITOR_CRD)
    monitor = await wait_for(
        lambda: cluster.get(SERVICEMONITORS, NS, "sentiment"), what="servicemonitor"
    )
    assert monitor["metadata"]["ownerReferences"][0]["name"] == "sentiment"
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "sentiment"
    await wait_for(
        lambda: (
            cluster.get(MLMODEL, NS, "sentiment")["status"]["monitoring"]["serviceMonitor"] is True
        ),
        what="status to say monitoring is on",
    )

    # The user switches monitoring off: the ServiceMonitor goes, and the status says why.
    cluster.patch(MLMODEL, NS, "sentiment", {"spec": {"monitoring": {"serviceMonitor": False}}})
    await wait_for(
        lambda: cluster.get(SERVICEMONITORS, NS, "sentiment") is None, what="servicemonitor deleted"
    )
    await wait_for(
        lambda: (
            cluster.get(MLMODEL, NS, "sentiment")["status"]["monitoring"]["reason"] == "Disabled"
        ),
        what="monitoring Disabled",
    )


async def test_invalid_spec_is_degraded_without_a_hot_loop(cluster, start_operator):
    await start_operator(resync=1)
    bad = make_mlmodel()
    bad["spec"]["model"]["uri"] = "model.joblib"  # passes the schema, but no pod can read it
    cluster.create(bad)
    stored = await wait_for(
        lambda: (
            (m := cluster.get(MLMODEL, NS, "sentiment"))
            and condition(m, "Degraded").get("status") == "True"
            and "serving.mlmodel.io/last-handled-configuration"
            in m["metadata"].get("annotations", {})
            and m
        ),
        what="Degraded=True",
    )
    degraded = condition(stored, "Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert "relative path" in degraded["message"]
    assert condition(stored, "Ready")["status"] == "False"
    assert cluster.get(DEPLOYMENTS, NS, "sentiment") is None
    await wait_for(
        lambda: any(
            e.get("reason") == "InvalidSpec" and e["type"] == "Warning"
            for e in cluster.list_objects("v1/events", NS)[0]
        ),
        what="a Warning event saying what is wrong",
    )
    await asyncio.sleep(1.0)

    since = len(cluster.calls)
    await asyncio.sleep(3.0)
    calls = cluster.operator_calls(since)
    assert cluster.writes(since) == []  # no retry storm of patches or events
    # Reads are paced by the resync interval (a few per second), not a tight loop.
    assert len(calls) < 30, [f"{c.verb} {c.path}" for c in calls]

    # Fixing the spec resumes normal service.
    cluster.patch(
        MLMODEL,
        NS,
        "sentiment",
        {"spec": {"model": {"uri": "https://models.example.com/m.joblib"}}},
    )
    await wait_for(
        lambda: cluster.get(DEPLOYMENTS, NS, "sentiment"), what="deployment after the fix"
    )
    await wait_for(
        lambda: (
            condition(cluster.get(MLMODEL, NS, "sentiment"), "Degraded").get("status") == "False"
        ),
        what="Degraded=False after the fix",
    )


async def test_transient_api_errors_are_retried_without_duplicates(cluster, start_operator):
    await start_operator(resync=30)  # convergence must come from kopf's retries, not the resync
    fault = cluster.fail(
        lambda call: call.verb == "create" and call.resource == "deployments", 500, times=2
    )
    throttle = cluster.fail(
        lambda call: (
            call.verb == "get"
            and call.resource == "services"
            and call.user_agent.startswith("mlmodel-operator/")
        ),
        429,
        times=1,
    )
    cluster.create(make_mlmodel())
    await wait_for(
        lambda: cluster.get(DEPLOYMENTS, NS, "sentiment"),
        timeout=20,
        what="deployment after faults",
    )
    assert fault.hits == 2 and throttle.hits == 1
    creates = [
        c for c in cluster.operator_calls() if c.verb == "create" and c.resource == "deployments"
    ]
    assert [c.code for c in creates] == [500, 500, 201]
    assert len(cluster.list_objects(DEPLOYMENTS, NS)[0]) == 1
    # Retried with backoff (kopf's TemporaryError delays), not in a tight loop.
    assert creates[2].at - creates[0].at >= 1.5
    await wait_for(
        lambda: (
            cluster.get(MLMODEL, NS, "sentiment").get("status", {}).get("replicaSummary") == "0/2"
        ),
        what="status after recovery",
    )


async def test_a_spec_the_builders_refuse_stays_degraded_whatever_wakes_the_status(
    cluster, start_operator
):
    await start_operator(resync=1)
    cluster.create(make_mlmodel())
    await wait_for(lambda: cluster.get(DEPLOYMENTS, NS, "sentiment"), what="deployment")
    cluster.set_deployment_rollout(NS, "sentiment", ready=2)
    await wait_for(
        lambda: condition(cluster.get(MLMODEL, NS, "sentiment"), "Ready").get("status") == "True",
        what="Ready=True",
    )

    # The schema accepts any env name; the builders refuse one the operator sets itself.
    cluster.patch(
        MLMODEL,
        NS,
        "sentiment",
        {"spec": {"runtime": {"env": [{"name": "MLMODEL_PORT", "value": "9000"}]}}},
    )
    await wait_for(
        lambda: condition(cluster.get(MLMODEL, NS, "sentiment"), "Degraded").get("reason")
        == "InvalidSpec",
        what="Degraded=InvalidSpec",
    )
    # A Deployment event and a few resyncs later, the status still says what to fix.
    cluster.set_deployment_rollout(NS, "sentiment", ready=1)
    await asyncio.sleep(3.0)
    stored = cluster.get(MLMODEL, NS, "sentiment")
    degraded, ready = condition(stored, "Degraded"), condition(stored, "Ready")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
    assert "MLMODEL_PORT" in degraded["message"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    # The children of the last good spec keep running, untouched.
    env = cluster.get(DEPLOYMENTS, NS, "sentiment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert not any(item["name"] == "MLMODEL_PORT" and item.get("value") == "9000" for item in env)
