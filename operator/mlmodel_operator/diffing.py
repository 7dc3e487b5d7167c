"""Pure comparisons of desired and live objects, so the operator writes only when something differs."""

from __future__ import annotations

import json
from typing import Any

# Where a child keeps the operator's fields as last written (kubectl apply keeps its own the same
# way): a key in there that the desired object no longer has was set by us and must be removed.
LAST_APPLIED_ANNOTATION = "serving.mlmodel.io/last-applied"

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


def last_applied(live: dict[str, Any]) -> dict[str, Any]:
    """The owned fields recorded on `live` at the last write ({} when absent or unreadable)."""
    text = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED_ANNOTATION)
    try:
        recorded = json.loads(text) if text else {}
    except ValueError:
        return {}
    return recorded if isinstance(recorded, dict) else {}


def record_applied(owned: dict[str, Any]) -> dict[str, Any]:
    """`owned` with the last-applied annotation holding `owned` itself (compact, key-sorted JSON)."""
    recorded = json.dumps(owned, sort_keys=True, separators=(",", ":"))
    metadata = dict(owned.get("metadata") or {})
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        LAST_APPLIED_ANNOTATION: recorded,
    }
    return {**owned, "metadata": metadata}


def removals(last: Any, wanted: Any, live: Any) -> dict[str, Any]:
    """Merge-patch nulls for the map keys we set last time, no longer want, and `live` still has.

    Lists are replaced whole by a merge patch, so only maps need this; a key someone else added
    (never in `last`) is left alone.
    """
    if not (isinstance(last, dict) and isinstance(wanted, dict) and isinstance(live, dict)):
        return {}
    patch: dict[str, Any] = {}
    for key, before in last.items():
        if key not in live:
            continue
        if key not in wanted:
            if isinstance(before, dict) and isinstance(live[key], dict) and live[key].keys() - before.keys():
                # A map we no longer want but others added keys to: remove only ours.
                nested = removals(before, {}, live[key])
                if nested:
                    patch[key] = nested
            else:
                patch[key] = None
        else:
            nested = removals(before, wanted[key], live[key])
            if nested:
                patch[key] = nested
    return patch


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` merged in, maps recursively (neither is changed)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_patch(desired: dict[str, Any], live: dict[str, Any]) -> dict[str, Any] | None:
    """The merge patch that makes `live` carry `desired`'s owned fields, or None when it does.

    It sets every owned field, records them in the last-applied annotation, and removes the
    keys the previous write set that `desired` dropped (a nodeSelector entry, a label...).
    """
    owned = owned_fields(desired)
    wanted = record_applied(owned)
    stale = removals(last_applied(live), owned, live)
    if not stale and covers(live, wanted):
        return None
    return deep_merge(wanted, stale)


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
