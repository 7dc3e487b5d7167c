"""MLModel bodies and status reading for the control-plane tests."""

from __future__ import annotations

from typing import Any

# Pods on KWOK's node run nothing, so the artifact is never fetched: any https:// place will do.
URI = "https://models.example.com/sentiment/model.joblib"
SHA256 = "3f" * 32
API_VERSION = "serving.mlmodel.io/v1alpha1"


def mlmodel(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": {"uri": URI, "sha256": SHA256}, "replicas": 1}
    body.update(spec)
    body = {key: value for key, value in body.items() if value is not None}
    return {
        "apiVersion": API_VERSION,
        "kind": "MLModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for item in ((obj or {}).get("status") or {}).get("conditions") or ():
        if item.get("type") == type_:
            return item
    return {}


def controller_uid(obj: dict[str, Any]) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or ():
        if ref.get("controller"):
            return ref["uid"]
    return None
