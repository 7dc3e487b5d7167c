"""spec.shadow on the real control plane: the candidate's Deployment and Service made beside the
model and removed with the spec, and status.shadow read by the operator from the serving pods.

The pods are KWOK's (unready until the test marks them ready, as a kubelet would); real
`mlmodel serve` processes stand in for their containers on the pods' loopback IPs. KWOK's node
has no cluster DNS, so the served runtime is given the candidate pod's address instead of the
Service name its Deployment names (MLMODEL_SHADOW_URL=http://sentiment-shadow:80)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from support.cluster import REPO_ROOT, Cluster
from support.ports import wait_until

from controlplane.models import mlmodel
from controlplane.pods import RUNTIME_PORT, UNREADY_IMAGE, Runtime, mark_ready, wait_for_pods

pytestmark = pytest.mark.cluster
ARTIFACT = REPO_ROOT / "examples" / "sentiment" / "model.joblib"
SHA256 = ARTIFACT.with_name("model.joblib.sha256").read_text().split()[0]
REVIEWS = [
    "A wonderful, moving film.", "Dreadful from the first minute.", "Fine, I suppose.",
    "The best thing I have seen this year.", "Two hours I will never get back.",
]  # fmt: skip


def test_a_shadow_candidate_runs_beside_the_model_and_its_agreement_is_reported(
    installed_cluster: Cluster, run_operator, namespace: str, tmp_path: Path
):
    cluster = installed_cluster
    run_operator(
        namespaces=[namespace],
        MLMODEL_OPERATOR_POD_DIAGNOSIS_INTERVAL_SECONDS="0.5",
    )
    source = {"uri": ARTIFACT.as_uri(), "sha256": SHA256}
    cluster.apply(
        mlmodel(
            "sentiment", namespace, model=source, runtime={"image": UNREADY_IMAGE},
            shadow={"model": source, "sampleRate": 1.0},
        )
    )  # fmt: skip
    wait_until(
        lambda: cluster.get("deployment", "sentiment-shadow", namespace)
        and cluster.get("service", "sentiment-shadow", namespace),
        timeout=60,
        what="the candidate's Deployment and Service",
    )
    served_deployment = cluster.get("deployment", "sentiment", namespace)
    env = {e["name"]: e.get("value") for e in served_deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLMODEL_SHADOW_URL"] == "http://sentiment-shadow:80"
    assert env["MLMODEL_SHADOW_MODEL_NAME"] == "sentiment-shadow"

    # The candidate's pod, then the served one mirroring to it.
    [candidate_pod] = wait_for_pods(cluster, namespace, "sentiment-shadow")
    [served_pod] = wait_for_pods(cluster, namespace, "sentiment")
    candidate, served = Runtime(tmp_path / "candidate"), Runtime(tmp_path / "served")
    try:
        candidate.start(cluster.get("deployment", "sentiment-shadow", namespace), candidate_pod)
        served.start(
            served_deployment,
            served_pod,
            MLMODEL_SHADOW_URL=f"http://{candidate_pod['status']['podIP']}:{RUNTIME_PORT}",
        )
        mark_ready(cluster, candidate_pod)
        mark_ready(cluster, served_pod)
        for pod in (candidate_pod, served_pod):
            ready = f"http://{pod['status']['podIP']}:{RUNTIME_PORT}/v2/health/ready"
            wait_until(
                lambda ready=ready: httpx.get(ready, timeout=2).status_code == 200,
                timeout=60,
                what="the runtime to load its model",
            )
        url = f"http://{served_pod['status']['podIP']}:{RUNTIME_PORT}/v2/models/sentiment/infer"
        for review in REVIEWS:
            request = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [review]}]}
            assert httpx.post(url, json=request, timeout=10).status_code == 200

        def reported() -> dict | None:
            shadow = (cluster.get("mlmodel", "sentiment", namespace).get("status") or {}).get("shadow") or {}
            return shadow if shadow.get("rows", {}).get("agree") == len(REVIEWS) else None

        shadow = wait_until(reported, timeout=60, what="status.shadow counting every mirrored row")
    finally:
        served.stop()
        candidate.stop()
    assert shadow["agreement"] == 1.0
    assert shadow["requests"] == {"compared": len(REVIEWS), "failed": 0, "skipped": 0}
    assert shadow["name"] == "sentiment-shadow"
    assert shadow["modelShortDigest"] == SHA256[:12]
    assert "agrees on 100.0% of 5 rows" in shadow["message"]

    # Dropped from the spec: the candidate and its status go.
    cluster.kubectl(
        "patch", "mlmodel", "sentiment", "-n", namespace, "--type=json",
        "-p", json.dumps([{"op": "remove", "path": "/spec/shadow"}]),
    )  # fmt: skip
    wait_until(
        lambda: cluster.get("deployment", "sentiment-shadow", namespace) is None
        and cluster.get("service", "sentiment-shadow", namespace) is None
        and "shadow" not in (cluster.get("mlmodel", "sentiment", namespace).get("status") or {}),
        timeout=60,
        what="the candidate deleted and status.shadow gone",
    )
    env = {
        e["name"]
        for e in cluster.get("deployment", "sentiment", namespace)["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert not any(name.startswith("MLMODEL_SHADOW_") for name in env)
