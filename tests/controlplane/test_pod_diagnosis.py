"""Failing pods on the real control plane turn into the documented Degraded reasons.

KWOK's stages (tests/cluster/kwok/failing-pods.yaml) put pods whose image names a failure into
that state, as a kubelet would report it; a running but unready pod is asked why by the operator
over HTTP, and a real runtime answers on the pod's IP (KWOK gives pods loopback addresses).
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from support.cluster import REPO_ROOT, Cluster
from support.operator import operator_requests, utc_now
from support.ports import wait_until

from controlplane.models import condition, mlmodel
from controlplane.pods import (
    RUNTIME_PORT,
    UNREADY_IMAGE,
    Runtime,
    mark_ready,
    running_pods,
    wait_for_pods,
)

pytestmark = pytest.mark.cluster
FAST_DIAGNOSIS = {"MLMODEL_OPERATOR_POD_DIAGNOSIS_INTERVAL_SECONDS": "0.5"}


def degraded(cluster: Cluster, namespace: str, name: str = "sentiment") -> dict:
    return condition(cluster.get("mlmodel", name, namespace), "Degraded")


@pytest.mark.parametrize(
    "state,reason,says",
    [
        ("crashloop", "CrashLoopBackOff", "back-off"),
        ("imagepull", "ImagePullBackOff", "Back-off pulling image"),
        ("oomkilled", "OOMKilled", "raise spec.runtime.resources.limits.memory"),
    ],
)
def test_failing_pods_degrade_the_model_with_the_kubelet_reason(
    installed_cluster: Cluster, run_operator, namespace: str, state: str, reason: str, says: str
):
    run_operator(namespaces=[namespace], **FAST_DIAGNOSIS)
    installed_cluster.apply(
        mlmodel("sentiment", namespace, runtime={"image": f"kwok.test/failing/{state}:1"})
    )
    found = wait_until(
        lambda: (d := degraded(installed_cluster, namespace)).get("status") == "True" and d,
        timeout=60,
        what=f"Degraded {reason}",
    )
    assert found["reason"] == reason
    assert says in found["message"]
    stored = installed_cluster.get("mlmodel", "sentiment", namespace)
    assert condition(stored, "Ready")["status"] == "False"
    events = installed_cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"reason={reason}", "-o", "name"
    ).stdout
    assert events.strip(), f"no {reason} Event"


@pytest.fixture()
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    started = Runtime(tmp_path)
    yield started
    started.stop()


def test_a_wrong_sha256_reported_by_the_runtime_degrades_then_recovers(
    installed_cluster: Cluster, run_operator, namespace: str, runtime: Runtime
):
    cluster = installed_cluster
    wrong_sha = "ab" * 32
    artifact = REPO_ROOT / "examples" / "sentiment" / "model.joblib"
    good_sha = artifact.with_name("model.joblib.sha256").read_text().split()[0]
    operator = run_operator(namespaces=[namespace], **FAST_DIAGNOSIS)
    cluster.apply(
        mlmodel(
            "sentiment",
            namespace,
            model={"uri": artifact.as_uri(), "sha256": wrong_sha},
            runtime={"image": UNREADY_IMAGE},
        )
    )
    [pod] = wait_for_pods(cluster, namespace, "sentiment")
    runtime.start(cluster.get("deployment", "sentiment", namespace), pod)
    found = wait_until(
        lambda: (d := degraded(cluster, namespace)).get("status") == "True" and d,
        timeout=60,
        what="Degraded from the runtime's answer",
    )
    assert found["reason"] == "ArtifactUnavailable"
    # The runtime's own words: which check failed, and what to do.
    assert found["message"].startswith("ChecksumMismatch: ")
    assert wrong_sha in found["message"] and pod["metadata"]["name"] in found["message"]
    stored = cluster.get("mlmodel", "sentiment", namespace)
    assert condition(stored, "Ready")["reason"] == "ArtifactUnavailable"
    assert stored["status"]["lastFailure"]["reason"] == "ArtifactUnavailable"
    wait_until(
        lambda: cluster.kubectl(
            "get", "events", "-n", namespace, "-o", "name",
            "--field-selector", "reason=ArtifactUnavailable,type=Warning",
        ).stdout.strip(),
        what="a Warning event",
    )
    # Pods were listed by label, and only listed.
    pod_requests = [
        event
        for event in operator_requests(cluster, operator.started)
        if (event.get("objectRef") or {}).get("resource") == "pods"
    ]
    assert pod_requests and {event["verb"] for event in pod_requests} == {"list"}
    selectors = [
        parse_qs(urlsplit(event["requestURI"]).query).get("labelSelector", [""])[0] for event in pod_requests
    ]
    assert all("app.kubernetes.io/instance=sentiment" in selector.split(",") for selector in selectors), selectors

    # The user fixes the sha256: a new pod rolls out with it, and the model recovers.
    cluster.kubectl(
        "patch", "mlmodel", "sentiment", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"model": {"sha256": good_sha}}}),
    )
    fixed = wait_until(
        lambda: (d := cluster.get("deployment", "sentiment", namespace))
        and {"name": "MLMODEL_MODEL_SHA256", "value": good_sha}
        in d["spec"]["template"]["spec"]["containers"][0]["env"]
        and d,
        what="the deployment applied with the right sha256",
    )
    runtime.stop()
    new_pod = wait_until(
        lambda: next(
            (
                p
                for p in running_pods(cluster, namespace, "sentiment")
                if p["metadata"]["uid"] != pod["metadata"]["uid"]
            ),
            None,
        ),
        what="the new pod",
    )
    runtime.start(fixed, new_pod)
    # Not yet marked ready by the kubelet, but the runtime no longer reports a problem.
    wait_until(
        lambda: degraded(cluster, namespace).get("status") == "False", timeout=60, what="Degraded=False"
    )
    assert condition(cluster.get("mlmodel", "sentiment", namespace), "Ready")["status"] == "False"
    mark_ready(cluster, new_pod)
    cluster.kubectl("wait", "--for=condition=Ready", "mlmodel/sentiment", "-n", namespace, "--timeout=60s")


class Listener:
    """An HTTP server on a pod's IP and port that answers "not ready" and counts what it is asked."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.servers: list[http.server.ThreadingHTTPServer] = []

    def serve(self, host: str, port: int = RUNTIME_PORT) -> None:
        hits = self.hits

        class Answer(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                body = json.dumps({"ready": False, "reason": "ChecksumMismatch", "message": "x"}).encode()
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer((host, port), Answer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers.append(server)

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture()
def listener() -> Iterator[Listener]:
    started = Listener()
    yield started
    started.close()


def test_pod_states_without_http_probing(
    installed_cluster: Cluster, run_operator, namespace: str, listener: Listener
):
    """With probing off, no request reaches the pods; container states still explain."""
    cluster = installed_cluster
    run_operator(
        namespaces=[namespace],
        resync=0.5,
        MLMODEL_OPERATOR_POD_DIAGNOSIS_INTERVAL_SECONDS="0",
        MLMODEL_OPERATOR_POD_PROBE_ENABLED="false",
    )
    cluster.apply(mlmodel("sentiment", namespace, runtime={"image": UNREADY_IMAGE}))
    # Running, unready, and something on its http port that would say why if it were asked.
    [pod] = wait_for_pods(cluster, namespace, "sentiment")
    listener.serve(pod["status"]["podIP"])
    since = utc_now()

    def pod_lists() -> int:
        return sum(
            1
            for event in operator_requests(cluster, since)
            if (event.get("objectRef") or {}).get("resource") == "pods" and event["verb"] == "list"
        )

    wait_until(lambda: pod_lists() >= 2, what="pods listed by two resyncs")
    assert listener.hits == []
    assert degraded(cluster, namespace).get("status") == "False"

    # The runtime container now runs out of memory, over and over (KWOK's OOMKilled stage).
    cluster.kubectl(
        "patch", "mlmodel", "sentiment", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"runtime": {"image": "kwok.test/failing/oomkilled:1"}}}),
    )
    [oom] = wait_for_pods(cluster, namespace, "sentiment", image="kwok.test/failing/oomkilled:1")
    listener.serve(oom["status"]["podIP"])
    found = wait_until(
        lambda: (d := degraded(cluster, namespace)).get("reason") == "OOMKilled" and d,
        timeout=60,
        what="Degraded OOMKilled",
    )
    assert found["status"] == "True"
    assert "limits.memory" in found["message"]
    assert listener.hits == []
