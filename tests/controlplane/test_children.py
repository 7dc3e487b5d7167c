"""The operator's children on the real server: created owned, repaired when drifted, never taken
from another owner, and removed by the real garbage collector with their MLModel."""

from __future__ import annotations

import json

import pytest
from support.cluster import Cluster
from support.ports import wait_until

from controlplane.models import condition, controller_uid, mlmodel

pytestmark = pytest.mark.cluster


def ready(cluster: Cluster, name: str, namespace: str) -> dict:
    cluster.kubectl("wait", "--for=condition=Ready", f"mlmodel/{name}", "-n", namespace, "--timeout=90s")
    return cluster.get("mlmodel", name, namespace)


def test_children_are_owned_labelled_and_match_the_spec(
    installed_cluster: Cluster, run_operator, namespace: str
):
    run_operator(namespaces=[namespace])
    installed_cluster.apply(mlmodel("sentiment", namespace, replicas=2))
    stored = ready(installed_cluster, "sentiment", namespace)
    uid = stored["metadata"]["uid"]
    for kind in ("deployment", "service", "poddisruptionbudget"):
        child = installed_cluster.get(kind, "sentiment", namespace)
        assert child is not None, kind
        assert child["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "serving.mlmodel.io/v1alpha1",
                "kind": "MLModel",
                "name": "sentiment",
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlmodel-operator"
    assert installed_cluster.get("horizontalpodautoscaler", "sentiment", namespace) is None
    deployment = installed_cluster.get("deployment", "sentiment", namespace)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["status"]["readyReplicas"] == 2


def test_deleted_and_edited_children_are_put_back(
    installed_cluster: Cluster, run_operator, namespace: str
):
    run_operator(namespaces=[namespace], resync="1")
    installed_cluster.apply(mlmodel("sentiment", namespace))
    ready(installed_cluster, "sentiment", namespace)
    service = installed_cluster.get("service", "sentiment", namespace)
    old_uid = service["metadata"]["uid"]

    installed_cluster.kubectl("delete", "service", "sentiment", "-n", namespace)
    recreated = wait_until(
        lambda: (s := installed_cluster.get("service", "sentiment", namespace))
        and s["metadata"]["uid"] != old_uid
        and s,
        what="the deleted Service to be recreated",
    )
    assert recreated["spec"]["ports"][0]["name"] == "http"

    # An edit by hand of a field the operator owns is reverted.
    image = installed_cluster.get("deployment", "sentiment", namespace)["spec"]["template"]["spec"]["containers"][0]["image"]
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "runtime", "image": "evil.example.com/x:1"}]}}}}
    installed_cluster.kubectl(
        "patch", "deployment", "sentiment", "-n", namespace, "--type=strategic", "-p", json.dumps(patch)
    )
    wait_until(
        lambda: installed_cluster.get("deployment", "sentiment", namespace)["spec"]["template"]["spec"]["containers"][0]["image"] == image,
        what="the edited image to be put back",
    )


def test_a_child_of_another_owner_is_not_taken_over(
    installed_cluster: Cluster, run_operator, namespace: str
):
    installed_cluster.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "someone", "namespace": namespace}}
    )
    config_map = installed_cluster.get("configmap", "someone", namespace)
    theirs = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "sentiment",
            "namespace": namespace,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "someone",
                    "uid": config_map["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {"ports": [{"name": "theirs", "port": 1234}]},
    }
    installed_cluster.apply(theirs)
    before = installed_cluster.get("service", "sentiment", namespace)
    operator = run_operator(namespaces=[namespace], resync="1")
    installed_cluster.apply(mlmodel("sentiment", namespace))
    # The Deployment is made, the Service stays theirs: untouched, and the status says why.
    wait_until(lambda: installed_cluster.get("deployment", "sentiment", namespace), what="deployment")
    degraded = wait_until(
        lambda: (d := condition(installed_cluster.get("mlmodel", "sentiment", namespace), "Degraded"))
        .get("status") == "True" and d,
        what="Degraded ChildConflict",
    )
    assert degraded["reason"] == "ChildConflict"
    assert "Service" in degraded["message"] and "another owner" in degraded["message"]
    # Its URL may reach the other owner's Service: not Ready, whatever the pods say.
    assert condition(installed_cluster.get("mlmodel", "sentiment", namespace), "Ready")["reason"] == "ChildConflict"
    assert "controlled by another owner" in operator.log()
    after = installed_cluster.get("service", "sentiment", namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert controller_uid(after) == config_map["metadata"]["uid"]

    # Once the other owner's Service is gone, the model gets its own and recovers.
    installed_cluster.kubectl("delete", "service", "sentiment", "-n", namespace)
    installed_cluster.kubectl(
        "wait", "--for=condition=Ready", "mlmodel/sentiment", "-n", namespace, "--timeout=60s"
    )
    assert condition(installed_cluster.get("mlmodel", "sentiment", namespace), "Degraded")["status"] == "False"


def test_the_garbage_collector_removes_the_children_of_a_deleted_mlmodel(
    installed_cluster: Cluster, run_operator, namespace: str
):
    run_operator(namespaces=[namespace])
    installed_cluster.apply(
        mlmodel(
            "sentiment",
            namespace,
            replicas=None,
            autoscaling={"minReplicas": 1, "maxReplicas": 3},
            runtime={"resources": {"requests": {"cpu": "100m"}}},
        )
    )
    ready(installed_cluster, "sentiment", namespace)
    assert installed_cluster.get("horizontalpodautoscaler", "sentiment", namespace) is not None
    installed_cluster.kubectl("delete", "mlmodel", "sentiment", "-n", namespace, "--wait=true")
    for kind in ("deployment", "service", "poddisruptionbudget", "horizontalpodautoscaler"):
        wait_until(
            lambda kind=kind: installed_cluster.get(kind, "sentiment", namespace) is None,
            what=f"the {kind} to be garbage-collected",
        )
    wait_until(
        lambda: not installed_cluster.list("pods", namespace), what="the pods to go", timeout=60
    )


def test_replicas_handed_to_a_new_hpa_keep_their_value(
    installed_cluster: Cluster, run_operator, namespace: str
):
    """From `replicas: 3` to `autoscaling`: the operator stops applying replicas, which under
    Server-Side Apply would reset the Deployment to 1 (and kill two pods) until the HPA scales it
    back; the replicas are handed over at 3 instead."""
    run_operator(namespaces=[namespace])
    resources = {"resources": {"requests": {"cpu": "100m"}}}
    installed_cluster.apply(mlmodel("sentiment", namespace, replicas=3, runtime=resources))
    ready(installed_cluster, "sentiment", namespace)
    switch = {"spec": {"replicas": None, "autoscaling": {"minReplicas": 2, "maxReplicas": 5}}}
    installed_cluster.kubectl("patch", "mlmodel", "sentiment", "-n", namespace, "--type=merge", "-p", json.dumps(switch))

    def replicas_owners() -> list[str]:
        deployment = installed_cluster.get("deployment", "sentiment", namespace, managed_fields=True)
        return sorted(
            entry["manager"] for entry in deployment["metadata"]["managedFields"]
            if "f:replicas" in (entry.get("fieldsV1") or {}).get("f:spec", {})
        )

    wait_until(
        lambda: installed_cluster.get("horizontalpodautoscaler", "sentiment", namespace) is not None
        and "mlmodel-operator" not in replicas_owners(),
        timeout=60, what="the HPA made and the replicas let go",
    )
    # The HPA controller has had its first syncs (every 5 s here): 3 is within 2..5, so it stays.
    wait_until(
        lambda: (installed_cluster.get("horizontalpodautoscaler", "sentiment", namespace).get("status") or {}).get("conditions"),
        timeout=60, what="the HPA controller to look at the Deployment",
    )
    deployment = installed_cluster.get("deployment", "sentiment", namespace)
    assert deployment["spec"]["replicas"] == 3
    assert "mlmodel-operator-replicas-handover" in replicas_owners() or replicas_owners() == ["kube-controller-manager"]
    events = json.loads(installed_cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.kind=Deployment", "-o", "json"
    ).stdout)["items"]
    scaled = [e["message"] for e in events if e.get("reason") == "ScalingReplicaSet"]
    assert scaled and not [m for m in scaled if "down" in m.lower()], scaled
