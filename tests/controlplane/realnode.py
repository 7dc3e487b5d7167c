"""The real-node session of the end-to-end tests: the runtime image, a cluster with a real node
(tests/cluster/node.sh), the operator, an artifact server on the pods' gateway, a load generator.
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

import numpy as np
import pytest
from support.cluster import (
    CLUSTER_SCRIPTS,
    OPERATOR_NAMESPACE,
    REPO_ROOT,
    Cluster,
    stop_cluster,
)
from support.operator import denied, operator_requests, start_operator
from support.ports import free_port, free_port_block

NODE_NAME = "mlmodel-node-0"
# The host's address on the node's bridge (tests/cluster/node.sh), which pods reach directly.
POD_GATEWAY = "10.244.0.1"
RUNTIME_IMAGE = "mlmodel-runtime:realnode"
HPA_DOWNSCALE_STABILIZATION_SECONDS = 30
BASE_IMAGE = os.environ.get("MLMODEL_TEST_BASE_IMAGE", "mlmodel-local/python:3.11-slim-bookworm")
GO_IMAGE = os.environ.get("MLMODEL_TEST_GO_IMAGE", "mlmodel-local/golang:1.26-bookworm")
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


@pytest.fixture(scope="session", name="runtime_image")
def fixture_runtime_image() -> str:
    """The runtime image from Dockerfile.runtime, on the local base (no registry is reachable)."""
    run("bash", str(REPO_ROOT / ".ci" / "start-docker.sh"))
    if BASE_IMAGE.startswith("mlmodel-local/"):
        run("bash", str(REPO_ROOT / ".ci" / "build-base-image.sh"), BASE_IMAGE)
        run("bash", str(REPO_ROOT / ".ci" / "build-go-image.sh"), GO_IMAGE)
    run(
        "docker",
        "build",
        "-q",
        "-f",
        str(REPO_ROOT / "Dockerfile.runtime"),
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        "--build-arg",
        f"GO_IMAGE={GO_IMAGE}",
        "-t",
        RUNTIME_IMAGE,
        str(REPO_ROOT),
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    return RUNTIME_IMAGE


@pytest.fixture(scope="session", name="node_cluster")
def fixture_node_cluster(
    tmp_path_factory: pytest.TempPathFactory, runtime_image: str
) -> Iterator[Cluster]:
    """A fresh cluster with a real node (and the runtime image in its containerd) and
    metrics-server."""
    if shutil.which("runc") is None or not Path("/usr/lib/cni/bridge").exists():
        pytest.fail("a real node needs runc and containernetworking-plugins (apt-get install)")
    directory = tmp_path_factory.mktemp("realnode")
    port = free_port_block(11)
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


@pytest.fixture(scope="session", name="artifacts")
def fixture_artifacts(
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


@pytest.fixture(scope="session", name="node_operator")
def fixture_node_operator(
    node_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """`mlmodel operator` with the install's ServiceAccount token, images never pulled."""
    operator = start_operator(
        node_cluster,
        tmp_path_factory.mktemp("operator"),
        MLMODEL_OPERATOR_POD_DIAGNOSIS_INTERVAL_SECONDS="1",
        MLMODEL_OPERATOR_RUNTIME_IMAGE=f"docker.io/library/{RUNTIME_IMAGE}",
        MLMODEL_OPERATOR_IMAGE_PULL_POLICY="Never",
    )
    try:
        yield
    finally:
        operator.stop()
    refused = denied(operator_requests(node_cluster, operator.started, operator.user))
    assert not refused, f"the API server denied the operator: {refused}\n{operator.log()[-5000:]}"


@pytest.fixture(name="namespace")
def fixture_namespace(
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
