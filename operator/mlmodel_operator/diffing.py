"""Pure comparisons of desired and live objects, so the operator writes only when something differs."""

from __future__ import annotations

from typing import Any

# The parts of a child the operator owns; the API server and other controllers own the rest.
OWNED_METADATA = ("labels", "annotations", "ownerReferences")
NOT_OWNED_TOP_LEVEL = ("apiVersion", "kind", "metadata", "status")


def covers(live: Any, desired: Any) -> bool:
    """True when every field set in `desired` has the same value in `live`.

    Fields the server adds (defaults, clusterIP, status...) are ignored; list items are compared
    position by position, so a list the server defaults inside (containers) still matches.
    """
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            key in live and covers(live[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(covers(item, wanted) for item, wanted in zip(live, desired, strict=True))
        )
    if _is_number(live) and _is_number(desired):
        return live == desired  # JSON does not tell 2 from 2.0
    return type(live) is type(desired) and live == desired  # so True never equals 1


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def owned_fields(desired: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that puts the operator's fields of `desired` on the live object."""
    metadata = desired.get("metadata") or {}
    owned = {key: value for key, value in desired.items() if key not in NOT_OWNED_TOP_LEVEL}
    owned_meta = {key: metadata[key] for key in OWNED_METADATA if key in metadata}
    if owned_meta:
        owned["metadata"] = owned_meta
    return owned


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The smallest JSON merge patch (RFC 7386) that turns `old` into `new`."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if key in old and before == value:
            continue
        if isinstance(value, dict) and isinstance(before, dict):
            patch[key] = merge_patch(before, value)
        else:
            patch[key] = value
    return patch


def controller_uid(obj: dict[str, Any]) -> str | None:
    """The uid of the object's controlling owner, if it has one."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref.get("uid")
    return None
