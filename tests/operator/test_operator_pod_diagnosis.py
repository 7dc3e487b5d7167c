"""The operator says why a model is not ready: it asks a real runtime, and reads pod states."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp.web
import pytest
from conftest import condition, make_mlmodel, wait_for
from emulator import ClusterEmulator

NS = "default"
MLMODEL = "serving.mlmodel.io/v1alpha1/mlmodels"
DEPLOYMENTS = "apps/v1/deployments"
PODS = "v1/pods"
# Loopback, but not 127.0.0.1: the operator must use the pod's own IP.
POD_IP = "127.0.0.2"
WRONG_SHA = "ab" * 32


def free_port(host: str = POD_IP) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def make_pod(deployment: dict, name: str, port: int) -> dict:
    """A pod as the Deployment's ReplicaSet would make it, its http port on `port`."""
    template = deployment["spec"]["template"]
    spec = template["spec"]
    container = dict(spec["containers"][0])
    container["ports"] = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": dict(template["metadata"]["labels"]),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"{deployment['metadata']['name']}-5d8f7c9b4",
                    "uid": "0b7c1d2e-rs",
                    "controller": True,
                }
            ],
        },
        "spec": {**spec, "containers": [container]},
    }


def pod_status(
    *, ready: bool = False, waiting: dict | None = None, last: dict | None = None
) -> dict:
    state = {"waiting": waiting} if waiting else {"running": {"startedAt": "2025-01-01T00:00:00Z"}}
    status = {
        "name": "runtime",
        "ready": ready,
        "restartCount": 3 if waiting else 0,
        "state": state,
    }
    if last:
        status["lastState"] = last
    return {
        "status": {
            "phase": "Running",
            "podIP": POD_IP,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [status],
        }
    }


def runtime_env(deployment: dict, pod_name: str, port: int, cache: Path) -> dict[str, str]:
    """The env the operator gave the runtime container, as the kubelet would resolve it here."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLMODEL_")}
    for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in item:
            environment[item["name"]] = item["value"]
    environment.update(
        MLMODEL_NAMESPACE=NS,
        MLMODEL_POD_NAME=pod_name,
        MLMODEL_CACHE_DIR=str(cache),  # an emptyDir in the cluster
        MLMODEL_HOST=POD_IP,
        MLMODEL_PORT=str(port),
        MLMODEL_SHUTDOWN_GRACE_SECONDS="0",
        MLMODEL_LOG_FORMAT="text",
    )
    return environment


class Runtimes:
    """Real `mlmodel serve` processes standing in for runtime pods."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen[bytes]] = []

    def spawn(self, environment: dict[str, str]) -> subprocess.Popen[bytes]:
        script = Path(sys.executable).with_name("mlmodel")
        with open(self.tmp_path / f"runtime-{len(self.processes)}.log", "wb") as log:
            process = subprocess.Popen(
                [str(script), "serve"], env=environment, stdout=log, stderr=subprocess.STDOUT
            )
        self.processes.append(process)
        return process

    async def start(self, environment: dict[str, str], port: int) -> subprocess.Popen[bytes]:
        process = self.spawn(environment)

        def live() -> bool:
            if process.poll() is not None:
                raise AssertionError("the runtime exited early")
            try:
                with urllib.request.urlopen(f"http://{POD_IP}:{port}/v2/health/live", timeout=1):
                    return True
            except (urllib.error.URLError, OSError):
                return False

        async def poll() -> bool:
            return await asyncio.to_thread(live)

        deadline = asyncio.get_running_loop().time() + 30
        while not await poll():
            assert asyncio.get_running_loop().time() < deadline, "the runtime did not start"
            await asyncio.sleep(0.2)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture()
def runtimes(tmp_path: Path) -> Iterator[Runtimes]:
    started = Runtimes(tmp_path)
    yield started
    started.stop_all()


def degraded(cluster: ClusterEmulator) -> dict[str, Any]:
    return condition(cluster.get(MLMODEL, NS, "sentiment"), "Degraded")


async def test_a_wrong_sha256_reported_by_the_runtime_degrades_then_recovers(
    cluster, start_operator, runtimes, repo_root, tmp_path
):
    await start_operator(resync=1, MLMODEL_OPERATOR_POD_DIAGNOSIS_INTERVAL_SECONDS="0.5")
    artifact = repo_root / "examples" / "sentiment" / "model.joblib"
    good_sha = (repo_root / "examples" / "sentiment" / "model.joblib.sha256").read_text().split()[0]
    cluster.create(make_mlmodel(model={"uri": artifact.as_uri(), "sha256": WRONG_SHA}, replicas=1))
    deployment = await wait_for(
        lambda: cluster.get(DEPLOYMENTS, NS, "sentiment"), what="deployment"
    )
    cluster.set_deployment_rollout(NS, "sentiment", ready=0)

    # The ReplicaSet's pod runs the real runtime with the env the operator gave it.
    port = free_port()
    await runtimes.start(
        runtime_env(deployment, "sentiment-5d8f7c9b4-a", port, tmp_path / "c1"), port
    )
    cluster.create(make_pod(deployment, "sentiment-5d8f7c9b4-a", port))
    cluster.patch(PODS, NS, "sentiment-5d8f7c9b4-a", pod_status(), subresource="status")

    found = await wait_for(
        lambda: degraded(cluster).get("status") == "True" and degraded(cluster),
        timeout=20,
        what="Degraded from the runtime's answer",
    )
    assert found["reason"] == "ArtifactUnavailable"
    # The runtime's own words: which check failed, and what to do.
    assert found["message"].startswith("ChecksumMismatch: ")
    assert WRONG_SHA in found["message"] and "sentiment-5d8f7c9b4-a" in found["message"]
    stored = cluster.get(MLMODEL, NS, "sentiment")
    assert condition(stored, "Ready")["reason"] == "ArtifactUnavailable"
    assert stored["status"]["lastFailure"]["reason"] == "ArtifactUnavailable"
    await wait_for(
        lambda: any(
            e.get("reason") == "ArtifactUnavailable" and e["type"] == "Warning"
            for e in cluster.list_objects("v1/events", NS)[0]
        ),
        what="a Warning event",
    )
    # Pods were listed by label, and only listed.
    pod_calls = [c for c in cluster.operator_calls() if c.resource == "pods"]
    assert pod_calls and {c.verb for c in pod_calls} == {"list"}
    assert all(
        "app.kubernetes.io/instance=sentiment" in c.query["labelSelector"] for c in pod_calls
    )

    # The user fixes the sha256: new pods roll out with it, and the model recovers.
    cluster.patch(MLMODEL, NS, "sentiment", {"spec": {"model": {"sha256": good_sha}}})
    fixed = await wait_for(
        lambda: (
            (d := cluster.get(DEPLOYMENTS, NS, "sentiment"))
            and {"name": "MLMODEL_MODEL_SHA256", "value": good_sha}
            in d["spec"]["template"]["spec"]["containers"][0]["env"]
            and d
        ),
        what="the deployment patched with the right sha256",
    )
    runtimes.stop_all()
    cluster.delete(PODS, NS, "sentiment-5d8f7c9b4-a")
    port = free_port()
    await runtimes.start(runtime_env(fixed, "sentiment-7f6e5d4c3-b", port, tmp_path / "c2"), port)
    cluster.create(make_pod(fixed, "sentiment-7f6e5d4c3-b", port))
    cluster.patch(PODS, NS, "sentiment-7f6e5d4c3-b", pod_status(), subresource="status")
    # Not yet marked ready by the kubelet, but the runtime no longer reports a problem.
    await wait_for(
        lambda: degraded(cluster).get("status") == "False", timeout=20, what="Degraded=False"
    )
    cluster.patch(PODS, NS, "sentiment-7f6e5d4c3-b", pod_status(ready=True), subresource="status")
    cluster.set_deployment_rollout(NS, "sentiment")
    await wait_for(
        lambda: condition(cluster.get(MLMODEL, NS, "sentiment"), "Ready").get("status") == "True",
        what="Ready=True",
    )


async def test_pod_states_without_http_probing(cluster, start_operator):
    """With probing off, no request reaches the pods; container states still explain."""
    hits: list[str] = []

    async def answer(request: aiohttp.web.Request) -> aiohttp.web.Response:
        hits.append(request.path)
        return aiohttp.web.json_response(
            {"ready": False, "reason": "ChecksumMismatch", "message": "x"}, status=503
        )

    app = aiohttp.web.Application()
    app.router.add_get("/v2/health/ready", answer)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = aiohttp.web.TCPSite(runner, POD_IP, port)
    await site.start()
    try:
        await start_operator(
            resync=0.5,
            MLMODEL_OPERATOR_POD_DIAGNOSIS_INTERVAL_SECONDS="0",
            MLMODEL_OPERATOR_POD_PROBE_ENABLED="false",
        )
        cluster.create(make_mlmodel(replicas=1))
        deployment = await wait_for(
            lambda: cluster.get(DEPLOYMENTS, NS, "sentiment"), what="deployment"
        )
        cluster.set_deployment_rollout(NS, "sentiment", ready=0)
        cluster.create(make_pod(deployment, "sentiment-5d8f7c9b4-a", port))
        cluster.patch(PODS, NS, "sentiment-5d8f7c9b4-a", pod_status(), subresource="status")
        since = len(cluster.calls)
        await wait_for(
            lambda: sum(1 for c in cluster.operator_calls(since) if c.resource == "pods") >= 2,
            what="pods listed by two resyncs",
        )
        assert hits == []
        assert degraded(cluster).get("status") == "False"

        # The runtime container now runs out of memory, over and over.
        cluster.patch(
            PODS,
            NS,
            "sentiment-5d8f7c9b4-a",
            pod_status(
                waiting={"reason": "CrashLoopBackOff", "message": "back-off 40s restarting"},
                last={"terminated": {"reason": "OOMKilled", "exitCode": 137}},
            ),
            subresource="status",
        )
        found = await wait_for(
            lambda: degraded(cluster).get("reason") == "OOMKilled" and degraded(cluster),
            what="Degraded OOMKilled",
        )
        assert "limits.memory" in found["message"]
        assert hits == []
    finally:
        await runner.cleanup()
