"""What changed between two generations of an MLModel, as stored in ``rollouts.changes``."""

from __future__ import annotations

from typing import Any

from .events import ModelSpec

# Stored key -> ModelSpec attribute. Keys are short and stable: they are part of the stored data.
TRACKED_FIELDS = {
    "uri": "model_uri",
    "digest": "sha256",
    "format": "format",
    "image": "runtime_image",
    "replicas": "desired_replicas",
}

LONG_VALUES = {"uri", "image"}


def diff_specs(previous: ModelSpec | None, current: ModelSpec) -> dict[str, Any]:
    """``{"created": true}`` for a first rollout, else ``{key: {"from": old, "to": new}}``.

    An empty dict means a new generation that changed none of the tracked fields
    (resources, env, autoscaling...).
    """
    if previous is None:
        return {"created": True}
    changes: dict[str, Any] = {}
    for key, attribute in TRACKED_FIELDS.items():
        old, new = getattr(previous, attribute), getattr(current, attribute)
        if old != new:
            changes[key] = {"from": old, "to": new}
    return changes


def describe_changes(changes: dict[str, Any]) -> str:
    """One short line for people: ``digest 1a2b3c4d5e6f -> 9f8e7d6c5b4a, replicas 2 -> 3``.

    Long values (URI, image) show only their new value: the row below holds the old one.
    """
    if changes.get("created"):
        return "created"
    if not changes:
        return "other spec fields"
    parts = []
    for key in TRACKED_FIELDS:
        if key in changes:
            old, new = changes[key].get("from"), changes[key].get("to")
            if key in LONG_VALUES:
                parts.append(f"{key} {_short(key, new)}")
            else:
                parts.append(f"{key} {_short(key, old)} -> {_short(key, new)}")
    return ", ".join(parts)


def _short(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "digest":
        return str(value)[:12]
    return str(value)
