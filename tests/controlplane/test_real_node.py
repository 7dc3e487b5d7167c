"""End to end on a real node: pods of the runtime image serve predictions through the Service.

The session starts its own cluster with MLMODEL_CLUSTER_NODE=real (tests/cluster/node.sh:
containerd, runc, a CNI bridge, kubelet and kube-proxy), imports the runtime image built from
Dockerfile.runtime, and runs the operator with the install's ServiceAccount. Artifacts are served
over HTTP from the host on the pods' gateway address; predictions go to the Service's ClusterIP.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import joblib
import numpy as np
import pandas as pd
import pytest
from support.cluster import (
    CLUSTER_SCRIPTS,
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    REPO_ROOT,
    Cluster,
    free_port_block,
    stop_cluster,
)
from support.operator import OPERATOR_USER, denied, operator_command, operator_requests, utc_now
from support.ports import free_port, wait_until

from controlplane.models import condition, mlmodel

# The first test also pays for the runtime image and the node's binaries (minutes on 2 cores).
pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.timeout(2400)]

NODE_NAME = "mlmodel-node-0"
# The host's address on the node's bridge (tests/cluster/node.sh), which pods reach directly.
POD_GATEWAY = "10.244.0.1"
RUNTIME_IMAGE = "mlmodel-runtime:realnode"
BASE_IMAGE = os.environ.get("MLMODEL_TEST_BASE_IMAGE", "mlmodel-local/python:3.11-slim-bookworm")
EXAMPLES = REPO_ROOT / "examples"
POSITIVE = "A wonderful film: moving, funny and beautifully acted."
NEGATIVE = "Awful. Boring plot, wooden acting, a waste of two hours."


def run(*command: str, timeout: float = 1800, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    assert result.returncode == 0, (
        f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-4000:]}"
    )
    return result


@pytest.fixture(scope="session")
def runtime_image() -> str:
    """The runtime image from Dockerfile.runtime, on the local base (no registry is reachable)."""
    run("bash", str(REPO_ROOT / ".ci" / "start-docker.sh"))
    if BASE_IMAGE.startswith("mlmodel-local/"):
        run("bash", str(REPO_ROOT / ".ci" / "build-base-image.sh"), BASE_IMAGE)
    run(
        "docker",
        "build",
        "-q",
        "-f",
        str(REPO_ROOT / "Dockerfile.runtime"),
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        "-t",
        RUNTIME_IMAGE,
        str(REPO_ROOT),
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    return RUNTIME_IMAGE


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory, runtime_image: str) -> Iterator[Cluster]:
    """A fresh cluster with a real node (and the runtime image in its containerd)."""
    if shutil.which("runc") is None or not Path("/usr/lib/cni/bridge").exists():
        pytest.fail("a real node needs runc and containernetworking-plugins (apt-get install)")
    directory = tmp_path_factory.mktemp("realnode")
    port = free_port_block(10)
    environment = {
        **os.environ,
        "MLMODEL_CLUSTER_PORT": str(port),
        "MLMODEL_CLUSTER_NODE": "real",
        "MLMODEL_CLUSTER_IMAGES": runtime_image,
    }
    result = subprocess.run(
        ["bash", str(CLUSTER_SCRIPTS / "up.sh"), str(directory)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    cluster = Cluster(directory=directory, port=port)
    try:
        assert result.returncode == 0, (
            f"the cluster with a real node did not start:\n{result.stderr}"
        )
        cluster.kubectl("apply", "-k", str(REPO_ROOT / "operator" / "deploy"))
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "crd/mlmodels.serving.mlmodel.io",
            "--timeout=60s",
        )
        # The operator runs as a local process below; its own image is not on the node.
        cluster.kubectl(
            "scale", "deployment/mlmodel-operator", "-n", OPERATOR_NAMESPACE, "--replicas=0"
        )
        yield cluster
    finally:
        stop_cluster(cluster)


class ArtifactServer:
    """A file server on the pods' gateway address; remembers who fetched what."""

    def __init__(self, root: Path) -> None:
        self.fetches: list[tuple[str, str]] = []
        fetches = self.fetches

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:
                fetches.append((self.client_address[0], self.path))

        self.server = http.server.ThreadingHTTPServer((POD_GATEWAY, free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def uri(self, path: str) -> str:
        return f"http://{POD_GATEWAY}:{self.server.server_address[1]}/{path}"


@pytest.fixture(scope="session")
def artifacts(
    node_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ArtifactServer]:
    root = tmp_path_factory.mktemp("artifacts")
    for example in ("sentiment", "house-prices"):
        for version in ("v1", "v2"):  # the same bytes under two versions' paths
            (root / example / version).mkdir(parents=True)
            shutil.copy(
                EXAMPLES / example / "model.joblib", root / example / version / "model.joblib"
            )
    server = ArtifactServer(root)
    yield server
    server.server.shutdown()


@pytest.fixture(scope="session")
def node_operator(
    node_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """`mlmodel operator` with the install's ServiceAccount token, images never pulled."""
    home = tmp_path_factory.mktemp("operator")
    token = node_cluster.token(OPERATOR_SERVICE_ACCOUNT, OPERATOR_NAMESPACE)
    kubeconfig = node_cluster.kubeconfig_for_token(home / "kubeconfig", token)
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLMODEL_", "KUBERNETES_", "KOPF_"))
    }
    environment.update(
        KUBECONFIG=str(kubeconfig),
        HOME=str(home),
        PYTHONUNBUFFERED="1",
        MLMODEL_OPERATOR_RESYNC_INTERVAL_SECONDS="2",
        MLMODEL_OPERATOR_CRD_CHECK_INTERVAL_SECONDS="0",
        MLMODEL_OPERATOR_METRICS_PORT=str(free_port()),
        MLMODEL_OPERATOR_LOG_FORMAT="text",
        MLMODEL_OPERATOR_POD_DIAGNOSIS_INTERVAL_SECONDS="1",
        MLMODEL_OPERATOR_RUNTIME_IMAGE=f"docker.io/library/{RUNTIME_IMAGE}",
        MLMODEL_OPERATOR_IMAGE_PULL_POLICY="Never",
    )
    begun = utc_now()
    log_path = home / "operator.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [*operator_command(), "--all-namespaces", "--standalone", "--verbose"],
            env=environment,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    refused = denied(operator_requests(node_cluster, begun, OPERATOR_USER))
    assert not refused, (
        f"the API server denied the operator: {refused}\n{log_path.read_text()[-5000:]}"
    )


@pytest.fixture()
def namespace(
    node_cluster: Cluster, node_operator: None, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A namespace of this test's own, held to the restricted Pod Security profile."""
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower().removeprefix("test_"))[:40]
    name = f"{stem.strip('-')}-{uuid.uuid4().hex[:5]}"
    node_cluster.create_namespace(name, restricted=True)
    yield name
    # The models go, so their pods stop; the namespace stays (the operator, which runs all
    # session, would be refused its Events in a terminating one). The cluster goes at the end.
    node_cluster.kubectl("delete", "mlmodel", "--all", "-n", name, "--wait=false", check=False)


def example_model(
    name: str, namespace: str, example: str, uri: str, *, replicas: int = 1, **overrides: Any
) -> dict[str, Any]:
    """The example's MLModel, its artifact at `uri`, without autoscaling or a ServiceMonitor."""
    sha256 = (EXAMPLES / example / "model.joblib.sha256").read_text().split()[0]
    spec = {
        "model": {"uri": uri, "sha256": sha256, "format": "sklearn", "version": "1.0.0"},
        "runtime": {
            "resources": {
                "requests": {"cpu": "100m", "memory": "256Mi"},
                "limits": {"memory": "512Mi"},
            },
            "workers": 1,
        },
        "replicas": replicas,
        "service": {"port": 80},
    }
    spec.update(overrides)
    return mlmodel(name, namespace, **spec)


def ready(cluster: Cluster, namespace: str, name: str, timeout: float = 300) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        stored = cluster.get("mlmodel", name, namespace)
        return stored if condition(stored, "Ready").get("status") == "True" else None

    try:
        return wait_until(check, timeout=timeout, what=f"{name} Ready")
    except Exception:
        pods = cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
        events = cluster.kubectl("get", "events", "-n", namespace, check=False).stdout
        print(f"{json.dumps(cluster.get('mlmodel', name, namespace), indent=1)}\n{pods}\n{events}")
        raise


def post(
    host: str, path: str, body: dict[str, Any], port: int = 80, timeout: float = 10
) -> tuple[int, Any]:
    """One request on a connection of its own (kube-proxy balances connections, not requests)."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        text = response.read()
        return response.status, json.loads(text) if text else None
    finally:
        connection.close()


def cluster_ip(cluster: Cluster, namespace: str, name: str) -> str:
    """The Service's ClusterIP, once kube-proxy routes it: Ready pods reach its iptables rules
    through the EndpointSlice a moment later (until then the rules reject connections)."""
    service = cluster.get("service", name, namespace)
    assert service is not None, f"no Service {name}"
    host = service["spec"]["clusterIP"]

    def answers() -> bool:
        connection = http.client.HTTPConnection(host, 80, timeout=5)
        try:
            connection.request("GET", "/v2/health/ready")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    wait_until(answers, timeout=60, what=f"Service {name} routed by kube-proxy")
    return host


def house_rows() -> tuple[list[str], list[list[float]]]:
    request = json.loads((EXAMPLES / "house-prices" / "request.json").read_text())
    names = [item["name"] for item in request["inputs"]]
    columns = [item["data"] for item in request["inputs"]]
    return names, [list(row) for row in zip(*columns, strict=True)]


def test_examples_are_ready_on_real_pods_and_answer_through_the_cluster_ip(
    node_cluster: Cluster, artifacts: ArtifactServer, namespace: str
):
    node_cluster.apply(
        example_model(
            "sentiment", namespace, "sentiment", artifacts.uri("sentiment/v1/model.joblib")
        ),
        example_model(
            "house-prices", namespace, "house-prices", artifacts.uri("house-prices/v1/model.joblib")
        ),
    )
    for name in ("sentiment", "house-prices"):
        ready(node_cluster, namespace, name)
    pods = node_cluster.list("pods", namespace)
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] == NODE_NAME
        (status,) = pod["status"]["containerStatuses"]
        assert status["ready"] and status["containerID"].startswith("containerd://"), status
        assert status["imageID"], status
        # Fetched from the host over HTTP by the pod itself, from its own address.
        assert any(client == pod["status"]["podIP"] for client, _ in artifacts.fetches), (
            artifacts.fetches
        )

    sentiment_ip = cluster_ip(node_cluster, namespace, "sentiment")
    code, body = post(
        sentiment_ip,
        "/v2/models/sentiment/infer",
        {
            "inputs": [
                {"name": "text", "shape": [2], "datatype": "BYTES", "data": [POSITIVE, NEGATIVE]}
            ]
        },
    )
    assert code == 200, body
    assert body["model_name"] == "sentiment" and body["model_version"] == "1.0.0"
    assert body["outputs"][0]["data"] == ["positive", "negative"]
    code, body = post(
        sentiment_ip, "/v1/models/sentiment:predict", {"instances": [NEGATIVE, POSITIVE]}
    )
    assert code == 200, body
    assert body["predictions"] == ["negative", "positive"]

    # The prices the example's model gives in this process, for the example's request.
    names, rows = house_rows()
    model = joblib.load(EXAMPLES / "house-prices" / "model.joblib")
    expected = [float(x) for x in model.predict(pd.DataFrame(rows, columns=names))]
    houses_ip = cluster_ip(node_cluster, namespace, "house-prices")
    request = json.loads((EXAMPLES / "house-prices" / "request.json").read_text())
    code, body = post(houses_ip, "/v2/models/house-prices/infer", request)
    assert code == 200, body
    assert body["outputs"][0]["data"] == pytest.approx(expected, rel=1e-6)
    code, body = post(houses_ip, "/v1/models/house-prices:predict", {"instances": rows})
    assert code == 200, body
    assert body["predictions"] == pytest.approx(expected, rel=1e-6)


class Load:
    """Steady requests at a Service from a few threads, each request on a new connection."""

    def __init__(self, host: str, path: str, body: dict[str, Any], threads: int = 4) -> None:
        self.host, self.path, self.body = host, path, body
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.versions: dict[str, int] = {}
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(threads)]

    def loop(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                code, body = post(self.host, self.path, self.body)
                outcome = None if code == 200 else f"HTTP {code}: {body}"
            except (OSError, http.client.HTTPException) as error:
                outcome, body = f"{type(error).__name__}: {error}", None
            elapsed = time.monotonic() - started
            with self.lock:
                self.latencies.append(elapsed)
                if outcome:
                    self.errors.append(outcome)
                else:
                    version = body.get("model_version", "")
                    self.versions[version] = self.versions.get(version, 0) + 1

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def p99(self) -> float:
        return float(np.percentile(self.latencies, 99))


def test_rolling_update_under_load_loses_no_request(
    node_cluster: Cluster, artifacts: ArtifactServer, namespace: str
):
    model = example_model(
        "sentiment", namespace, "sentiment", artifacts.uri("sentiment/v1/model.joblib"), replicas=2
    )
    node_cluster.apply(model)
    ready(node_cluster, namespace, "sentiment")
    host = cluster_ip(node_cluster, namespace, "sentiment")
    request = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [POSITIVE]}]}
    old_pods = {pod["metadata"]["name"] for pod in node_cluster.list("pods", namespace)}

    with Load(host, "/v2/models/sentiment/infer", request) as load:
        time.sleep(3)  # steady state before the rollout
        model["spec"]["model"].update(
            uri=artifacts.uri("sentiment/v2/model.joblib"), version="1.1.0"
        )
        node_cluster.apply(model)
        rolled_at = time.monotonic()

        def rolled_out() -> bool:
            deployment = node_cluster.get("deployment", "sentiment", namespace) or {}
            status = deployment.get("status", {})
            pods = {pod["metadata"]["name"] for pod in node_cluster.list("pods", namespace)}
            return (
                status.get("observedGeneration") == deployment["metadata"]["generation"]
                and status.get("updatedReplicas")
                == status.get("replicas")
                == status.get("readyReplicas")
                == 2
                and not pods & old_pods
            )

        wait_until(rolled_out, timeout=300, what="the rollout to finish")
        rollout_seconds = time.monotonic() - rolled_at
        time.sleep(3)  # and steady again on the new pods

    sent = len(load.latencies)
    print(
        f"rolling update under load: {sent} requests sent, {len(load.errors)} errors, "
        f"p99 {load.p99() * 1000:.0f} ms, rollout {rollout_seconds:.0f} s, versions {load.versions}"
    )
    assert not load.errors, load.errors[:10]
    assert sent > 100
    # Both versions answered: the load ran across the whole rollout.
    assert load.versions.get("1.0.0") and load.versions.get("1.1.0"), load.versions
    assert (
        condition(node_cluster.get("mlmodel", "sentiment", namespace), "Ready")["status"] == "True"
    )


def test_wrong_sha256_degrades_with_the_runtimes_own_words(
    node_cluster: Cluster, artifacts: ArtifactServer, namespace: str
):
    model = example_model(
        "sentiment", namespace, "sentiment", artifacts.uri("sentiment/v1/model.joblib")
    )
    wrong = "0" * 64
    model["spec"]["model"]["sha256"] = wrong

    node_cluster.apply(model)

    def degraded() -> dict[str, Any] | None:
        found = condition(node_cluster.get("mlmodel", "sentiment", namespace), "Degraded")
        return found if found.get("status") == "True" else None

    found = wait_until(degraded, timeout=240, what="Degraded")
    assert found["reason"] == "ArtifactUnavailable", found
    # The runtime's sentence (runtime/mlmodel_runtime/artifacts/errors.py), read from its
    # /v2/health/ready on the pod's IP by the operator.
    assert f"but spec.model.sha256 is {wrong}" in found["message"], found
    actual = (EXAMPLES / "sentiment" / "model.joblib.sha256").read_text().split()[0]
    assert f"has sha256 {actual}" in found["message"], found
    assert (
        condition(node_cluster.get("mlmodel", "sentiment", namespace), "Ready")["status"] == "False"
    )


def test_a_container_over_its_memory_limit_is_oomkilled(
    node_cluster: Cluster, artifacts: ArtifactServer, namespace: str
):
    model = example_model(
        "sentiment",
        namespace,
        "sentiment",
        artifacts.uri("sentiment/v1/model.joblib"),
        runtime={
            "resources": {
                "requests": {"cpu": "100m", "memory": "24Mi"},
                "limits": {"memory": "24Mi"},
            },
            "workers": 1,
        },
    )
    node_cluster.apply(model)

    def oomkilled() -> dict[str, Any] | None:
        found = condition(node_cluster.get("mlmodel", "sentiment", namespace), "Degraded")
        return found if found.get("reason") == "OOMKilled" else None

    found = wait_until(oomkilled, timeout=240, what="Degraded OOMKilled")
    assert found["status"] == "True"
    assert "raise spec.runtime.resources.limits.memory" in found["message"], found
    (pod,) = node_cluster.list("pods", namespace)
    (status,) = pod["status"]["containerStatuses"]
    terminated = (status.get("lastState") or {}).get("terminated") or status["state"].get(
        "terminated"
    )
    assert terminated["reason"] == "OOMKilled" and terminated["exitCode"] == 137, status


def test_restricted_pod_security_is_enforced_and_the_runtime_pods_start(
    node_cluster: Cluster, artifacts: ArtifactServer, namespace: str
):
    labels = node_cluster.get("namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    # Enforced: a root pod is refused by the server in this namespace...
    refused = node_cluster.kubectl(
        "run",
        "root",
        "-n",
        namespace,
        f"--image=docker.io/library/{RUNTIME_IMAGE}",
        "--image-pull-policy=Never",
        "--restart=Never",
        check=False,
    )
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused
    # ...and the operator's pods run there, for real.
    node_cluster.apply(
        example_model(
            "sentiment", namespace, "sentiment", artifacts.uri("sentiment/v1/model.joblib")
        )
    )
    ready(node_cluster, namespace, "sentiment")
    (pod,) = node_cluster.list("pods", namespace)
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] is True
