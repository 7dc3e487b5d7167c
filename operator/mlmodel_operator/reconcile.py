"""One reconcile pass over an MLModel: children applied, stale ones removed, status written if it changed."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections.abc import Callable
from typing import Any

import kopf
from mlmodel_spec.resource import MLModelSpec, parse_spec

from mlmodel_operator import metrics, rollback
from mlmodel_operator.agreement import ShadowAgreement
from mlmodel_operator.builders import (
    HTTPROUTE_CRD,
    SERVICEMONITOR_CRD,
    InvalidSpec,
    build_children,
    canary_name,
    canary_routed,
    shadow_name,
)
from mlmodel_operator.canary import FAILED, CanaryAnalysis, CanaryPods, canary_pods, with_canary
from mlmodel_operator.children import REPLICAS_FIELD, Children, Seen
from mlmodel_operator.conditions import DEGRADED, READY, get_condition
from mlmodel_operator.diagnosis import PodDiagnosis
from mlmodel_operator.kube import (
    CHILD_TYPES,
    DEPLOYMENT,
    HTTPROUTE,
    SERVICE,
    SERVICEMONITOR,
    ApiError,
    Applied,
    KubeClient,
    NotOurs,
    ResourceType,
    applies_field,
    change_marker,
)
from mlmodel_operator.metadata import MetadataRecorder
from mlmodel_operator.mlmodels import MLModels
from mlmodel_operator.peering import Peering
from mlmodel_operator.podmetrics import PodMetrics
from mlmodel_operator.settings import OperatorSettings
from mlmodel_operator.status import compute_status

# A status write that conflicts is computed again from the watch's copy this many times before
# it is left to kopf's retry (or to the next Deployment event or resync).
STATUS_ATTEMPTS = 3
STATUS_RETRY_DELAY = 0.5  # seconds, times the attempt's number
_UNREAD = object()
# The Degraded reason when a child's name is taken by an object another owner controls.
CHILD_CONFLICT = "ChildConflict"
# The child kinds the operator watches (every kind but the ServiceMonitor and the HTTPRoute,
# whose CRDs may come and go while the operator runs): the Children cache knows them without a
# request.
WATCHED_CHILD_TYPES = tuple(
    rtype for rtype in CHILD_TYPES if rtype not in (SERVICEMONITOR, HTTPROUTE)
)
WATCHED_KINDS = frozenset(rtype.kind for rtype in WATCHED_CHILD_TYPES)


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
    # Read the runtimes' own /metrics: how often spec.shadow's candidate agrees, how
    # spec.canary's does against the served model.
    pod_metrics: PodMetrics | None = None
    agreement: ShadowAgreement | None = None
    canary: CanaryAnalysis | None = None
    # Records in the metadata store; replaced by the enabled one at operator start-up.
    recorder: MetadataRecorder = dataclasses.field(default_factory=MetadataRecorder)
    # The children as the watches last showed them, and what was last applied to each.
    children: Children = dataclasses.field(default_factory=Children)
    # The MLModels as the watch last showed them (or as our own status writes returned them).
    mlmodels: MLModels = dataclasses.field(default_factory=MLModels)
    # MLModels (by uid) one of whose children is controlled by another owner: (reason, message).
    conflicts: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)

    reconcile_slots: asyncio.Semaphore = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        if self.diagnosis is None:
            self.diagnosis = PodDiagnosis(self.settings)
        if self.pod_metrics is None:
            self.pod_metrics = PodMetrics(self.settings)
        if self.agreement is None:
            self.agreement = ShadowAgreement(self.settings, self.pod_metrics)
        if self.canary is None:
            self.canary = CanaryAnalysis(self.settings, self.pod_metrics)
        # Passes started by kopf's handlers that run at once; the others wait their turn.
        self.reconcile_slots = asyncio.Semaphore(self.settings.max_concurrent_reconciles)
    # One lock per MLModel uid: event handlers and the resync loop never reconcile it at once.
    locks: dict[str, asyncio.Lock] = dataclasses.field(default_factory=dict)

    def lock_for(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str) -> None:
        self.locks.pop(uid, None)
        self.conflicts.pop(uid, None)
        assert self.diagnosis is not None and self.agreement is not None and self.canary is not None
        self.diagnosis.forget(uid)
        self.agreement.forget(uid)
        self.canary.forget(uid)
        self.census.forget(uid)
        self.recorder.forget(uid)

    def now(self) -> str:
        return self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")

    async def servicemonitor_supported(self) -> bool:
        return await self.kube.crd_installed(SERVICEMONITOR_CRD)

    async def httproute_supported(self) -> bool:
        return await self.kube.crd_installed(HTTPROUTE_CRD)


async def reconcile(ctx: Context, mlmodel: dict[str, Any], logger: logging.Logger) -> None:
    """Make the children match the MLModel, then its status match the children.

    Raises `InvalidSpec` (after writing the Degraded status) when the spec cannot be served.
    """
    # A stale copy would re-apply an older spec's children and write the status again (with a
    # second Ready Event) over the operator's own last write.
    mlmodel = ctx.mlmodels.newest(mlmodel)
    meta = mlmodel["metadata"]
    namespace, uid = meta["namespace"], meta["uid"]
    monitoring = await ctx.servicemonitor_supported()
    routes = await ctx.httproute_supported()
    try:
        # The spec, or the last Ready revision's while this generation is rolled back.
        children = build_children(
            rollback.served(mlmodel),
            ctx.settings,
            servicemonitor_supported=monitoring,
            httproute_supported=routes,
        )
    except InvalidSpec:  # the status says what to fix; the children of the last good spec stay
        ctx.recorder.invalid(mlmodel)
        await sync_status(ctx, namespace, meta["name"], logger, mlmodel=mlmodel)
        raise

    deployment: Any = _UNREAD
    conflict: NotOurs | None = None
    changes: list[tuple[str, str, str]] = []  # (outcome, kind, name) of each child written
    for child in children:
        try:
            outcome, live = await apply_child(ctx, child)
        except NotOurs as error:
            conflict = conflict or error  # the other children are still made and repaired
            continue
        if outcome is not Applied.UNCHANGED:
            changes.append((outcome.value, child["kind"], child["metadata"]["name"]))
        if (
            child["kind"] == DEPLOYMENT.kind
            and child["metadata"]["name"] == meta["name"]
            and live is not None
        ):
            deployment = live
    ctx.recorder.applied(mlmodel)

    wanted = {(child["apiVersion"], child["kind"]) for child in children}
    for rtype in CHILD_TYPES:
        if (rtype.api_version, rtype.kind) in wanted or (
            rtype is SERVICEMONITOR and not monitoring
        ) or (rtype is HTTPROUTE and not (routes and _made_httproute(mlmodel))):
            continue
        # Every child is named after its MLModel.
        if await delete_stale(ctx, rtype, namespace, meta["name"], uid):
            changes.append(("Deleted", rtype.kind, meta["name"]))
    # The candidates of spec.shadow and spec.canary once the spec drops them (watched kinds:
    # the cache answers, no request).
    made = {(child["kind"], child["metadata"]["name"]) for child in children}
    for rtype, name in (
        (DEPLOYMENT, shadow_name(mlmodel)),
        (SERVICE, shadow_name(mlmodel)),
        (DEPLOYMENT, canary_name(mlmodel)),
        (SERVICE, canary_name(mlmodel)),
    ):
        if (rtype.kind, name) not in made and await delete_stale(ctx, rtype, namespace, name, uid):
            changes.append(("Deleted", rtype.kind, name))
    _announce_children(mlmodel, logger, changes)

    if conflict is None:
        ctx.conflicts.pop(uid, None)
    else:
        ctx.conflicts[uid] = (CHILD_CONFLICT, f"{conflict}; delete it or rename the MLModel")
    rolled_back = await sync_status(
        ctx, namespace, meta["name"], logger, deployment=deployment, mlmodel=mlmodel
    )
    if conflict is not None:
        raise conflict
    if rolled_back is not None:
        # This pass's status rolled the generation back: serve the stable revision at once.
        await reconcile(ctx, rolled_back, logger)


def _made_httproute(mlmodel: dict[str, Any]) -> bool:
    """Whether the last status says an HTTPRoute was made: HTTPRoutes are not watched, and this
    spares a GET per pass for every model without one where the Gateway API is installed."""
    exposure = (mlmodel.get("status") or {}).get("exposure") or {}
    return exposure.get("kind") == HTTPROUTE.kind


async def apply_child(ctx: Context, child: dict[str, Any]) -> tuple[Applied, dict[str, Any] | None]:
    """Server-Side Apply of one child, skipped when the watch shows it as last applied.

    Returns the outcome and the live child (None when skipped, unless it is the Deployment,
    which the watch keeps whole).
    """
    meta = child["metadata"]
    watched = child["kind"] in WATCHED_KINDS
    seen = ctx.children.seen(child["kind"], meta["namespace"], meta["name"]) if watched else None
    if watched and ctx.children.unchanged_since_applied(child):
        return Applied.UNCHANGED, seen.body if seen is not None else None
    await keep_replicas(ctx, child, seen)
    outcome, live = await ctx.kube.apply(child, seen_version=seen.version if seen else None)
    upgraded = await ctx.kube.forget_client_side_apply(live)
    if upgraded is not None:
        # Apply again now that the old fields are ours: what 0.1 set and we no longer do goes.
        _, live = await ctx.kube.apply(child, seen_version=change_marker(upgraded))
        outcome = Applied.PATCHED
    ctx.children.record_applied(child, live)
    return outcome, live


async def keep_replicas(ctx: Context, child: dict[str, Any], seen: Seen | None) -> None:
    """Before a Deployment is applied without `replicas` (an HPA owns them now) while the last
    apply set them, hand them over at their current value instead of letting them reset."""
    if child["kind"] != DEPLOYMENT.kind or "replicas" in child["spec"]:
        return
    if seen is not None and seen.body is not None:
        applied, replicas = seen.replicas_applied, seen.body["spec"].get("replicas")
    else:  # not in the watch yet (created now, or the operator just started): ask
        meta = child["metadata"]
        live = await ctx.kube.get(DEPLOYMENT, meta["namespace"], meta["name"])
        if live is None:
            return
        applied, replicas = applies_field(live, REPLICAS_FIELD), live["spec"].get("replicas")
    if applied and isinstance(replicas, int):
        await ctx.kube.hand_over_replicas(child, replicas)


async def delete_stale(
    ctx: Context, rtype: ResourceType, namespace: str, name: str, owner_uid: str
) -> bool:
    """Delete a child the spec no longer wants, if this MLModel controls it."""
    if rtype.kind not in WATCHED_KINDS:
        return await ctx.kube.delete_owned(rtype, namespace, name, owner_uid)
    seen = ctx.children.seen(rtype.kind, namespace, name)
    if seen is None or seen.controller_uid != owner_uid:
        return False
    return await ctx.kube.delete(rtype, namespace, name)


async def sync_status(
    ctx: Context,
    namespace: str,
    name: str,
    logger: logging.Logger,
    *,
    deployment: Any = _UNREAD,
    mlmodel: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Write the status computed from the live MLModel and Deployment, only if it differs.

    Returns the MLModel as written when this status changes what its children must be (a
    rollback starts: they are built from the stable revision; a canary failed: it runs no pod
    more): `reconcile` it. Else None.

    `mlmodel` is the MLModel its reconcile pass worked from, else as the watch last showed it (the
    operator never reads an MLModel itself: one the watch has not shown yet gets its status
    from its own handler); `deployment` is the Deployment as just seen (None: known to be
    gone), else taken from the watch, else read.
    """
    for attempt in range(STATUS_ATTEMPTS):
        if mlmodel is None:
            mlmodel = ctx.mlmodels.get(namespace, name)
        if mlmodel is None or mlmodel["metadata"].get("deletionTimestamp"):
            return None
        serving = rollback.served(mlmodel)
        if deployment is _UNREAD:
            seen = ctx.children.seen(DEPLOYMENT.kind, namespace, name)
            if seen is not None and seen.body is not None:
                deployment = seen.body
            else:
                deployment = await ctx.kube.get(DEPLOYMENT, namespace, name)
        assert ctx.diagnosis is not None and ctx.agreement is not None and ctx.canary is not None
        try:
            spec = parse_spec(serving)
        except InvalidSpec:
            spec = None  # compute_status says what to fix
        # An invalid spec (the spec model's refusal) gives the Degraded/InvalidSpec status here.
        status = compute_status(
            serving,
            deployment,
            servicemonitor_supported=await ctx.servicemonitor_supported(),
            httproute_supported=await ctx.httproute_supported(),
            now=ctx.now(),
            artifact_problem=await ctx.diagnosis.problem(ctx.kube, serving, deployment),
            conflict=ctx.conflicts.get(mlmodel["metadata"]["uid"]),
            shadow=await ctx.agreement.status(ctx.kube, serving, spec) if spec else None,
        )
        canary = (
            await ctx.canary.status(
                ctx.kube,
                serving,
                spec,
                await _canary_pods(ctx, serving, spec),
                routed=canary_routed(spec, httproute_supported=await ctx.httproute_supported()),
            )
            if spec
            else None
        )
        status = with_canary(
            status, canary, generation=mlmodel["metadata"].get("generation"), now=ctx.now()
        )
        status, starting = rollback.settle(mlmodel, status, now=ctx.now())
        previous = mlmodel.get("status") or {}
        if status == previous:
            ctx.recorder.status(mlmodel, status)
            return None
        try:
            written = await ctx.kube.patch_status(mlmodel, status)
        except ApiError as error:
            if error.code != 409:
                raise
            # Only a namesake that replaced the MLModel (or a proxy's say-so) conflicts: try
            # again with what the watch shows by then.
            logger.debug("status write conflicted, retrying with the watch's copy")
            deployment, mlmodel = _UNREAD, None
            await asyncio.sleep(STATUS_RETRY_DELAY * (attempt + 1))
            continue
        ctx.mlmodels.observe("MODIFIED", written)
        _announce_transitions(ctx, mlmodel, previous, status, logger)
        ctx.recorder.status(mlmodel, status)
        if _newly_failed(previous, status):
            # The failed canary's pods go now, not at the next pass.
            logger.warning("canary failed: %s", status["canary"]["message"])
            kopf.warn(mlmodel, reason="CanaryFailed", message=status["canary"]["message"])
            return written
        if starting is None:
            return None
        logger.warning(
            "rolled back: generation=%s to_generation=%s reason=%s",
            starting.generation, starting.to_generation, starting.reason,
        )
        metrics.ROLLBACKS.labels(reason=starting.reason).inc()
        return written
    raise ApiError(
        "patch",
        409,
        "Conflict",
        f"MLModel {namespace}/{name} kept changing during its status write",
    )


async def _canary_pods(ctx: Context, mlmodel: dict[str, Any], spec: MLModelSpec) -> CanaryPods:
    assert ctx.diagnosis is not None
    if spec.canary is None:
        return CanaryPods()
    seen = ctx.children.seen(DEPLOYMENT.kind, mlmodel["metadata"]["namespace"], canary_name(mlmodel))
    deployment = seen.body if seen is not None else None
    problem = await ctx.diagnosis.problem(ctx.kube, mlmodel, deployment, canary=True)
    return canary_pods(deployment, problem)


def _newly_failed(previous: dict[str, Any], status: dict[str, Any]) -> bool:
    before, now = previous.get("canary") or {}, status.get("canary") or {}
    return now.get("verdict") == FAILED and (
        before.get("verdict") != FAILED or before.get("specHash") != now.get("specHash")
    )


def _announce_children(
    mlmodel: dict[str, Any], logger: logging.Logger, changes: list[tuple[str, str, str]]
) -> None:
    """Log each child written; one Event per outcome of the pass ("Created Deployment m, Service m")."""
    by_outcome: dict[str, list[str]] = {}
    for outcome, kind, name in changes:
        logger.info("child %s: kind=%s name=%s", outcome.lower(), kind, name)
        by_outcome.setdefault(outcome, []).append(f"{kind} {name}")
    for outcome, children in by_outcome.items():
        kopf.event(
            mlmodel, type="Normal", reason=f"Child{outcome}", message=f"{outcome} {', '.join(children)}"
        )


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
