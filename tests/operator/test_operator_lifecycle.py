"""The real operator process against the API emulator: create, roll out, update, delete."""

from __future__ import annotations

import asyncio

from conftest import condition, make_mlmodel, wait_for
from emulator import ClusterEmulator

NS = "default"
MLMODEL = "serving.mlmodel.io/v1alpha1/mlmodels"
DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
PDBS = "policy/v1/poddisruptionbudgets"
HPAS = "autoscaling/v2/horizontalpodautoscalers"
MANAGED_LABELS = {
    "app.kubernetes.io/name": "mlmodel-runtime",
    "app.kubernetes.io/instance": "sentiment",
    "app.kubernetes.io/managed-by": "mlmodel-operator",
}


def runtime_container(cluster: ClusterEmulator, name: str = "sentiment") -> dict:
    deployment = cluster.get(DEPLOYMENTS, NS, name)
    assert deployment is not None
    return deployment["spec"]["template"]["spec"]["containers"][0]


def env_of(container: dict) -> dict:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


async def test_create_makes_owned_labelled_children_and_honest_status(cluster, start_operator):
    await start_operator()
    mlmodel = cluster.create(make_mlmodel())
    uid = mlmodel["metadata"]["uid"]

    children = await wait_for(
        lambda: (
            all(cluster.get(kind, NS, "sentiment") for kind in (DEPLOYMENTS, SERVICES, PDBS))
            and [cluster.get(kind, NS, "sentiment") for kind in (DEPLOYMENTS, SERVICES, PDBS)]
        ),
        what="deployment, service and pdb",
    )
    for child in children:
        owners = child["metadata"]["ownerReferences"]
        assert owners == [
            {
                "apiVersion": "serving.mlmodel.io/v1alpha1",
                "kind": "MLModel",
                "name": "sentiment",
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert MANAGED_LABELS.items() <= child["metadata"]["labels"].items()
    # Two replicas and no autoscaling: no HPA.
    assert cluster.get(HPAS, NS, "sentiment") is None
    container = runtime_container(cluster)
    assert container["image"] == "registry.example.com/mlmodel/runtime:test"
    assert (
        env_of(container)["MLMODEL_MODEL_URI"]
        == "https://models.example.com/sentiment/model.joblib"
    )
    assert cluster.get(DEPLOYMENTS, NS, "sentiment")["spec"]["replicas"] == 2

    # Nothing rolled out yet: honest Progressing, not Ready; monitoring off and why.
    stored = await wait_for(
        lambda: (
            (m := cluster.get(MLMODEL, NS, "sentiment"))
            and m.get("status", {}).get("conditions")
            and "serving.mlmodel.io/last-handled-configuration"
            in m["metadata"].get("annotations", {})
            and m
        ),
        what="status and kopf's diff-base annotation",
    )
    assert condition(stored, "Ready")["status"] == "False"
    assert condition(stored, "Progressing")["status"] == "True"
    assert stored["status"]["observedGeneration"] == 1
    assert stored["status"]["monitoring"]["serviceMonitor"] is False
    assert stored["status"]["monitoring"]["reason"] == "CRDNotInstalled"
    # kopf's bookkeeping stays out of status, in annotations with our prefix.
    assert set(stored["status"]) & {"kopf"} == set()
    annotations = stored["metadata"]["annotations"]
    assert not any(key.startswith("kopf.zalando.org") for key in annotations)
    assert not stored["metadata"].get("finalizers")

    # Status went through the /status subresource; every child creation posted an Event.
    status_patches = [
        c
        for c in cluster.operator_calls()
        if c.resource == "mlmodels" and c.subresource == "status"
    ]
    assert status_patches and all(c.verb == "patch" for c in status_patches)
    events = await wait_for(
        lambda: (
            [
                e
                for e in cluster.list_objects("v1/events", NS)[0]
                if e.get("reason") == "ChildCreated"
            ]
            if len(
                [
                    e
                    for e in cluster.list_objects("v1/events", NS)[0]
                    if e.get("reason") == "ChildCreated"
                ]
            )
            >= 3
            else None
        ),
        what="ChildCreated events",
    )
    assert {e["involvedObject"]["uid"] for e in events} == {uid}


async def test_deployment_rollout_drives_conditions_and_printer_columns(cluster, start_operator):
    await start_operator(resync=30)  # status must follow the Deployment watch, not the timer
    cluster.create(make_mlmodel())
    await wait_for(lambda: cluster.get(DEPLOYMENTS, NS, "sentiment"), what="deployment")

    cluster.set_deployment_rollout(NS, "sentiment", ready=1)
    stored = await wait_for(
        lambda: (
            (m := cluster.get(MLMODEL, NS, "sentiment"))
            and m.get("status", {}).get("readyReplicas") == 1
            and m
        ),
        what="readyReplicas 1",
    )
    assert condition(stored, "Ready")["status"] == "False"
    assert stored["status"]["replicaSummary"] == "1/2"

    cluster.set_deployment_rollout(NS, "sentiment", ready=2)
    stored = await wait_for(
        lambda: (
            (m := cluster.get(MLMODEL, NS, "sentiment"))
            and condition(m, "Ready").get("status") == "True"
            and m
        ),
        what="Ready=True",
    )
    # What `kubectl get mlmodels` prints: READY, REASON, REPLICAS, MODEL, URL.
    assert condition(stored, "Ready")["reason"] == "Available"
    assert condition(stored, "Progressing")["status"] == "False"
    assert condition(stored, "Degraded")["status"] == "False"
    assert stored["status"]["replicaSummary"] == "2/2"
    assert stored["status"]["modelShortDigest"] == "3f" * 6
    assert stored["status"]["url"].startswith("http://sentiment.default.svc")
    await wait_for(
        lambda: any(e.get("reason") == "Ready" for e in cluster.list_objects("v1/events", NS)[0]),
        what="a Ready event",
    )

    cluster.set_deployment_rollout(NS, "sentiment", ready=1, stalled=True)
    stored = await wait_for(
        lambda: (
            (m := cluster.get(MLMODEL, NS, "sentiment"))
            and condition(m, "Degraded").get("status") == "True"
            and m
        ),
        what="Degraded=True",
    )
    assert condition(stored, "Degraded")["reason"] == "ProgressDeadlineExceeded"
    assert condition(stored, "Ready")["status"] == "False"
    assert stored["status"]["lastFailure"]["reason"] == "ProgressDeadlineExceeded"


async def test_update_of_replicas_uri_and_image_patches_children(cluster, start_operator):
    await start_operator(resync=30)
    cluster.create(make_mlmodel())
    await wait_for(lambda: cluster.get(DEPLOYMENTS, NS, "sentiment"), what="deployment")
    before = cluster.get(DEPLOYMENTS, NS, "sentiment")

    new_uri = "s3://models/sentiment/v2/model.joblib"
    cluster.patch(
        MLMODEL,
        NS,
        "sentiment",
        {
            "spec": {
                "replicas": 3,
                "model": {"uri": new_uri, "sha256": "ab" * 32},
                "runtime": {"image": "registry.example.com/mlmodel/runtime:v2"},
            }
        },
    )

    def updated() -> bool:
        deployment = cluster.get(DEPLOYMENTS, NS, "sentiment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return (
            deployment["spec"].get("replicas") == 3
            and container["image"] == "registry.example.com/mlmodel/runtime:v2"
            and env_of(container).get("MLMODEL_MODEL_URI") == new_uri
        )

    await wait_for(updated, what="the deployment patched")
    after = cluster.get(DEPLOYMENTS, NS, "sentiment")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]  # patched, not re-created
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1  # in one write
    patches = [
        c for c in cluster.operator_calls() if c.verb == "patch" and c.resource == "deployments"
    ]
    assert len(patches) == 1 and patches[0].content_type.startswith("application/merge-patch+json")
    stored = await wait_for(
        lambda: (
            (m := cluster.get(MLMODEL, NS, "sentiment"))
            and m.get("status", {}).get("observedGeneration") == m["metadata"]["generation"]
            and m
        ),
        what="observedGeneration to follow",
    )
    assert stored["status"]["modelShortDigest"] == "ab" * 6

    # Switching to autoscaling: an HPA appears, the PDB stays, the deployment leaves replicas to the HPA.
    cluster.patch(
        MLMODEL,
        NS,
        "sentiment",
        {"spec": {"replicas": None, "autoscaling": {"minReplicas": 2, "maxReplicas": 5}}},
    )
    hpa = await wait_for(lambda: cluster.get(HPAS, NS, "sentiment"), what="hpa")
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 5
    assert hpa["spec"]["scaleTargetRef"]["name"] == "sentiment"


async def test_delete_removes_the_mlmodel_and_its_children(cluster, start_operator):
    await start_operator()
    cluster.create(make_mlmodel())
    await wait_for(
        lambda: (
            cluster.get(PDBS, NS, "sentiment")
            and "serving.mlmodel.io/last-handled-configuration"
            in cluster.get(MLMODEL, NS, "sentiment")["metadata"].get("annotations", {})
        ),
        what="children and kopf's bookkeeping",
    )
    # No finalizer is needed without external state: deletion is never blocked by the operator.
    assert not cluster.get(MLMODEL, NS, "sentiment")["metadata"].get("finalizers")

    cluster.delete(MLMODEL, NS, "sentiment")
    assert cluster.get(MLMODEL, NS, "sentiment") is None
    for kind in (DEPLOYMENTS, SERVICES, PDBS):
        assert (
            cluster.get(kind, NS, "sentiment") is None
        )  # garbage-collected through ownerReferences
    # The operator does not resurrect anything afterwards (its timer for this object stopped).
    since = len(cluster.calls)
    await asyncio.sleep(2.5)  # over two resync periods
    assert [c for c in cluster.writes(since) if c.resource != "events" and c.code < 400] == []
    assert cluster.get(DEPLOYMENTS, NS, "sentiment") is None
