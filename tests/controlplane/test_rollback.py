"""Automatic rollback on the real control plane: a failed generation goes back to the last Ready
one without its spec being touched, says so everywhere (status, Event, metric, history), and a
new spec tries again.

KWOK's stages make the pods of kwok.test/failing/crashloop:1 crash-loop as a kubelet reports it;
a revision whose pods no node can take stays Pending until the real Deployment controller
declares its progress deadline exceeded.
"""

from __future__ import annotations

import json

import pytest
from support.cluster import Cluster
from support.operator import (
    TEST_RUNTIME_IMAGE,
    metric,
    mlmodel_history,
    operator_requests,
    scrape,
    utc_now,
)
from support.ports import wait_until

from controlplane.models import condition, mlmodel

pytestmark = pytest.mark.cluster
FAST_DIAGNOSIS = {"MLMODEL_OPERATOR_POD_DIAGNOSIS_INTERVAL_SECONDS": "0.5"}
CRASHING_IMAGE = "kwok.test/failing/crashloop:1"


def ready(cluster: Cluster, namespace: str, name: str = "sentiment") -> dict:
    cluster.kubectl("wait", "--for=condition=Ready", f"mlmodel/{name}", "-n", namespace, "--timeout=90s")
    return cluster.get("mlmodel", name, namespace)


def patch_spec(cluster: Cluster, namespace: str, spec: dict, name: str = "sentiment") -> None:
    cluster.kubectl("patch", "mlmodel", name, "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec}))


def rolled_back(cluster: Cluster, namespace: str, generation: int, name: str = "sentiment") -> dict:
    """The MLModel once it serves its stable revision again after `generation` failed."""
    def settled() -> dict | bool:
        found = cluster.get("mlmodel", name, namespace)
        done = (
            found["metadata"]["generation"] == generation
            and condition(found, "RolledBack").get("status") == "True"
            and condition(found, "Ready").get("status") == "True"
        )
        return found if done else False

    try:
        return wait_until(settled, timeout=120, what=f"generation {generation} rolled back and Ready")
    except AssertionError:
        pods = cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
        print(f"{json.dumps(cluster.get('mlmodel', name, namespace)['status'], indent=1)}\n{pods}")
        raise


def image(cluster: Cluster, namespace: str, name: str = "sentiment") -> str:
    deployment = cluster.get("deployment", name, namespace)
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"]


def test_a_crash_looping_generation_is_rolled_back_and_a_new_spec_tries_again(
    installed_cluster: Cluster, run_operator, namespace: str, tmp_path
):
    operator = run_operator(namespaces=[namespace], **FAST_DIAGNOSIS)
    installed_cluster.apply(mlmodel("sentiment", namespace))
    first = ready(installed_cluster, namespace)
    assert first["status"]["rollout"]["stable"]["generation"] == 1

    patch_spec(installed_cluster, namespace, {"runtime": {"image": CRASHING_IMAGE}})
    found = rolled_back(installed_cluster, namespace, generation=2)

    # The spec is the user's, untouched; what runs is generation 1 again.
    assert found["spec"]["runtime"]["image"] == CRASHING_IMAGE
    assert image(installed_cluster, namespace) == TEST_RUNTIME_IMAGE
    assert condition(found, "Ready")["reason"] == "RolledBack"
    assert condition(found, "Degraded")["reason"] == "RolledBack"
    rolled = condition(found, "RolledBack")
    assert rolled["reason"] == "CrashLoopBackOff"
    assert "generation 2 failed (CrashLoopBackOff" in rolled["message"]
    assert "generation 1 serves until the spec changes" in rolled["message"]
    assert found["status"]["rollout"]["rolledBack"]["generation"] == 2
    assert found["status"]["observedGeneration"] == 2
    # The crash-looping pods are gone; the stable ones serve.
    wait_until(
        lambda: all(
            pod["spec"]["containers"][0]["image"] == TEST_RUNTIME_IMAGE
            for pod in installed_cluster.list("pods", namespace, "app.kubernetes.io/instance=sentiment")
        ),
        timeout=60,
        what="only stable pods left",
    )
    events = installed_cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=RolledBack", "-o", "json"
    ).stdout
    assert any("generation 2 failed" in e["message"] for e in json.loads(events)["items"])
    assert metric(scrape(operator.metrics_port), "mlmodel_operator_rollbacks_total", reason="CrashLoopBackOff") >= 1
    # The rollout history says it, as `mlmodel history` prints it.
    home = {"HOME": str(tmp_path / "home")}
    table = wait_until(
        lambda: "RolledBack to 1" in (out := mlmodel_history("sentiment", "-n", namespace, env=home).stdout)
        and out,
        timeout=30,
        what="the rollback in mlmodel history",
    )
    assert "CrashLoopBackOff" in table.splitlines()[1]

    # An idle operator leaves the rolled-back model alone: it does not retry on its own.
    version = found["metadata"]["resourceVersion"]
    deployment_version = installed_cluster.get("deployment", "sentiment", namespace)["metadata"]["resourceVersion"]
    since = utc_now()
    wait_until(
        lambda: sum(
            1
            for event in operator_requests(installed_cluster, since, operator.user)
            if event["verb"] == "list" and (event.get("objectRef") or {}).get("resource") == "mlmodels"
        )
        >= 2,
        timeout=30,
        what="two resync passes (each lists the MLModels)",
    )
    assert installed_cluster.get("mlmodel", "sentiment", namespace)["metadata"]["resourceVersion"] == version
    assert (
        installed_cluster.get("deployment", "sentiment", namespace)["metadata"]["resourceVersion"]
        == deployment_version
    )

    # A new spec tries again, and once Ready ends the rollback.
    patch_spec(installed_cluster, namespace, {"runtime": {"image": TEST_RUNTIME_IMAGE + "-2"}})
    fixed = wait_until(
        lambda: (m := installed_cluster.get("mlmodel", "sentiment", namespace))["metadata"]["generation"] == 3
        and condition(m, "Ready").get("reason") == "Available"
        and m,
        timeout=90,
        what="generation 3 Ready",
    )
    assert condition(fixed, "RolledBack")["status"] == "False"
    assert condition(fixed, "Degraded")["status"] == "False"
    assert fixed["status"]["rollout"] == {"stable": {"generation": 3, "spec": fixed["spec"]}}
    assert image(installed_cluster, namespace) == TEST_RUNTIME_IMAGE + "-2"


def test_a_rollout_past_its_progress_deadline_is_rolled_back(
    installed_cluster: Cluster, run_operator, namespace: str
):
    run_operator(namespaces=[namespace], **FAST_DIAGNOSIS)
    installed_cluster.apply(mlmodel("sentiment", namespace, rollout={"progressDeadlineSeconds": 10}))
    ready(installed_cluster, namespace)
    # No node has this label: the new pods stay Pending, which waiting might cure, so the
    # operator waits for the Deployment controller's verdict.
    patch_spec(installed_cluster, namespace, {"nodeSelector": {"mlmodel.test/no-such-node": "x"}})
    wait_until(
        lambda: condition(installed_cluster.get("mlmodel", "sentiment", namespace), "Degraded").get("reason")
        == "Unschedulable",
        timeout=60,
        what="Degraded Unschedulable before the deadline",
    )
    found = rolled_back(installed_cluster, namespace, generation=2)
    assert condition(found, "RolledBack")["reason"] == "ProgressDeadlineExceeded"
    pod_spec = installed_cluster.get("deployment", "sentiment", namespace)["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod_spec or "mlmodel.test/no-such-node" not in pod_spec["nodeSelector"]


def test_auto_rollback_off_leaves_the_failed_generation_failing(
    installed_cluster: Cluster, run_operator, namespace: str
):
    run_operator(namespaces=[namespace], **FAST_DIAGNOSIS)
    installed_cluster.apply(mlmodel("sentiment", namespace, rollout={"autoRollback": False}))
    ready(installed_cluster, namespace)
    patch_spec(installed_cluster, namespace, {"runtime": {"image": CRASHING_IMAGE}})
    found = wait_until(
        lambda: condition(m := installed_cluster.get("mlmodel", "sentiment", namespace), "Degraded").get("reason")
        == "CrashLoopBackOff"
        and m,
        timeout=60,
        what="Degraded CrashLoopBackOff",
    )
    assert condition(found, "RolledBack") == {}
    assert "rolledBack" not in found["status"]["rollout"]
    assert image(installed_cluster, namespace) == CRASHING_IMAGE
