"""Automatic rollback (pure): which spec the operator serves, and the status that says so.

A generation that reaches Ready becomes the *stable* revision: its spec is kept in
``status.rollout.stable``. When a later generation fails in a way that waiting does not cure
(the reasons below, or a rollout past its progress deadline) and ``spec.rollout.autoRollback``
is on, the operator records ``status.rollout.rolledBack`` and builds the children from the
stable spec again; the MLModel's own spec is never written. A new generation tries again.

The status while rolled back: ``Ready`` as the stable revision's pods make it, with reason
``RolledBack``; ``Degraded=True`` with reason ``RolledBack`` (the spec is not what serves);
a ``RolledBack`` condition naming the failed generation and why. ``docs/rollouts.md`` tells it
for users.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mlmodel_spec.resource import InvalidSpec, parse_spec

from mlmodel_operator.conditions import DEGRADED, READY, get_condition, set_condition

ROLLED_BACK = "RolledBack"
# Failures of a new revision's own pods that waiting does not cure: roll back at once. A pod
# that cannot be scheduled, a missing claim or Secret, a quota: a person or an autoscaler may
# still fix them, so they roll back only when the rollout passes its progress deadline.
ROLLBACK_REASONS = frozenset(
    {
        "ArtifactUnavailable",
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerError",
        "OOMKilled",
        "ImageVolumeUnsupported",
        "ProgressDeadlineExceeded",
    }
)


@dataclasses.dataclass(frozen=True)
class Rollback:
    """A rollback that starts with this status: the failed generation, where to, and why."""

    generation: int
    to_generation: int
    reason: str
    message: str


def _rollout(mlmodel: dict[str, Any]) -> dict[str, Any]:
    return (mlmodel.get("status") or {}).get("rollout") or {}


def _generation(mlmodel: dict[str, Any]) -> int:
    return int(mlmodel["metadata"].get("generation") or 1)


def rolled_back(mlmodel: dict[str, Any]) -> bool:
    """Whether the stored status says this generation is rolled back to the stable spec."""
    rollout = _rollout(mlmodel)
    back = rollout.get("rolledBack") or {}
    return back.get("generation") == _generation(mlmodel) and bool(
        (rollout.get("stable") or {}).get("spec")
    )


def served(mlmodel: dict[str, Any]) -> dict[str, Any]:
    """The MLModel as the operator serves it: itself, or with the stable revision's spec while
    this generation is rolled back (and that spec is still one the operator can serve)."""
    if not rolled_back(mlmodel):
        return mlmodel
    stable = {**mlmodel, "spec": _rollout(mlmodel)["stable"]["spec"]}
    try:
        parse_spec(stable)
    except InvalidSpec:
        return mlmodel
    return stable


def _auto_rollback(mlmodel: dict[str, Any]) -> bool:
    try:
        return parse_spec(mlmodel).rollout.auto_rollback
    except InvalidSpec:
        return False


def settle(
    mlmodel: dict[str, Any], status: dict[str, Any], *, now: str
) -> tuple[dict[str, Any], Rollback | None]:
    """``status`` (computed for ``served(mlmodel)``) with the rollout's part; and the rollback
    that starts now, if this status is the one that decides it.

    Equal input gives an equal result, so an unchanged rollout writes nothing.
    """
    generation = _generation(mlmodel)
    previous = _rollout(mlmodel)
    stable = previous.get("stable")
    back = previous.get("rolledBack")
    conditions = status.get("conditions") or []
    ready = get_condition(conditions, READY) or {}
    degraded = get_condition(conditions, DEGRADED) or {}
    starting: Rollback | None = None

    if rolled_back(mlmodel):
        pass  # the stable revision serves until the spec changes
    elif ready.get("status") == "True":
        stable, back = {"generation": generation, "spec": mlmodel["spec"]}, None
    elif (
        degraded.get("status") == "True"
        and degraded.get("reason") in ROLLBACK_REASONS
        and stable
        and stable.get("generation") != generation
        and _auto_rollback(mlmodel)
    ):
        starting = Rollback(
            generation, int(stable["generation"]), degraded["reason"], degraded.get("message", "")
        )
        back = {
            "generation": generation,
            "reason": starting.reason,
            "message": starting.message,
            "time": now,
        }
    elif back is not None and back.get("generation") != generation:
        back = None  # a new spec is being tried

    result = dict(status)
    rollout = {key: value for key, value in (("stable", stable), ("rolledBack", back)) if value}
    if rollout:
        result["rollout"] = rollout
    else:
        result.pop("rollout", None)
    result["conditions"] = _rollback_conditions(
        result, previous=mlmodel.get("status") or {}, back=back, stable=stable,
        generation=generation, now=now,
    )
    return result, starting


def _rollback_conditions(
    status: dict[str, Any],
    *,
    previous: dict[str, Any],
    back: dict[str, Any] | None,
    stable: dict[str, Any] | None,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    conditions = status.get("conditions") or []
    stored = previous.get("conditions") or []

    def override(type_: str, condition_status: str, reason: str, message: str) -> None:
        """Set a condition with its transition time judged against the stored status, not
        against the status computed for the stable spec (which may say otherwise)."""
        nonlocal conditions
        updated = get_condition(
            set_condition(
                stored,
                type=type_,
                status=condition_status,
                reason=reason,
                message=message,
                observed_generation=generation,
                now=now,
            ),
            type_,
        )
        assert updated is not None
        if get_condition(conditions, type_) is None:
            conditions = [*conditions, updated]
        else:
            conditions = [updated if c.get("type") == type_ else c for c in conditions]

    if back is None or stable is None:
        # Once rolled back, the condition stays and says it is over (kubectl wait can use it).
        if get_condition(stored, ROLLED_BACK) is not None:
            override(
                ROLLED_BACK, "False", "SpecServed", f"generation {generation} is served as its spec says"
            )
        return conditions
    failed = f"generation {back['generation']} failed ({back['reason']}: {back['message']})"
    serving = f"generation {stable['generation']} serves until the spec changes"
    ready = get_condition(conditions, READY) or {}
    if ready.get("status") == "True":
        override(READY, "True", ROLLED_BACK, f"{ready.get('message', '')}; rolled back: {serving}")
    else:
        override(
            READY,
            "False",
            "RollingBack",
            f"{failed}; going back to generation {stable['generation']}",
        )
    degraded = get_condition(conditions, DEGRADED) or {}
    if degraded.get("status") != "True" or degraded.get("reason") == back["reason"]:
        # The stable revision's own trouble, if it has any, is what Degraded reports first.
        override(DEGRADED, "True", ROLLED_BACK, f"{failed}; {serving}")
    override(ROLLED_BACK, "True", back["reason"], f"{failed}; {serving}")
    return conditions
