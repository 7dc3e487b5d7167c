"""Failing pods on the real control plane turn into the documented Degraded reasons.

KWOK's stages (tests/cluster/kwok/failing-pods.yaml) put pods whose image names a failure into
that state, as a kubelet would report it; a running but unready pod is asked why by the operator
over HTTP, and a real runtime answers on the pod's IP (KWOK gives pods loopback addresses).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.models import condition, mlmodel
from support.cluster import REPO_ROOT, Cluster
from support.ports import wait_until

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


class Runtime:
    """A real `mlmodel serve` process standing in for the runtime container of a pod."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, deployment: dict, pod: dict) -> None:
        ip = pod["status"]["podIP"]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MLMODEL_")}
        for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
            if "value" in item:
                environment[item["name"]] = item["value"]
        environment.update(
            MLMODEL_NAMESPACE=pod["metadata"]["namespace"],
            MLMODEL_POD_NAME=pod["metadata"]["name"],
            MLMODEL_CACHE_DIR=str(self.tmp_path / "cache"),
            MLMODEL_HOST=ip,
            MLMODEL_PORT="8080",
            MLMODEL_SHUTDOWN_GRACE_SECONDS="0",
            MLMODEL_LOG_FORMAT="text",
        )
        with open(self.tmp_path / "runtime.log", "wb") as log:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).with_name("mlmodel")), "serve"],
                env=environment, stdout=log, stderr=subprocess.STDOUT,
            )

        def live() -> bool:
            assert self.process is not None and self.process.poll() is None, "runtime exited"
            try:
                with urllib.request.urlopen(f"http://{ip}:8080/v2/health/live", timeout=1):
                    return True
            except (urllib.error.URLError, OSError):
                return False

        wait_until(live, timeout=60, what="the runtime to listen on the pod IP")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture()
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    started = Runtime(tmp_path)
    yield started
    started.stop()


def test_an_unready_runtime_says_why_through_its_readiness_answer(
    installed_cluster: Cluster, run_operator, namespace: str, runtime: Runtime
):
    wrong_sha = "ab" * 32
    artifact = REPO_ROOT / "examples" / "sentiment" / "model.joblib"
    run_operator(namespaces=[namespace], **FAST_DIAGNOSIS)
    installed_cluster.apply(
        mlmodel(
            "sentiment",
            namespace,
            model={"uri": artifact.as_uri(), "sha256": wrong_sha},
            runtime={"image": "kwok.test/failing/unready:1"},
        )
    )
    pod = wait_until(
        lambda: next(
            (
                p
                for p in installed_cluster.list("pods", namespace, "app.kubernetes.io/instance=sentiment")
                if p["status"].get("podIP")
            ),
            None,
        ),
        what="a running pod with an IP",
    )
    runtime.start(installed_cluster.get("deployment", "sentiment", namespace), pod)
    found = wait_until(
        lambda: (d := degraded(installed_cluster, namespace)).get("status") == "True" and d,
        timeout=60,
        what="Degraded from the runtime's answer",
    )
    assert found["reason"] == "ArtifactUnavailable"
    assert found["message"].startswith("ChecksumMismatch: ")
    assert wrong_sha in found["message"] and pod["metadata"]["name"] in found["message"]
