"""What every child object shares: its name (the MLModel's own, so `kubectl get all -l ...` reads
naturally), labels, selector and owner reference."""

from __future__ import annotations

import hashlib
import json
import re

from mlmodel_spec.resource import API_VERSION, KIND, MLModelSpec

from mlmodel_operator import __version__

APP_NAME = "mlmodel-runtime"
PART_OF = "mlmodel"
MANAGED_BY = "mlmodel-operator"
COMPONENT = "model-server"
ANNOTATION_PREFIX = "serving.mlmodel.io"
# On the pods of spec.canary's candidate only: what tells them from the served model's pods,
# and whose candidate they are (the canary Deployment's selector: the same however it is split).
REVISION_LABEL = f"{ANNOTATION_PREFIX}/revision"
CANARY_OF_LABEL = f"{ANNOTATION_PREFIX}/canary-of"
ROLLOUT_HASH_ANNOTATION = f"{ANNOTATION_PREFIX}/rollout-hash"
OPERATOR_VERSION_ANNOTATION = f"{ANNOTATION_PREFIX}/operator-version"

_LABEL_VALUE_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def name_of(mlmodel: dict) -> str:
    return mlmodel["metadata"]["name"]


def namespace_of(mlmodel: dict) -> str:
    return mlmodel["metadata"].get("namespace") or "default"


def selector_labels(mlmodel: dict) -> dict[str, str]:
    """The Deployment's immutable selector: never add a label here that can change."""
    return {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": name_of(mlmodel)}


def selector_string(mlmodel: dict) -> str:
    return ",".join(f"{key}={value}" for key, value in selector_labels(mlmodel).items())


def label_value(text: str) -> str:
    """A valid label value (63 chars, alphanumeric ends) made from free-form text."""
    cleaned = _LABEL_VALUE_BAD_CHARS.sub("-", text)[:63]
    return cleaned.strip("-_.")


def model_version_label(spec: MLModelSpec) -> str:
    """The model's version, else its short digest, so every child says which model it serves."""
    if spec.model.version and label_value(spec.model.version):
        return label_value(spec.model.version)
    return spec.model.sha256[:12] if spec.model.sha256 else "unverified"


def labels(mlmodel: dict, spec: MLModelSpec) -> dict[str, str]:
    return {
        **selector_labels(mlmodel),
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/version": model_version_label(spec),
    }


def owner_references(mlmodel: dict) -> list[dict]:
    uid = mlmodel["metadata"].get("uid")
    if not uid:
        # `mlmodel render` works on a YAML file that has no uid yet; kubectl cannot own by name.
        return []
    return [
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": name_of(mlmodel),
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def object_meta(mlmodel: dict, spec: MLModelSpec, *, extra_labels: dict | None = None) -> dict:
    meta = {
        "name": name_of(mlmodel),
        "namespace": namespace_of(mlmodel),
        "labels": {**(extra_labels or {}), **labels(mlmodel, spec)},
        "annotations": {OPERATOR_VERSION_ANNOTATION: __version__},
    }
    owners = owner_references(mlmodel)
    if owners:
        meta["ownerReferences"] = owners
    return meta


def service_url(mlmodel: dict, port: int) -> str:
    name = name_of(mlmodel)
    return f"http://{name}.{namespace_of(mlmodel)}.svc.cluster.local:{port}/v2/models/{name}"


# Spec parts that change what a pod runs; a change to any of them must roll the pods.
_ROLLOUT_FIELDS = (
    "model",
    "runtime",
    "batching",
    "database",
    "prediction_logging",
    "auth",
    "node_selector",
    "tolerations",
    "service_account_name",
)
# Added since: they count only when set, so an operator upgrade rolls no model that leaves them out.
_ROLLOUT_FIELDS_WHEN_SET = ("cache", "shadow")


def canary_hash(spec: MLModelSpec) -> str:
    """Short digest of spec.canary: a verdict holds for the canary it was reached for."""
    parts = spec.canary.model_dump(by_alias=True, mode="json") if spec.canary else None
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def rollout_hash(spec: MLModelSpec) -> str:
    """Short, stable digest of the spec parts that require new pods (defaults applied)."""
    fields = {*_ROLLOUT_FIELDS, *(f for f in _ROLLOUT_FIELDS_WHEN_SET if getattr(spec, f) is not None)}
    parts = spec.model_dump(include=fields, by_alias=True, mode="json")
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
