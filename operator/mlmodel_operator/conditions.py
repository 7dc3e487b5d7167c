"""Kubernetes-style status conditions, set the way Go's meta.SetStatusCondition sets them."""

from __future__ import annotations

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CONDITION_TYPES = (READY, PROGRESSING, DEGRADED)


def get_condition(conditions: list[dict] | None, type: str) -> dict | None:
    for condition in conditions or ():
        if condition.get("type") == type:
            return condition
    return None


def set_condition(
    conditions: list[dict] | None,
    *,
    type: str,
    status: str,
    reason: str,
    message: str,
    observed_generation: int | None,
    now: str,
) -> list[dict]:
    """A new list with condition `type` set; lastTransitionTime moves only when status changes.

    Order is kept (a new type is appended) so that re-setting the same values yields an equal
    list, and a status patch built from it is a no-op.
    """
    if status not in ("True", "False", "Unknown"):
        raise ValueError(f"condition status must be True, False or Unknown, not {status!r}")
    previous = get_condition(conditions, type)
    transition = now
    if previous is not None and previous.get("status") == status and previous.get("lastTransitionTime"):
        transition = previous["lastTransitionTime"]
    updated: dict[str, object] = {
        "type": type,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if observed_generation is not None:
        updated["observedGeneration"] = observed_generation
    result = []
    replaced = False
    for condition in conditions or ():
        if condition.get("type") == type:
            result.append(updated)
            replaced = True
        else:
            result.append(dict(condition))
    if not replaced:
        result.append(updated)
    return result
