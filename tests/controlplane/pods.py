"""The runtime pods of an MLModel on KWOK's node, and the kubelet's part that a test plays.

Pods whose image is kwok.test/failing/unready:1 or :2 run but stay unready (a KWOK stage);
`mark_ready` then sets what a kubelet sets once the readiness probe passes, through the pod's
status subresource, and the real ReplicaSet and Deployment controllers take it from there.
`Runtime` is a real `mlmodel serve` on a pod's (loopback) IP, standing in for its container.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from support.cluster import Cluster
from support.ports import wait_until
from support.processes import stop_process

UNREADY_IMAGE = "kwok.test/failing/unready:1"
# The runtime container's http port, which the operator asks on the pod's IP.
RUNTIME_PORT = 8080
UNREADY_IMAGE_2 = "kwok.test/failing/unready:2"


def running_pods(cluster: Cluster, namespace: str, name: str, image: str | None = None) -> list[dict[str, Any]]:
    """The MLModel's pods that have an IP and are not being deleted (of one image, if given)."""
    return [
        pod
        for pod in cluster.list("pods", namespace, f"app.kubernetes.io/instance={name}")
        if pod["status"].get("podIP")
        and not pod["metadata"].get("deletionTimestamp")
        and (image is None or pod["spec"]["containers"][0]["image"] == image)
    ]


def wait_for_pods(
    cluster: Cluster, namespace: str, name: str, count: int = 1, image: str | None = None
) -> list[dict[str, Any]]:
    return wait_until(
        lambda: (pods := running_pods(cluster, namespace, name, image)) and len(pods) == count and pods,
        timeout=60,
        what=f"{count} running pod(s) of {name}" + (f" with {image}" if image else ""),
    )


def mark_ready(cluster: Cluster, pod: dict[str, Any]) -> None:
    """What the kubelet writes when the pod's readiness probe passes."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    containers = [
        {**status, "ready": True, "started": True}
        for status in pod["status"].get("containerStatuses") or ()
    ]
    patch = {
        "status": {
            "conditions": [
                {"type": kind, "status": "True", "lastTransitionTime": now}
                for kind in ("Ready", "ContainersReady")
            ],
            "containerStatuses": containers,
        }
    }
    cluster.kubectl(
        "patch", "pod", pod["metadata"]["name"], "-n", pod["metadata"]["namespace"],
        "--subresource=status", "--type=strategic", "-p", json.dumps(patch),
    )


class Runtime:
    """A real `mlmodel serve` process standing in for the runtime container of a pod."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, deployment: dict, pod: dict, **overrides: str) -> None:
        """Serve as the pod's runtime container would, with its Deployment's env (`overrides`
        replace what the node's DNS or Services would resolve)."""
        ip = pod["status"]["podIP"]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MLMODEL_")}
        for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
            if "value" in item:
                environment[item["name"]] = item["value"]
        environment.update(overrides)
        environment.update(
            MLMODEL_NAMESPACE=pod["metadata"]["namespace"],
            MLMODEL_POD_NAME=pod["metadata"]["name"],
            MLMODEL_CACHE_DIR=str(self.tmp_path / "cache"),
            MLMODEL_HOST=ip,
            MLMODEL_PORT=str(RUNTIME_PORT),
            MLMODEL_SHUTDOWN_GRACE_SECONDS="0",
            MLMODEL_LOG_FORMAT="text",
        )
        self.tmp_path.mkdir(parents=True, exist_ok=True)
        with open(self.tmp_path / "runtime.log", "ab") as log:  # one log for every start
            self.process = subprocess.Popen(
                [str(Path(sys.executable).with_name("mlmodel")), "serve"],
                env=environment, stdout=log, stderr=subprocess.STDOUT,
            )

        def live() -> bool:
            assert self.process is not None and self.process.poll() is None, "runtime exited"
            try:
                with urllib.request.urlopen(f"http://{ip}:{RUNTIME_PORT}/v2/health/live", timeout=1):
                    return True
            except (urllib.error.URLError, OSError):
                return False

        wait_until(live, timeout=60, what="the runtime to listen on the pod IP")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, signal.SIGTERM, 10)
