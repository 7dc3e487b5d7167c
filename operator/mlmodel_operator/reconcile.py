"""One reconcile pass over an MLModel: children applied, stale ones removed, status written if it changed."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections.abc import Callable
from typing import Any

import kopf

from mlmodel_operator import metrics
from mlmodel_operator.builders import (
    SERVICEMONITOR_CRD,
    InvalidSpec,
    build_children,
    child_names,
    spec_refusal,
)
from mlmodel_operator.conditions import DEGRADED, READY, get_condition
from mlmodel_operator.diagnosis import PodDiagnosis
from mlmodel_operator.kube import (
    CHILD_TYPES,
    DEPLOYMENT,
    MLMODEL,
    SERVICEMONITOR,
    ApiError,
    Applied,
    KubeClient,
)
from mlmodel_operator.metadata import Metadata
from mlmodel_operator.peering import Peering
from mlmodel_operator.settings import OperatorSettings
from mlmodel_operator.status import compute_status, invalid_spec_status

# Status writes race with other writers (kopf's annotations, the Deployment watcher): re-read
# and recompute this many times before leaving it to kopf's retry.
STATUS_ATTEMPTS = 3
_UNREAD = object()


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclasses.dataclass
class Context:
    """What every handler needs, built once by `mlmodel operator` and passed down."""

    settings: OperatorSettings
    kube: KubeClient
    census: metrics.ConditionCensus = dataclasses.field(default_factory=metrics.ConditionCensus)
    clock: Callable[[], datetime.datetime] = utc_now
    # Standalone unless `mlmodel operator` runs with kopf peering (the resync loop follows it).
    peering: Peering = dataclasses.field(default_factory=lambda: Peering(name=None, identity=""))
    diagnosis: PodDiagnosis | None = None
    # The metadata store; replaced by the enabled one at operator start-up.
    metadata: Metadata = dataclasses.field(default_factory=Metadata)

    def __post_init__(self) -> None:
        if self.diagnosis is None:
            self.diagnosis = PodDiagnosis(self.settings)
    # One lock per MLModel uid: event handlers and the resync loop never reconcile it at once.
    locks: dict[str, asyncio.Lock] = dataclasses.field(default_factory=dict)

    def lock_for(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str) -> None:
        self.locks.pop(uid, None)
        assert self.diagnosis is not None
        self.diagnosis.forget(uid)
        self.census.forget(uid)
        self.metadata.forget(uid)

    def now(self) -> str:
        return self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")

    async def servicemonitor_supported(self) -> bool:
        return await self.kube.crd_installed(SERVICEMONITOR_CRD)


async def reconcile(ctx: Context, mlmodel: dict[str, Any], logger: logging.Logger) -> None:
    """Make the children match the MLModel, then its status match the children.

    Raises `InvalidSpec` (after writing the Degraded status) when the spec cannot be served.
    """
    meta = mlmodel["metadata"]
    namespace, uid = meta["namespace"], meta["uid"]
    monitoring = await ctx.servicemonitor_supported()
    try:
        children = build_children(mlmodel, ctx.settings, servicemonitor_supported=monitoring)
    except InvalidSpec:  # the status says what to fix; the children of the last good spec stay
        ctx.metadata.invalid(mlmodel)
        await sync_status(ctx, namespace, meta["name"], logger)
        raise

    deployment: Any = _UNREAD
    for child in children:
        outcome, live = await ctx.kube.apply(child)
        if outcome is not Applied.UNCHANGED:
            _announce_child(
                mlmodel, logger, outcome.value, child["kind"], child["metadata"]["name"]
            )
        if child["kind"] == DEPLOYMENT.kind:
            deployment = live
    ctx.metadata.applied(mlmodel)

    wanted = {(child["apiVersion"], child["kind"]) for child in children}
    names = child_names(mlmodel)
    for rtype in CHILD_TYPES:
        if (rtype.api_version, rtype.kind) in wanted or (
            rtype is SERVICEMONITOR and not monitoring
        ):
            continue
        if await ctx.kube.delete_owned(rtype, namespace, names[rtype.kind], uid):
            _announce_child(mlmodel, logger, "Deleted", rtype.kind, names[rtype.kind])

    await sync_status(ctx, namespace, meta["name"], logger, deployment=deployment)


async def sync_status(
    ctx: Context,
    namespace: str,
    name: str,
    logger: logging.Logger,
    *,
    deployment: Any = _UNREAD,
) -> None:
    """Write the status computed from the live MLModel and Deployment, only if it differs.

    `deployment` is the Deployment as just seen (None: known to be gone); it is read otherwise.
    """
    for _ in range(STATUS_ATTEMPTS):
        mlmodel = await ctx.kube.get(MLMODEL, namespace, name)
        if mlmodel is None or mlmodel["metadata"].get("deletionTimestamp"):
            return
        if deployment is _UNREAD:
            deployment = await ctx.kube.get(DEPLOYMENT, namespace, name)
        assert ctx.diagnosis is not None
        refusal = spec_refusal(mlmodel, ctx.settings)
        if refusal is not None:
            status = invalid_spec_status(mlmodel, refusal, now=ctx.now())
        else:
            status = compute_status(
                mlmodel,
                deployment,
                servicemonitor_supported=await ctx.servicemonitor_supported(),
                now=ctx.now(),
                artifact_problem=await ctx.diagnosis.problem(ctx.kube, mlmodel, deployment),
            )
        previous = mlmodel.get("status") or {}
        if status == previous:
            ctx.metadata.status(mlmodel, status)
            return
        try:
            await ctx.kube.patch_status(mlmodel, status)
        except ApiError as error:
            if error.code != 409:
                raise
            logger.debug("status write conflicted, retrying with a fresh read")
            deployment = _UNREAD
            continue
        _announce_transitions(ctx, mlmodel, previous, status, logger)
        ctx.metadata.status(mlmodel, status)
        return
    raise ApiError(
        "patch",
        409,
        "Conflict",
        f"MLModel {namespace}/{name} kept changing during its status write",
    )


def _announce_child(
    mlmodel: dict[str, Any], logger: logging.Logger, outcome: str, kind: str, name: str
) -> None:
    logger.info("child %s: kind=%s name=%s", outcome.lower(), kind, name)
    kopf.event(mlmodel, type="Normal", reason=f"Child{outcome}", message=f"{outcome} {kind} {name}")


def _announce_transitions(
    ctx: Context,
    mlmodel: dict[str, Any],
    previous: dict[str, Any],
    status: dict[str, Any],
    logger: logging.Logger,
) -> None:
    """Post an Event when Ready or Degraded changes, not on every status write.

    kopf.event is used for Normal events: kopf.info obeys the posting level, which is kept at
    WARNING so that handler log lines do not all become Events."""
    before_ready = get_condition(previous.get("conditions"), READY) or {}
    ready = get_condition(status.get("conditions"), READY) or {}
    if ready.get("status") == "True" and before_ready.get("status") != "True":
        logger.info("model ready: replicas=%s", status.get("replicaSummary"))
        kopf.event(mlmodel, type="Normal", reason="Ready", message=ready.get("message", ""))
        since = before_ready.get("lastTransitionTime") or mlmodel["metadata"].get(
            "creationTimestamp"
        )
        if since:
            waited = (ctx.clock() - _parse_time(since)).total_seconds()
            metrics.TIME_TO_READY.observe(max(waited, 0.0))
    elif before_ready.get("status") == "True" and ready.get("status") != "True":
        logger.warning("model not ready: reason=%s", ready.get("reason"))
        kopf.warn(
            mlmodel, reason="NotReady", message=f"{ready.get('reason')}: {ready.get('message')}"
        )

    before_degraded = get_condition(previous.get("conditions"), DEGRADED) or {}
    degraded = get_condition(status.get("conditions"), DEGRADED) or {}
    if degraded.get("status") == "True" and (
        before_degraded.get("status") != "True"
        or before_degraded.get("reason") != degraded.get("reason")
    ):
        logger.warning("model degraded: reason=%s", degraded.get("reason"))
        kopf.warn(
            mlmodel, reason=degraded.get("reason", "Degraded"), message=degraded.get("message", "")
        )
    elif before_degraded.get("status") == "True" and degraded.get("status") != "True":
        kopf.event(mlmodel, type="Normal", reason="Recovered", message=degraded.get("message", ""))


def _parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)
