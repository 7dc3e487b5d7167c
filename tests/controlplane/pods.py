"""The runtime pods of an MLModel on KWOK's node, and the kubelet's part that a test plays.

Pods whose image is kwok.test/failing/unready:1 or :2 run but stay unready (a KWOK stage);
`mark_ready` then sets what a kubelet sets once the readiness probe passes, through the pod's
status subresource, and the real ReplicaSet and Deployment controllers take it from there.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from support.cluster import Cluster
from support.ports import wait_until

UNREADY_IMAGE = "kwok.test/failing/unready:1"
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
