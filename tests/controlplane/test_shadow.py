"""spec.shadow on the real control plane: the candidate's Deployment and Service made beside the
model and removed with the spec, and status.shadow read by the operator from the serving pods,
for both examples against a model retrained by their own train.py.

The pods are KWOK's (unready until the test marks them ready, as a kubelet would); real
`mlmodel serve` processes stand in for their containers on the pods' loopback IPs. KWOK's node
has no cluster DNS, so the served runtime is given the candidate pod's address instead of the
Service name its Deployment names (MLMODEL_SHADOW_URL=http://NAME-shadow:80)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from support.cluster import Cluster
from support.ports import wait_until
from support.retrain import EXAMPLES, digest, retrain

from controlplane.models import mlmodel
from controlplane.pods import RUNTIME_PORT, UNREADY_IMAGE, Runtime, mark_ready, wait_for_pods

pytestmark = pytest.mark.cluster
# example -> (rows the candidate is retrained on, one request, the rows it holds)
HOUSES = json.loads((EXAMPLES / "house-prices" / "request.json").read_text())
CASES = {
    "sentiment": (3000, lambda text: {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]
    }),
    "house-prices": (400, lambda _: HOUSES),
}  # fmt: skip
REVIEWS = [
    "A wonderful, moving film.", "Dreadful from the first minute.", "Fine, I suppose.",
    "The best thing I have seen this year.", "Two hours I will never get back.",
    "Not bad, not great, a bit long.", "I laughed, I cried, then I was bored.",
    "Its heart is in the right place, its script is not.",
]  # fmt: skip


@pytest.mark.parametrize("example", sorted(CASES))
def test_a_shadow_candidate_runs_beside_the_model_and_its_agreement_is_reported(
    installed_cluster: Cluster, run_operator, namespace: str, tmp_path: Path, example: str
):
    cluster = installed_cluster
    run_operator(
        namespaces=[namespace],
        MLMODEL_OPERATOR_POD_DIAGNOSIS_INTERVAL_SECONDS="0.5",
    )
    limit, request_for = CASES[example]
    retrain(example, limit, tmp_path / "retrained")
    served_artifact = EXAMPLES / example / "model.joblib"
    candidate_artifact = tmp_path / "retrained" / "model.joblib"
    cluster.apply(
        mlmodel(
            example, namespace,
            model={"uri": served_artifact.as_uri(), "sha256": digest(served_artifact)},
            runtime={"image": UNREADY_IMAGE},
            shadow={"model": {"uri": candidate_artifact.as_uri(), "sha256": digest(candidate_artifact)},
                    "sampleRate": 1.0, "tolerance": 0.05},
        )
    )  # fmt: skip
    wait_until(
        lambda: cluster.get("deployment", f"{example}-shadow", namespace)
        and cluster.get("service", f"{example}-shadow", namespace),
        timeout=60,
        what="the candidate's Deployment and Service",
    )
    served_deployment = cluster.get("deployment", example, namespace)
    env = {e["name"]: e.get("value") for e in served_deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLMODEL_SHADOW_URL"] == f"http://{example}-shadow:80"
    assert env["MLMODEL_SHADOW_MODEL_NAME"] == f"{example}-shadow"

    # The candidate's pod, then the served one mirroring to it.
    [candidate_pod] = wait_for_pods(cluster, namespace, f"{example}-shadow")
    [served_pod] = wait_for_pods(cluster, namespace, example)
    candidate, served = Runtime(tmp_path / "candidate"), Runtime(tmp_path / "served")
    try:
        candidate.start(cluster.get("deployment", f"{example}-shadow", namespace), candidate_pod)
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
        url = f"http://{served_pod['status']['podIP']}:{RUNTIME_PORT}/v2/models/{example}/infer"
        rows = 0
        for review in REVIEWS:
            request = request_for(review)
            assert httpx.post(url, json=request, timeout=10).status_code == 200
            rows += request["inputs"][0]["shape"][0]

        def reported() -> dict | None:
            shadow = (cluster.get("mlmodel", example, namespace).get("status") or {}).get("shadow") or {}
            counted = shadow.get("rows", {})
            return shadow if counted.get("agree", 0) + counted.get("disagree", 0) == rows else None

        shadow = wait_until(reported, timeout=60, what="status.shadow counting every mirrored row")
    finally:
        served.stop()
        candidate.stop()
    print(f"{example}: the retrained candidate agrees on {shadow['agreement']:.1%} of {rows} rows")
    assert shadow["requests"] == {"compared": len(REVIEWS), "failed": 0, "skipped": 0}
    assert shadow["name"] == f"{example}-shadow"
    assert shadow["modelShortDigest"] == digest(candidate_artifact)[:12]
    assert shadow["agreement"] == round(shadow["rows"]["agree"] / rows, 4)
    assert f"agrees on {shadow['agreement']:.1%} of {rows} rows" in shadow["message"]
    # A model retrained on fewer rows mostly agrees, and the figure is the runtime's own count.
    assert shadow["agreement"] >= 0.5

    # Dropped from the spec: the candidate and its status go.
    cluster.kubectl(
        "patch", "mlmodel", example, "-n", namespace, "--type=json",
        "-p", json.dumps([{"op": "remove", "path": "/spec/shadow"}]),
    )  # fmt: skip
    wait_until(
        lambda: cluster.get("deployment", f"{example}-shadow", namespace) is None
        and cluster.get("service", f"{example}-shadow", namespace) is None
        and "shadow" not in (cluster.get("mlmodel", example, namespace).get("status") or {}),
        timeout=60,
        what="the candidate deleted and status.shadow gone",
    )
    env = {
        e["name"]
        for e in cluster.get("deployment", example, namespace)["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert not any(name.startswith("MLMODEL_SHADOW_") for name in env)
