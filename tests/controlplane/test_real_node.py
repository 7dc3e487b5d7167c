"""End to end on a real node: pods of the runtime image serve predictions through the Service.

The session (controlplane/realnode.py) starts its own cluster with MLMODEL_CLUSTER_NODE=real
(tests/cluster/node.sh: containerd, runc, a CNI bridge, kubelet and kube-proxy), imports the
runtime image built from Dockerfile.runtime, and runs the operator with the install's
ServiceAccount. Artifacts are served over HTTP from the host on the pods' gateway address;
predictions go to the Service's ClusterIP.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
import pytest
from support.cluster import CLUSTER_SCRIPTS, REPO_ROOT, Cluster
from support.ports import free_port_block, wait_until

from controlplane.models import condition, mlmodel
from controlplane.realnode import (  # noqa: F401  (the real-node session's fixtures)
    EXAMPLES,
    HPA_DOWNSCALE_STABILIZATION_SECONDS,
    NEGATIVE,
    NODE_NAME,
    POSITIVE,
    RUNTIME_IMAGE,
    ArtifactServer,
    Load,
    fixture_artifacts,
    fixture_namespace,
    fixture_node_cluster,
    fixture_node_operator,
    fixture_runtime_image,
    post,
    run,
)

# The first test also pays for the runtime image and the node's binaries (minutes on 2 cores).
pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.timeout(2400)]


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


def pod_processes() -> set[int]:
    """The processes in the node's pod cgroups (cgroup v1: one hierarchy per controller)."""
    found: set[int] = set()
    for root in (Path("/sys/fs/cgroup/pids/kubepods"), Path("/sys/fs/cgroup/kubepods")):
        for procs in root.rglob("cgroup.procs") if root.is_dir() else ():
            found.update(int(pid) for pid in procs.read_text().split())
    return found


def test_a_node_left_by_a_killed_run_is_cleaned_up_by_the_next_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A test run killed mid-way leaves the machine's one real node behind: its control plane and
    node processes are gone, its pods, mounts, bridge and owner file are not. The next cluster
    cleans that up and starts, where it used to refuse ("is running; stop it first") and fail
    every real-node test.

    First in this module: it needs the machine's node before the session's cluster takes it."""
    run("bash", str(REPO_ROOT / ".ci" / "start-docker.sh"))
    environment = {
        **os.environ,
        "MLMODEL_CLUSTER_NODE": "real",
        "MLMODEL_CLUSTER_IMAGES": "",
        "MLMODEL_CLUSTER_PORT": str(free_port_block(11)),
    }
    killed = tmp_path_factory.mktemp("killed-run")
    following = tmp_path_factory.mktemp("following-run")
    try:
        run("bash", str(CLUSTER_SCRIPTS / "up.sh"), str(killed), env=environment)
        old = Cluster(directory=killed, port=int(environment["MLMODEL_CLUSTER_PORT"]))
        old.kubectl(
            "run", "left-behind", "--image=mlmodel.local/pause:1", "--image-pull-policy=Never"
        )
        old.kubectl("wait", "--for=condition=Ready", "pod/left-behind", "--timeout=120s")
        left_pods = pod_processes()
        assert left_pods, "the pod's processes are not in the kubepods cgroups"
        for pid_file in (killed / "run").glob("*.pid"):  # what a killed session leaves
            os.kill(int(pid_file.read_text()), signal.SIGKILL)

        result = run("bash", str(CLUSTER_SCRIPTS / "up.sh"), str(following), env=environment)

        assert f"the real node of {killed} was left behind" in result.stderr
        assert Path("/run/mlmodel-node.owner").read_text().strip() == str(following)
        assert not left_pods & pod_processes(), "the killed run's pods still run"
        mounts = run("findmnt", "-rn", "-o", "TARGET").stdout.split()
        assert not [m for m in mounts if m.startswith(f"{killed}/")]
        new = Cluster(directory=following, port=int(environment["MLMODEL_CLUSTER_PORT"]))
        new.kubectl("wait", "--for=condition=Ready", f"node/{NODE_NAME}", "--timeout=60s")
    finally:
        for directory in (following, killed):
            run("bash", str(CLUSTER_SCRIPTS / "down.sh"), str(directory), timeout=120)


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


def sentiment_serving(
    node_cluster: Cluster, artifacts: ArtifactServer, namespace: str
) -> tuple[dict[str, Any], str, dict[str, Any], set[str]]:
    """The sentiment example (version 1.0.0) Ready on two pods: its MLModel, its Service's
    ClusterIP, a one-text request, and the names of its pods."""
    model = example_model(
        "sentiment", namespace, "sentiment", artifacts.uri("sentiment/v1/model.joblib"), replicas=2
    )
    node_cluster.apply(model)
    ready(node_cluster, namespace, "sentiment")
    host = cluster_ip(node_cluster, namespace, "sentiment")
    request = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [POSITIVE]}]}
    pods = {pod["metadata"]["name"] for pod in node_cluster.list("pods", namespace)}
    return model, host, request, pods


def test_rolling_update_under_load_loses_no_request(
    node_cluster: Cluster, artifacts: ArtifactServer, namespace: str
):
    model, host, request, old_pods = sentiment_serving(node_cluster, artifacts, namespace)

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


def test_a_new_artifact_failing_its_sha256_is_rolled_back_under_load_losing_no_request(
    node_cluster: Cluster, artifacts: ArtifactServer, namespace: str
):
    model, host, request, stable_pods = sentiment_serving(node_cluster, artifacts, namespace)

    with Load(host, "/v2/models/sentiment/infer", request) as load:
        time.sleep(3)  # steady state before the bad rollout
        model["spec"]["model"].update(
            uri=artifacts.uri("sentiment/v2/model.joblib"), version="1.1.0", sha256="0" * 64
        )
        node_cluster.apply(model)
        changed_at = time.monotonic()

        def rolled_back() -> dict[str, Any] | None:
            stored = node_cluster.get("mlmodel", "sentiment", namespace)
            pods = {pod["metadata"]["name"] for pod in node_cluster.list("pods", namespace)}
            done = (
                condition(stored, "RolledBack").get("status") == "True"
                and condition(stored, "Ready").get("status") == "True"
                and pods == stable_pods
            )
            return stored if done else None

        stored = wait_until(rolled_back, timeout=300, what="the failed generation rolled back")
        rollback_seconds = time.monotonic() - changed_at
        time.sleep(3)  # and steady again on the stable pods

    sent = len(load.latencies)
    print(
        f"rollback under load: {sent} requests sent, {len(load.errors)} errors, "
        f"p99 {load.p99() * 1000:.0f} ms, rolled back after {rollback_seconds:.0f} s, "
        f"versions {load.versions}"
    )
    assert not load.errors, load.errors[:10]
    assert sent > 100
    # Only the stable model ever answered; the spec still names the failed artifact.
    assert set(load.versions) == {"1.0.0"}, load.versions
    assert stored["spec"]["model"]["sha256"] == "0" * 64
    rolled = condition(stored, "RolledBack")
    assert rolled["reason"] == "ArtifactUnavailable", rolled
    assert "but spec.model.sha256 is " + "0" * 64 in rolled["message"], rolled
    assert condition(stored, "Ready")["reason"] == "RolledBack"


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


def top_pods(cluster: Cluster, namespace: str) -> dict[str, tuple[int, int]]:
    """`kubectl top pods`: each pod's CPU (millicores) and memory (MiB), as metrics-server has
    them; empty until it has scraped a pod."""
    result = cluster.kubectl("top", "pods", "-n", namespace, "--no-headers", check=False)
    usage = {}
    for line in result.stdout.splitlines():
        name, cpu, memory = line.split()
        assert cpu.endswith("m") and memory.endswith("Mi"), line
        usage[name] = (int(cpu[:-1]), int(memory[:-2]))
    return usage


def test_the_hpa_scales_the_runtime_up_under_load_and_back_down_after(
    node_cluster: Cluster, artifacts: ArtifactServer, namespace: str
):
    """metrics-server (up.sh) scrapes the node's kubelet; the HPA controller reads pod CPU from
    it and scales the runtime's Deployment between the MLModel's min and max replicas."""
    node_cluster.apply(
        example_model(
            "sentiment",
            namespace,
            "sentiment",
            artifacts.uri("sentiment/v1/model.joblib"),
            replicas=None,
            # 100m requested; one busy worker uses several times that.
            autoscaling={"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50,
                         # Kubernetes waits 5 min before scaling down: most of the test.
                         "scaleDownStabilizationSeconds": HPA_DOWNSCALE_STABILIZATION_SECONDS},
        )
    )
    ready(node_cluster, namespace, "sentiment")
    host = cluster_ip(node_cluster, namespace, "sentiment")
    request = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [POSITIVE]}]}

    def hpa() -> dict[str, Any]:
        found = node_cluster.get("hpa", "sentiment", namespace)
        assert found is not None, "the operator made no HorizontalPodAutoscaler"
        return found

    def ready_replicas() -> int:
        deployment = node_cluster.get("deployment", "sentiment", namespace) or {}
        return int(deployment.get("status", {}).get("readyReplicas") or 0)

    def cpu_utilization(status: dict[str, Any]) -> int | None:
        for metric in status.get("currentMetrics") or ():
            if metric.get("type") == "Resource" and metric["resource"]["name"] == "cpu":
                return metric["resource"]["current"].get("averageUtilization")
        return None

    def measured() -> dict[str, Any] | None:
        status = hpa().get("status", {})
        return status if cpu_utilization(status) is not None else None

    # Idle first: the HPA reads a utilisation from the metrics API and stays at its minimum.
    idle = wait_until(
        measured, timeout=180, what="the HPA to read the pods' CPU from metrics.k8s.io"
    )
    assert idle["desiredReplicas"] == 1, idle

    with Load(host, "/v2/models/sentiment/infer", request) as load:
        loaded_at = time.monotonic()

        def scaled_up() -> dict[str, Any] | None:
            status = hpa().get("status", {})
            return status if status.get("desiredReplicas", 0) > 1 and ready_replicas() > 1 else None

        up = wait_until(scaled_up, timeout=300, every=2, what="the HPA to scale up under load")
        scale_up_seconds = time.monotonic() - loaded_at
        utilization = cpu_utilization(up)
        assert utilization is not None and utilization > 50, up

        # `kubectl top` reads the same API: every running pod, their memory, the CPU of the busy.
        pods = {
            pod["metadata"]["name"]
            for pod in node_cluster.list("pods", namespace)
            if pod["status"].get("phase") == "Running"
        }

        def top_lists_every_pod() -> dict[str, tuple[int, int]] | None:
            usage = top_pods(node_cluster, namespace)
            return usage if set(usage) >= pods else None

        usage = wait_until(
            top_lists_every_pod, timeout=120, every=2, what="kubectl top to list every pod"
        )
        assert all(memory > 0 for _, memory in usage.values()), usage
        assert max(cpu for cpu, _ in usage.values()) > 50, usage
    assert len(load.latencies) > 100 and not load.errors, load.errors[:10]
    most = max(up["desiredReplicas"], ready_replicas())
    top_nodes = node_cluster.kubectl("top", "nodes", "--no-headers").stdout
    assert NODE_NAME in top_nodes, top_nodes

    stopped_at = time.monotonic()

    def scaled_down() -> dict[str, Any] | None:
        status = hpa().get("status", {})
        down = status.get("desiredReplicas") == status.get("currentReplicas") == 1
        return status if down and ready_replicas() == 1 else None

    wait_until(
        scaled_down,
        timeout=HPA_DOWNSCALE_STABILIZATION_SECONDS + 300,
        every=2,
        what="the HPA to scale back down to minReplicas",
    )
    scale_down_seconds = time.monotonic() - stopped_at
    print(
        f"HPA: scaled 1 -> {most} in {scale_up_seconds:.0f} s under load "
        f"({len(load.latencies)} requests, CPU {utilization}% of the request), "
        f"back to 1 in {scale_down_seconds:.0f} s after it stopped "
        f"(downscale stabilization {HPA_DOWNSCALE_STABILIZATION_SECONDS} s); top: {usage}"
    )
    assert (
        condition(node_cluster.get("mlmodel", "sentiment", namespace), "Ready")["status"] == "True"
    )


def test_models_from_a_claim_and_from_an_image_volume_serve_on_real_pods(
    node_cluster: Cluster, namespace: str, tmp_path_factory: pytest.TempPathFactory
):
    """pvc:// on a hostPath PersistentVolume, and oci:// as an image volume that containerd
    mounts (examples/sentiment/volumes/Containerfile, imported into the node's containerd as a
    registry would have it pulled): the runtime reads, verifies and serves each."""
    image = "mlmodel.local/models/sentiment:1.0.0"
    volumes = EXAMPLES / "sentiment" / "volumes"
    run(
        "docker", "build", "-q", "-f", str(volumes / "Containerfile"), "-t", image,
        str(EXAMPLES / "sentiment"), env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )  # fmt: skip
    run("bash", str(CLUSTER_SCRIPTS / "node.sh"), "import", str(node_cluster.directory), image)
    root = tmp_path_factory.mktemp("claim") / "models"
    (root / "sentiment" / "1.0.0").mkdir(parents=True)
    shutil.copy(EXAMPLES / "sentiment" / "model.joblib", root / "sentiment" / "1.0.0")
    for folder in (root, root / "sentiment", root / "sentiment" / "1.0.0"):
        folder.chmod(0o755)  # the runtime runs as uid 10001; a hostPath volume keeps modes
    (root / "sentiment" / "1.0.0" / "model.joblib").chmod(0o644)
    node_cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"models-{namespace}"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "hostPath": {"path": str(root), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": "models"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "models", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "volumeName": f"models-{namespace}",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    node_cluster.apply(
        example_model(
            "from-claim", namespace, "sentiment", "pvc://models/sentiment/1.0.0/model.joblib"
        ),
        example_model("from-image", namespace, "sentiment", f"oci://{image}"),
    )
    for name, volume in (
        ("from-claim", {"persistentVolumeClaim": {"claimName": "models", "readOnly": True}}),
        ("from-image", {"image": {"reference": image, "pullPolicy": "IfNotPresent"}}),
    ):
        ready(node_cluster, namespace, name)
        [pod] = node_cluster.list("pods", namespace, f"app.kubernetes.io/instance={name}")
        assert {"name": "model", **volume} in pod["spec"]["volumes"]
        code, body = post(
            cluster_ip(node_cluster, namespace, name),
            f"/v1/models/{name}:predict",
            {"instances": [NEGATIVE, POSITIVE]},
        )
        assert code == 200, body
        assert body["predictions"] == ["negative", "positive"]
    node_cluster.kubectl("delete", "mlmodel", "--all", "-n", namespace, "--wait=true")
    node_cluster.kubectl("delete", "pvc", "models", "-n", namespace, "--wait=false")
