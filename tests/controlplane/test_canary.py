"""spec.canary on the real control plane: the candidate's pods behind the model's one Service
beside the served ones, analysed from both runtimes' own metrics, ready to promote or scaled away.

The pods are KWOK's (unready until the test marks them ready, as a kubelet would); real
`mlmodel serve` processes stand in for their containers on the pods' loopback IPs, and the test
sends the traffic to each pod, as kube-proxy would spread it over the Service's endpoints. With
the Gateway API's CRD applied, the HTTPRoute the real server stores weighs the two Services."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from support.cluster import REPO_ROOT, Cluster, httproute_crd_installed
from support.ports import wait_until

from controlplane.models import condition, mlmodel
from controlplane.pods import RUNTIME_PORT, UNREADY_IMAGE, Runtime, mark_ready, running_pods

pytestmark = pytest.mark.cluster
ARTIFACT = REPO_ROOT / "examples" / "sentiment" / "model.joblib"
SHA256 = ARTIFACT.with_name("model.joblib.sha256").read_text().split()[0]
REVISION = "serving.mlmodel.io/revision"
FAST = {"MLMODEL_OPERATOR_POD_DIAGNOSIS_INTERVAL_SECONDS": "0.5"}
REQUEST = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a fine film"]}]}


WINDOW_SECONDS = 10


def canaried(namespace: str, weight: int = 50, **spec) -> dict:
    source = {"uri": ARTIFACT.as_uri(), "sha256": SHA256}
    return mlmodel(
        "sentiment", namespace, model=source, runtime={"image": UNREADY_IMAGE}, replicas=1,
        canary={"model": source, "weight": weight,
                "analysis": {"windowSeconds": WINDOW_SECONDS, "minRequests": 20}},
        **spec,
    )  # fmt: skip


def pods_by_revision(cluster: Cluster, namespace: str) -> dict[str, dict]:
    """The stable and the canary pod, once both run."""

    def both() -> dict[str, dict] | None:
        found = {
            (pod["metadata"]["labels"].get(REVISION) or "stable"): pod
            for pod in running_pods(cluster, namespace, "sentiment")
        }
        return found if set(found) == {"stable", "canary"} else None

    return wait_until(both, timeout=60, what="a stable and a canary pod")


def canary_status(cluster: Cluster, namespace: str) -> dict:
    return (cluster.get("mlmodel", "sentiment", namespace).get("status") or {}).get("canary") or {}


def test_a_canary_like_the_served_model_takes_its_share_and_is_ready_to_promote(
    installed_cluster: Cluster, run_operator, namespace: str, tmp_path
):
    cluster = installed_cluster
    run_operator(namespaces=[namespace], **FAST)
    cluster.apply(canaried(namespace))
    applied = time.monotonic()
    pods = pods_by_revision(cluster, namespace)
    runtimes = {revision: Runtime(tmp_path / revision) for revision in pods}
    try:
        for revision, pod in pods.items():
            name = "sentiment-canary" if revision == "canary" else "sentiment"
            runtimes[revision].start(cluster.get("deployment", name, namespace), pod)
            ready = f"http://{pod['status']['podIP']}:{RUNTIME_PORT}/v2/health/ready"
            wait_until(lambda ready=ready: httpx.get(ready, timeout=2).status_code == 200,
                       timeout=60, what=f"the {revision} runtime to load")  # fmt: skip
            if revision == "canary":
                # A candidate slower to load than the window is long (a large artifact) is not
                # failed for it: the window opens once a canary pod is ready.
                time.sleep(max(0.0, applied + WINDOW_SECONDS + 2 - time.monotonic()))
                waiting = canary_status(cluster, namespace)
                assert waiting.get("verdict") == "Analysing", waiting
                assert "waiting for a ready canary pod" in waiting["message"], waiting
            mark_ready(cluster, pod)
        # The model's one Service selects both revisions' pods (KWOK's loopback pod IPs are not
        # valid EndpointSlice addresses, so the selection is checked rather than the slices).
        selector = cluster.get("service", "sentiment", namespace)["spec"]["selector"]
        selected = cluster.list("pods", namespace, ",".join(f"{k}={v}" for k, v in selector.items()))
        assert {pod["metadata"]["name"] for pod in selected} == {
            pod["metadata"]["name"] for pod in pods.values()
        }
        # Both revisions answer in turn, as kube-proxy spreads connections over the endpoints.
        urls = {
            revision: f"http://{pod['status']['podIP']}:{RUNTIME_PORT}/v2/models/sentiment/infer"
            for revision, pod in pods.items()
        }
        for _ in range(200):
            for revision, url in urls.items():
                response = httpx.post(url, json=REQUEST, timeout=10)
                assert response.status_code == 200, response.text
                assert response.headers["x-mlmodel-revision"] == revision
        found = wait_until(
            lambda: (c := canary_status(cluster, namespace)).get("verdict") in ("Passed", "Failed") and c,
            timeout=90,
            what="the canary's verdict",
        )
    finally:
        for runtime in runtimes.values():
            runtime.stop()
    assert found["verdict"] == "Passed", found
    assert found["candidate"]["requests"] >= 20 and found["stable"]["requests"] >= 20, found
    assert found["replicas"] == {"stable": 1, "canary": 1} and found["podShare"] == 0.5
    stored = cluster.get("mlmodel", "sentiment", namespace)
    canary_condition = condition(stored, "Canary")
    assert (canary_condition["status"], canary_condition["reason"]) == ("True", "ReadyToPromote")
    assert "ready to promote" in canary_condition["message"]
    assert condition(stored, "Ready")["status"] == "True"


def test_a_canary_whose_pods_never_become_ready_fails_and_is_scaled_away(
    installed_cluster: Cluster, run_operator, namespace: str
):
    cluster = installed_cluster
    run_operator(namespaces=[namespace], **FAST)
    # The Deployment controller gives up on the canary's pods after the rollout's deadline.
    cluster.apply(canaried(namespace, rollout={"progressDeadlineSeconds": 10}))
    pods = pods_by_revision(cluster, namespace)
    mark_ready(cluster, pods["stable"])  # the served model serves; the candidate never comes up
    found = wait_until(
        lambda: (c := canary_status(cluster, namespace)).get("verdict") == "Failed" and c,
        timeout=90,
        what="the canary failed",
    )
    assert "no canary pod became ready" in found["message"], found
    assert "progressing" in found["message"], found  # the Deployment controller's own words
    assert found["replicas"]["canary"] == 0
    wait_until(
        lambda: cluster.get("deployment", "sentiment-canary", namespace)["spec"]["replicas"] == 0,
        timeout=30,
        what="the failed canary scaled to zero",
    )
    stored = cluster.get("mlmodel", "sentiment", namespace)
    assert (condition(stored, "Canary")["status"], condition(stored, "Canary")["reason"]) == (
        "False", "CanaryFailed",
    )  # fmt: skip
    assert condition(stored, "Ready")["status"] == "True"  # the served model is not touched
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=CanaryFailed", "-o", "json"
    ).stdout
    assert json.loads(events)["items"], "no CanaryFailed Event"

    # Another canary (a new weight) is tried again.
    cluster.kubectl(
        "patch", "mlmodel", "sentiment", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"canary": {"weight": 60}}}),
    )  # fmt: skip
    wait_until(
        lambda: cluster.get("deployment", "sentiment-canary", namespace)["spec"]["replicas"] == 2
        and canary_status(cluster, namespace).get("verdict") == "Analysing",
        timeout=60,
        what="the new canary running and analysed",
    )
    # Dropped from the spec: its Deployment goes.
    cluster.kubectl(
        "patch", "mlmodel", "sentiment", "-n", namespace, "--type=json",
        "-p", json.dumps([{"op": "remove", "path": "/spec/canary"}]),
    )  # fmt: skip
    wait_until(
        lambda: cluster.get("deployment", "sentiment-canary", namespace) is None
        and "canary" not in (cluster.get("mlmodel", "sentiment", namespace).get("status") or {})
        and condition(cluster.get("mlmodel", "sentiment", namespace), "Canary") == {},
        timeout=60,
        what="the canary's Deployment, status and condition gone",
    )


def test_a_canary_with_a_wrong_sha256_fails_at_once_and_the_served_model_is_not_blamed(
    installed_cluster: Cluster, run_operator, namespace: str, tmp_path
):
    cluster = installed_cluster
    run_operator(namespaces=[namespace], **FAST)
    model = canaried(namespace)
    wrong = "ab" * 32
    model["spec"]["canary"]["model"]["sha256"] = wrong
    cluster.apply(model)
    pods = pods_by_revision(cluster, namespace)
    # The served model's pod is still unready (its Deployment unsettled, so the operator looks
    # for a cause among its pods); the canary's runtime refuses the artifact.
    runtime = Runtime(tmp_path / "canary")
    try:
        runtime.start(cluster.get("deployment", "sentiment-canary", namespace), pods["canary"])
        found = wait_until(
            lambda: (c := canary_status(cluster, namespace)).get("verdict") == "Failed" and c,
            timeout=60,
            what="the canary failed from its runtime's answer",
        )
        stored = cluster.get("mlmodel", "sentiment", namespace)
    finally:
        runtime.stop()
    # Long before the rollout's progress deadline (600 s), in the runtime's own words.
    assert found["message"].startswith("the canary's pods fail: ArtifactUnavailable: ChecksumMismatch"), found
    assert wrong in found["message"] and pods["canary"]["metadata"]["name"] in found["message"]
    # The candidate's pods share the model's selector, but their failure is not the served model's.
    degraded = condition(stored, "Degraded")
    assert degraded.get("reason") != "ArtifactUnavailable", degraded
    assert (condition(stored, "Canary")["status"], condition(stored, "Canary")["reason"]) == (
        "False", "CanaryFailed",
    )  # fmt: skip
    wait_until(
        lambda: cluster.get("deployment", "sentiment-canary", namespace)["spec"]["replicas"] == 0,
        timeout=30,
        what="the failed canary scaled to zero",
    )


def test_with_the_gateway_api_the_httproute_weighs_the_canary_exactly(
    installed_cluster: Cluster, run_operator, namespace: str
):
    cluster = installed_cluster
    with httproute_crd_installed(cluster):
        run_operator(namespaces=[namespace], **FAST)
        model = canaried(namespace, weight=10)
        model["spec"]["gateway"] = {"parentRefs": [{"name": "public", "namespace": "gateways"}]}
        cluster.apply(model)

        def backends() -> list[tuple[str, int]]:
            route = cluster.get("httproute", "sentiment", namespace) or {"spec": {"rules": [{}]}}
            return [(ref["name"], ref["weight"]) for ref in route["spec"]["rules"][0].get("backendRefs") or ()]

        wait_until(
            lambda: backends() == [("sentiment", 90), ("sentiment-canary", 10)],
            timeout=60,
            what="the HTTPRoute weighing 90/10",
        )
        canary_service = wait_until(
            lambda: cluster.get("service", "sentiment-canary", namespace), timeout=30, what="the canary's Service"
        )
        # Each Service selects its own revision's pods only.
        for service, revision in ((canary_service, "canary"), (cluster.get("service", "sentiment", namespace), None)):
            selector = ",".join(f"{k}={v}" for k, v in service["spec"]["selector"].items())
            selected = wait_until(
                lambda selector=selector: cluster.list("pods", namespace, selector), timeout=60, what="pods"
            )
            assert {pod["metadata"]["labels"].get(REVISION) for pod in selected} == {revision}
        assert wait_until(
            lambda: canary_status(cluster, namespace).get("split"), timeout=30, what="status.canary"
        ) == "HTTPRoute"
        cluster.kubectl(
            "patch", "mlmodel", "sentiment", "-n", namespace, "--type=json",
            "-p", json.dumps([{"op": "remove", "path": "/spec/canary"}]),
        )  # fmt: skip
        wait_until(
            lambda: backends() == [("sentiment", 1)]
            and cluster.get("service", "sentiment-canary", namespace) is None
            and cluster.get("deployment", "sentiment-canary", namespace) is None,
            timeout=60,
            what="the route back to the model alone, the canary's Service and Deployment gone",
        )
