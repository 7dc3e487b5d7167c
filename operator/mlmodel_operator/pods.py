"""Why a model's pods are not ready, read from the pods themselves (pure).

The Deployment only says "unavailable"; the pods' container states say CrashLoopBackOff,
ImagePullBackOff or OOMKilled, and the runtime's own readiness answer says which artifact
problem keeps it from serving. These functions turn a pod list into such a problem.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from mlmodel_spec.model_uris import IMAGE_VOLUME_REQUIREMENTS, MODEL_VOLUME
from mlmodel_spec.runtime_settings import env_var

from mlmodel_operator.builders.deployment import CONTAINER_NAME

# Reasons a container waits that will not go away by waiting (kubelet's own reason strings).
_STUCK_WAITING = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
}
# What the runtime reports while it is still on its way to ready: not a problem (yet).
RUNTIME_TRANSIENT_REASONS = frozenset({"", "Loading", "ShuttingDown"})
ARTIFACT_UNAVAILABLE = "ArtifactUnavailable"
# A status message is for people: long runtime messages are cut.
MAX_MESSAGE = 512
# The scheduler's words (plugin VolumeBinding) for a pod whose claim does not exist.
_CLAIM_NOT_FOUND = re.compile(r'persistentvolumeclaim "([^"]+)" not found')
_MODEL_URI_ENV = env_var("model_uri")


@dataclasses.dataclass(frozen=True)
class ProbeTarget:
    """A running, not-ready runtime pod to ask why: GET http://ip:port/v2/health/ready."""

    pod: str
    ip: str
    port: int

    @property
    def url(self) -> str:
        return self.address("/v2/health/ready")

    def address(self, path: str) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}{path}"


def _name(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name", "?"))


def _statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status") or {}
    return [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]


def container_problem(pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """The first stuck container or unschedulable pod, as (reason, message), else None.

    OOMKilled wins over the CrashLoopBackOff it causes: it says what to change.
    """
    crash: tuple[str, str] | None = None
    for pod in sorted(pods, key=_name):
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue  # a terminating pod is on its way out, whatever its state
        dropped = _image_volume_dropped(pod)
        if dropped is not None:
            return dropped
        for status in _statuses(pod):
            container = status.get("name", "?")
            where = f"container {container} of pod {_name(pod)}"
            terminated = (
                (status.get("state") or {}).get("terminated")
                or (status.get("lastState") or {}).get("terminated")
                or {}
            )
            if terminated.get("reason") == "OOMKilled":
                restarts = status.get("restartCount", 0)
                message = (
                    f"{where} was killed for using more memory than its limit ({restarts} "
                    "restarts); raise spec.runtime.resources.limits.memory"
                )
                return "OOMKilled", message
            waiting = (status.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in _STUCK_WAITING and crash is None:
                detail = waiting.get("message") or "no message from the kubelet"
                reason = "ImagePullBackOff" if reason == "ErrImagePull" else reason
                crash = (reason, f"{where}: {detail}")
        if crash is None:
            for condition in (pod.get("status") or {}).get("conditions") or []:
                if (
                    condition.get("type") == "PodScheduled"
                    and condition.get("status") == "False"
                    and condition.get("reason") == "Unschedulable"
                ):
                    crash = _unschedulable(pod, str(condition.get("message", "")))
    return crash


def _unschedulable(pod: dict[str, Any], message: str) -> tuple[str, str]:
    claim = _CLAIM_NOT_FOUND.search(message)
    if claim is not None:
        namespace = (pod.get("metadata") or {}).get("namespace", "?")
        text = (
            f"PersistentVolumeClaim {claim[1]} named by spec.model.uri does not exist in namespace "
            f"{namespace}: create it (the pods start once it is bound) or fix spec.model.uri "
            f"(pod {_name(pod)}: {message})"
        )
        return "ClaimNotFound", text
    return "Unschedulable", f"pod {_name(pod)} cannot be scheduled: {message}"


def _image_volume_dropped(pod: dict[str, Any]) -> tuple[str, str] | None:
    """An oci:// model whose pod has no image volume: the API server dropped it (no ImageVolume
    feature gate), so the runtime would look for its file in a folder nothing is mounted on."""
    spec = pod.get("spec") or {}
    runtime: dict[str, Any] = next(
        (c for c in spec.get("containers") or [] if c.get("name") == CONTAINER_NAME), {}
    )
    uri = next(
        (
            str(e.get("value", ""))
            for e in runtime.get("env") or []
            if e.get("name") == _MODEL_URI_ENV
        ),
        "",
    )
    if not uri.startswith("oci://"):
        return None
    if any(v.get("name") == MODEL_VOLUME and v.get("image") for v in spec.get("volumes") or []):
        return None
    text = (
        f"the API server removed the image volume for spec.model.uri {uri} from pod {_name(pod)}, "
        f"so this cluster cannot mount the model image: {IMAGE_VOLUME_REQUIREMENTS}; or publish "
        "the artifact at an https:// or s3:// URI"
    )
    return "ImageVolumeUnsupported", text


def probe_targets(pods: list[dict[str, Any]], *, ready: bool = False) -> list[ProbeTarget]:
    """Runtime pods that run but are not ready (``ready``: that are ready), with the address of
    their `http` port."""
    targets = []
    for pod in sorted(pods, key=_name):
        status = pod.get("status") or {}
        if (pod.get("metadata") or {}).get("deletionTimestamp") or status.get("phase") != "Running":
            continue
        ip = status.get("podIP")
        runtime = next(
            (s for s in status.get("containerStatuses") or [] if s.get("name") == CONTAINER_NAME),
            None,
        )
        if (
            not ip
            or runtime is None
            or bool(runtime.get("ready")) != ready
            or "running" not in (runtime.get("state") or {})
        ):
            continue
        port = _http_port(pod)
        if port is not None:
            targets.append(ProbeTarget(pod=_name(pod), ip=str(ip), port=port))
    return targets


def _http_port(pod: dict[str, Any]) -> int | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") != CONTAINER_NAME:
            continue
        for port in container.get("ports") or []:
            if port.get("name") == "http" and isinstance(port.get("containerPort"), int):
                return int(port["containerPort"])
    return None


def readiness_problem(target: ProbeTarget, code: int, body: Any) -> tuple[str, str] | None:
    """An artifact problem from the runtime's /v2/health/ready answer, else None.

    The runtime answers 503 with {"ready": false, "reason": "ChecksumMismatch", "message": ...}
    while it cannot load its artifact; "Loading" and "ShuttingDown" are on their way.
    """
    if code == 200 or not isinstance(body, dict) or body.get("ready") is not False:
        return None
    reason = str(body.get("reason") or "")
    if reason in RUNTIME_TRANSIENT_REASONS:
        return None
    message = str(body.get("message") or "no message from the runtime")[:MAX_MESSAGE]
    return ARTIFACT_UNAVAILABLE, f"{reason[:64]}: {message} (pod {target.pod})"


def unsettled(deployment: dict[str, Any] | None) -> bool:
    """Whether some desired replica of the Deployment is not available, or a rollout is under
    way (pods of another revision left, or not every replica updated): worth a diagnosis, since
    a new revision's pods may fail while the old ones still serve.

    Not while the Deployment controller has yet to see the Deployment's latest spec: the pods of
    that spec do not exist yet (this is every MLModel's first status, right after the apply)."""
    if deployment is None:
        return False
    observed = (deployment.get("status") or {}).get("observedGeneration") or 0
    if observed < ((deployment.get("metadata") or {}).get("generation") or 0):
        return False
    desired = (deployment.get("spec") or {}).get("replicas", 1)
    status = deployment.get("status") or {}
    available = status.get("availableReplicas") or 0
    updated = status.get("updatedReplicas") or 0
    pods = status.get("replicas") or 0
    return (
        isinstance(desired, int)
        and desired > 0
        and (available < desired or updated < desired or pods > updated)
    )
