"""What the operator knows of its children without asking: a cache fed by kopf's watches.

Each child kind the operator owns is watched (its managed-by label only), so a reconcile pass
can tell, with no request, whether a child is still exactly as the operator last applied it, and
which stale children it controls. The cache only saves requests: a child it has not seen yet is
applied (a no-op on the server when nothing changed), never skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from mlmodel_operator.kube import applies_field, change_marker

REPLICAS_FIELD = ("f:spec", "f:replicas")

Key = tuple[str, str, str]  # kind, namespace, name


@dataclasses.dataclass(frozen=True)
class Seen:
    """A child as last seen in a watch event."""

    version: str  # see change_marker
    controller_uid: str | None
    # What the MLModel's status reads of a Deployment (see status_view), for Deployments only.
    body: dict[str, Any] | None = None
    # Whether the operator's apply owns the Deployment's spec.replicas (see reconcile's
    # keep_replicas), for Deployments only.
    replicas_applied: bool = False


def controller_uid(obj: dict[str, Any]) -> str | None:
    """The uid of the object's controlling owner, if it has one."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref.get("uid")
    return None


def status_view(deployment: dict[str, Any]) -> dict[str, Any]:
    """The parts of a Deployment the MLModel's status is computed from (status.py, pods.py):
    a thousand whole Deployments would cost the operator tens of megabytes."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    template_meta = (spec.get("template") or {}).get("metadata") or {}
    view: dict[str, Any] = {
        "metadata": {key: meta[key] for key in ("name", "namespace", "generation") if key in meta},
        "spec": {"template": {"metadata": {"annotations": template_meta.get("annotations") or {}}}},
        "status": deployment.get("status") or {},
    }
    if "replicas" in spec:
        view["spec"]["replicas"] = spec["replicas"]
    return view


def fingerprint(desired: Any) -> str:
    """A digest of a desired object, to tell whether the spec asks for something new."""
    return hashlib.sha256(json.dumps(desired, sort_keys=True).encode()).hexdigest()


class Children:
    """The watched children, and what the operator last applied to each."""

    def __init__(self) -> None:
        self._seen: dict[Key, Seen] = {}
        # What the last apply sent (its fingerprint) and the version the server answered with.
        self._applied: dict[Key, tuple[str, str]] = {}

    def observe(self, event_type: str | None, body: dict[str, Any], *, keep_body: bool) -> None:
        meta = body.get("metadata") or {}
        key = (body.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self._seen.pop(key, None)
            return
        self._seen[key] = Seen(
            version=change_marker(body),
            controller_uid=controller_uid(body),
            body=status_view(body) if keep_body else None,
            replicas_applied=keep_body and applies_field(body, REPLICAS_FIELD),
        )

    def seen(self, kind: str, namespace: str, name: str) -> Seen | None:
        return self._seen.get((kind, namespace, name))

    def unchanged_since_applied(self, desired: dict[str, Any]) -> bool:
        """Whether `desired` is what was last applied and the child has not changed since."""
        key = _key(desired)
        applied = self._applied.get(key)
        seen = self._seen.get(key)
        return (
            applied is not None
            and seen is not None
            and applied == (fingerprint(desired), seen.version)
        )

    def record_applied(self, desired: dict[str, Any], live: dict[str, Any]) -> None:
        self._applied[_key(desired)] = (fingerprint(desired), change_marker(live))

    def forget_owner(self, namespace: str, name: str) -> None:
        """Drop what was applied for an MLModel's children (it is gone)."""
        for key in [k for k in self._applied if k[1] == namespace and k[2] == name]:
            del self._applied[key]


def _key(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]
