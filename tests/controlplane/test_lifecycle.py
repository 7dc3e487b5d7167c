"""Updates, idle resyncs and Server-Side Apply on the real server: what changes, what must not."""

from __future__ import annotations

import json
import time

import pytest
from support.cluster import Cluster
from support.operator import OPERATOR_USER, WRITE_VERBS, operator_requests, utc_now
from support.ports import wait_until

from controlplane.models import condition, mlmodel

pytestmark = pytest.mark.cluster


def ready(cluster: Cluster, namespace: str, name: str = "sentiment") -> dict:
    cluster.kubectl("wait", "--for=condition=Ready", f"mlmodel/{name}", "-n", namespace, "--timeout=90s")
    return cluster.get("mlmodel", name, namespace)


def pod_spec(cluster: Cluster, namespace: str) -> dict:
    return cluster.get("deployment", "sentiment", namespace)["spec"]["template"]["spec"]


def container(cluster: Cluster, namespace: str) -> dict:
    return pod_spec(cluster, namespace)["containers"][0]


def versions(cluster: Cluster, namespace: str) -> dict[str, str]:
    """resourceVersion of every object in the namespace (events aside)."""
    found = {}
    for kind in ("mlmodels", "deployments", "services", "poddisruptionbudgets",
                 "horizontalpodautoscalers", "replicasets", "pods"):
        for obj in cluster.list(kind, namespace):
            found[f"{kind}/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
    return found


def test_update_of_replicas_uri_and_image_changes_the_children(
    installed_cluster: Cluster, run_operator, namespace: str
):
    run_operator(namespaces=[namespace])
    installed_cluster.apply(mlmodel("sentiment", namespace, replicas=2))
    ready(installed_cluster, namespace)
    patch = {
        "spec": {
            "replicas": 3,
            "model": {"uri": "https://models.example.com/sentiment/v2/model.joblib"},
            "runtime": {"image": "registry.example.com/mlmodel/runtime:v2"},
        }
    }
    installed_cluster.kubectl("patch", "mlmodel", "sentiment", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    wait_until(
        lambda: container(installed_cluster, namespace)["image"] == "registry.example.com/mlmodel/runtime:v2",
        what="the new image",
    )
    env = {e["name"]: e.get("value") for e in container(installed_cluster, namespace)["env"]}
    assert env["MLMODEL_MODEL_URI"] == "https://models.example.com/sentiment/v2/model.joblib"
    stored = wait_until(
        lambda: (m := installed_cluster.get("mlmodel", "sentiment", namespace))
        and m["status"].get("observedGeneration") == m["metadata"]["generation"]
        and condition(m, "Ready")["status"] == "True"
        and m["status"]["replicaSummary"] == "3/3"
        and m,
        timeout=60,
        what="the new generation rolled out and Ready",
    )
    assert installed_cluster.get("deployment", "sentiment", namespace)["spec"]["replicas"] == 3
    assert stored["status"]["replicas"] == 3


def test_an_idle_resync_changes_no_object_and_reads_nothing_per_model(
    installed_cluster: Cluster, run_operator, namespace: str
):
    operator = run_operator(namespaces=[namespace], resync="1")
    for name in ("one", "two", "three"):
        installed_cluster.apply(
            mlmodel(name, namespace, replicas=2, runtime={"resources": {"requests": {"cpu": "0.5", "memory": "256Mi"}}})
        )
    for name in ("one", "two", "three"):
        ready(installed_cluster, namespace, name)
    time.sleep(3)  # let the rollouts' last status writes land
    before = versions(installed_cluster, namespace)
    since = utc_now()
    time.sleep(5.5)  # five resync passes
    assert versions(installed_cluster, namespace) == before
    requests = operator_requests(installed_cluster, since)
    writes = [f"{e['verb']} {e['requestURI']}" for e in requests if e["verb"] in WRITE_VERBS]
    assert writes == []
    # What a pass costs: the MLModel list (and the peering/CRD checks), nothing per model.
    per_model = [
        e["requestURI"] for e in requests
        if e["verb"] in ("get", "list") and (e.get("objectRef") or {}).get("resource") not in ("mlmodels", "customresourcedefinitions")
    ]
    assert per_model == []
    assert operator.process.poll() is None


def test_dropped_map_keys_are_pruned_by_the_server_and_others_kept(
    installed_cluster: Cluster, run_operator, namespace: str
):
    run_operator(namespaces=[namespace], resync="1")
    installed_cluster.apply(mlmodel("sentiment", namespace, nodeSelector={"disk": "ssd", "zone": "eu-1a"}))
    wait_until(
        lambda: (installed_cluster.get("deployment", "sentiment", namespace) or {}).get("spec", {}).get("template", {}).get("spec", {}).get("nodeSelector") == {"disk": "ssd", "zone": "eu-1a"},
        what="both nodeSelector keys",
    )
    # A label someone else put on the Deployment is theirs (labels are a granular map, owned
    # key by key); nodeSelector is an atomic map, owned whole by the operator.
    installed_cluster.kubectl("label", "deployment", "sentiment", "-n", namespace, "team=search")
    installed_cluster.kubectl(
        "patch", "mlmodel", "sentiment", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"nodeSelector": {"zone": None}}}),
    )
    wait_until(
        lambda: pod_spec(installed_cluster, namespace)["nodeSelector"] == {"disk": "ssd"},
        what="zone pruned",
    )
    installed_cluster.kubectl(
        "patch", "mlmodel", "sentiment", "-n", namespace, "--type=json",
        "-p", json.dumps([{"op": "remove", "path": "/spec/nodeSelector"}]),
    )
    wait_until(
        lambda: "nodeSelector" not in pod_spec(installed_cluster, namespace),
        what="the whole nodeSelector pruned",
    )
    deployment = installed_cluster.get("deployment", "sentiment", namespace, managed_fields=True)
    managers = {(e["manager"], e["operation"]) for e in deployment["metadata"]["managedFields"]}
    assert ("mlmodel-operator", "Apply") in managers
    assert not any("last-applied" in key for key in deployment["metadata"].get("annotations", {}))
    assert deployment["metadata"]["labels"]["team"] == "search"


def test_children_written_by_the_client_side_apply_of_0_1_are_handed_over(
    installed_cluster: Cluster, run_operator, namespace: str
):
    """Objects the 0.1 operator wrote (merge patches, a last-applied annotation) are taken over
    by Server-Side Apply: the annotation goes, and fields only the old writes set are pruned."""
    installed_cluster.apply(mlmodel("sentiment", namespace))
    owner = installed_cluster.get("mlmodel", "sentiment", namespace)
    legacy = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "sentiment",
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "mlmodel-operator",
                "app.kubernetes.io/instance": "sentiment",
                "stale-label-from-0-1": "yes",
            },
            "annotations": {"serving.mlmodel.io/last-applied": "{}"},
            "ownerReferences": [{
                "apiVersion": "serving.mlmodel.io/v1alpha1", "kind": "MLModel", "name": "sentiment",
                "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    # As 0.1 wrote it: a plain create under the operator's name (an Update entry, not Apply).
    import yaml

    installed_cluster.kubectl("create", "--field-manager=mlmodel-operator", "-f", "-", input=yaml.safe_dump(legacy))
    run_operator(namespaces=[namespace])
    ready(installed_cluster, namespace)
    service = wait_until(
        lambda: (s := installed_cluster.get("service", "sentiment", namespace, managed_fields=True))
        and "serving.mlmodel.io/last-applied" not in s["metadata"].get("annotations", {})
        and s,
        what="the last-applied annotation removed",
    )
    assert "stale-label-from-0-1" not in service["metadata"]["labels"]
    entries = [(e["manager"], e["operation"]) for e in service["metadata"]["managedFields"]]
    assert ("mlmodel-operator", "Update") not in entries
    assert ("mlmodel-operator", "Apply") in entries


def test_an_invalid_spec_is_degraded_without_a_hot_loop(
    installed_cluster: Cluster, run_operator, namespace: str
):
    run_operator(namespaces=[namespace], resync="1")
    bad = mlmodel("sentiment", namespace, model={"uri": "model.joblib", "sha256": "3f" * 32})
    installed_cluster.apply(bad)  # the CRD accepts a path (for `mlmodel serve`); no pod can read it
    stored = wait_until(
        lambda: (m := installed_cluster.get("mlmodel", "sentiment", namespace))
        and condition(m, "Degraded").get("status") == "True"
        and m,
        what="Degraded InvalidSpec",
    )
    degraded = condition(stored, "Degraded")
    assert degraded["reason"] == "InvalidSpec" and "relative path" in degraded["message"]
    assert installed_cluster.get("deployment", "sentiment", namespace) is None
    wait_until(
        lambda: installed_cluster.kubectl(
            "get", "events", "-n", namespace, "--field-selector", "reason=InvalidSpec,type=Warning", "-o", "name"
        ).stdout.strip(),
        what="a Warning event saying what is wrong",
    )
    time.sleep(1.5)
    since = utc_now()
    time.sleep(3.0)
    requests = operator_requests(installed_cluster, since)
    assert [e["requestURI"] for e in requests if e["verb"] in WRITE_VERBS] == []
    assert len(requests) < 20, [f"{e['verb']} {e['requestURI']}" for e in requests]

    installed_cluster.kubectl(
        "patch", "mlmodel", "sentiment", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"model": {"uri": "https://models.example.com/m.joblib"}}}),
    )
    ready(installed_cluster, namespace)
    assert condition(installed_cluster.get("mlmodel", "sentiment", namespace), "Degraded")["status"] == "False"


def test_a_spec_the_builders_refuse_stays_degraded_whatever_wakes_the_status(
    installed_cluster: Cluster, run_operator, namespace: str
):
    run_operator(namespaces=[namespace], resync="1")
    installed_cluster.apply(
        mlmodel("sentiment", namespace, runtime={"env": [{"name": "MLMODEL_MODEL_URI", "value": "x"}]})
    )
    found = wait_until(
        lambda: (d := condition(installed_cluster.get("mlmodel", "sentiment", namespace), "Degraded")).get("status") == "True" and d,
        what="Degraded InvalidSpec for a reserved env name",
    )
    assert found["reason"] == "InvalidSpec" and "MLMODEL_MODEL_URI" in found["message"]
    time.sleep(3)  # resyncs and any Deployment event must not overwrite it
    assert condition(installed_cluster.get("mlmodel", "sentiment", namespace), "Degraded")["reason"] == "InvalidSpec"


def test_the_operator_user_in_the_audit_log_is_its_service_account(installed_cluster: Cluster, run_operator):
    operator = run_operator()
    users = {e["user"]["username"] for e in operator_requests(installed_cluster, operator.started)}
    assert users == {OPERATOR_USER}
