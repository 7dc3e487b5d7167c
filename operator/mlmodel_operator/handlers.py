"""Thin kopf handlers: each says when to act and hands the work to the reconcile pass."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Sequence
from typing import Any

import kopf
from mlmodel_spec.resource import API_GROUP, API_VERSION, KIND, PLURAL

from mlmodel_operator import metrics
from mlmodel_operator.builders import InvalidSpec
from mlmodel_operator.builders.common import ANNOTATION_PREFIX, MANAGED_BY
from mlmodel_operator.kube import MAX_RETRY_AFTER, ApiError, NotOurs
from mlmodel_operator.metadata import MetadataRecorder
from mlmodel_operator.peering import CLUSTER_PEERING
from mlmodel_operator.reconcile import (
    WATCHED_CHILD_TYPES,
    Context,
    reconcile,
    sync_status,
)
from mlmodel_operator.resync import resync_forever

MLMODELS = (API_GROUP, API_VERSION.split("/")[1], PLURAL)
DEPLOYMENTS = ("apps", "v1", "deployments")
EVENT_POSTERS = 8  # Events posted at once
MANAGED_LABELS = {"app.kubernetes.io/managed-by": MANAGED_BY}
# Each watched child kind as kopf names resources: ("apps/v1", "deployments"), ("v1", "services")...
WATCHED_CHILDREN = [(rtype.api_version, rtype.plural) for rtype in WATCHED_CHILD_TYPES]


def configure_kopf(settings: kopf.OperatorSettings, ctx: Context) -> None:
    """kopf's bookkeeping goes to annotations with our prefix, never into `status`."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX, v1=False
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration", v1=False
    )
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    # Handler log lines stay logs; Events are posted explicitly, plus warnings and errors.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "mlmodel-operator"
    settings.posting.event_name_prefix = "mlmodel-operator-"
    # Events are posted in the background; kopf's default (no limit) posts each object's at once
    # over a connection of its own, about 80 TLS connections (0.3 MB each) in a burst. A poster
    # holds its slot until its object has been quiet for idle_timeout (kopf: 1 s, which let 4
    # posters drain only 4 objects a second): it leaves as soon as its object's Events are out.
    settings.posting.worker_limit = EVENT_POSTERS
    settings.posting.idle_timeout = 0.05
    # Only the resources known at start-up are served: no need to list/watch all CRDs.
    settings.scanning.disabled = True
    # Children are watched (the operator's own only) so that passes need no reads of them.
    for api_version, plural in WATCHED_CHILDREN:
        settings.watching.label_selectors[api_version, plural] = ",".join(
            f"{k}={v}" for k, v in MANAGED_LABELS.items()
        )
    settings.networking.request_timeout = ctx.settings.api_timeout_seconds
    settings.peering.lifetime = ctx.settings.peering_lifetime_seconds


def retry_delay(ctx: Context, retry: int) -> float:
    """Exponential backoff for transient API errors, capped by the resync interval."""
    return float(min(2**retry, max(ctx.settings.resync_interval_seconds, 1.0)))


async def reconcile_guarded(
    ctx: Context, body: kopf.Body, logger: logging.Logger, retry: int
) -> None:
    """One pass, serialised per MLModel with the resync loop; errors become kopf's retry policy."""
    started = time.monotonic()
    try:
        async with ctx.reconcile_slots, ctx.lock_for(body["metadata"]["uid"]):
            await reconcile(ctx, copy.deepcopy(dict(body)), logger)
    except InvalidSpec as error:
        metrics.RECONCILES.labels(result="invalid_spec").inc()
        # Not retried until the spec changes: the Degraded condition says what to fix.
        raise kopf.PermanentError(f"invalid spec: {error}") from None
    except NotOurs as error:
        metrics.RECONCILES.labels(result="error").inc()
        raise kopf.TemporaryError(str(error), delay=ctx.settings.resync_interval_seconds) from None
    except ApiError as error:
        # Transient trouble is retried soon; a refusal (403 quota, 422 webhook) needs a human,
        # so it is retried at the resync pace rather than hammered.
        transient = error.transient
        metrics.RECONCILES.labels(result="retry" if transient else "error").inc()
        delay = retry_delay(ctx, retry) if transient else ctx.settings.resync_interval_seconds
        if error.retry_after is not None:
            # The server knows best when to come back (within reason).
            delay = max(delay, min(error.retry_after, MAX_RETRY_AFTER))
        raise kopf.TemporaryError(str(error), delay=delay) from None
    else:
        metrics.RECONCILES.labels(result="success").inc()
    finally:
        metrics.RECONCILE_DURATION.observe(time.monotonic() - started)


def controlling_mlmodel(deployment: kopf.Body) -> tuple[str, str] | None:
    """The name and uid of the MLModel that controls `deployment`, if one does."""
    for ref in deployment.get("metadata", {}).get("ownerReferences") or ():
        if (
            ref.get("kind") == KIND
            and ref.get("apiVersion") == API_VERSION
            and ref.get("controller")
        ):
            return ref.get("name"), ref.get("uid")
    return None


def register(registry: kopf.OperatorRegistry, ctx: Context, namespaces: Sequence[str] = ()) -> None:
    """Register every handler on `registry`, bound to `ctx`; `namespaces` as served by kopf."""

    background: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def on_startup(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
        configure_kopf(settings, ctx)
        if ctx.settings.metrics_port:
            metrics.serve_metrics(ctx.settings.metrics_port)
            logger.info("metrics served: port=%s", ctx.settings.metrics_port)
        # No connection is made here: the writer connects (and migrates) in the background, so
        # a database that is down delays the history, never the reconciling.
        ctx.recorder = MetadataRecorder.from_settings(ctx.settings)
        ctx.recorder.start()
        await ctx.kube.login()
        if ctx.peering.name is not None and not ctx.peering.namespaces:
            # kopf waits for its peering object; an install cannot create it in the same
            # `kubectl apply` as its CRD (the kind is not served yet), so the operator does.
            peering = {
                "apiVersion": CLUSTER_PEERING.api_version,
                "kind": CLUSTER_PEERING.kind,
                "metadata": {"name": ctx.peering.name},
            }
            if await ctx.kube.create_if_missing(CLUSTER_PEERING, peering):
                logger.info("peering object created: name=%s", ctx.peering.name)
        logger.info(
            "metadata store configured: backend=%s%s",
            ctx.recorder.backend,
            "" if ctx.settings.database_url else f" path={ctx.settings.cache_dir}",
        )

    @kopf.on.login(registry=registry)
    async def on_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # kopf's watches log in as the operator's own client does (kubernetes_asyncio): in a
        # pod the service account, elsewhere $KUBECONFIG or ~/.kube/config, exec plugins too.
        return await kopf.login_via_async_client(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def on_cleanup(**_: Any) -> None:
        tasks = [*background, *following]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ctx.kube.close()
        if ctx.diagnosis is not None:
            await ctx.diagnosis.close()
        if ctx.pod_metrics is not None:
            await ctx.pod_metrics.close()
        await ctx.recorder.close(ctx.settings.metadata_flush_timeout_seconds)

    @kopf.on.resume(*MLMODELS, registry=registry)
    @kopf.on.create(*MLMODELS, registry=registry)
    @kopf.on.update(*MLMODELS, registry=registry)
    async def on_mlmodel_changed(
        body: kopf.Body, logger: logging.Logger, retry: int, **_: Any
    ) -> None:
        await reconcile_guarded(ctx, body, logger, retry)

    async def on_child_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        """Keep the children cache current (whole bodies of Deployments only).

        A coroutine, as every handler here: kopf runs plain functions in a thread pool."""
        ctx.children.observe(type, dict(body), keep_body=body.get("kind") == "Deployment")

    for api_version, plural in WATCHED_CHILDREN:
        if plural != DEPLOYMENTS[2]:
            kopf.on.event(
                api_version, plural, labels=MANAGED_LABELS, registry=registry, id=f"cache-{plural}"
            )(on_child_event)

    pending_status: dict[tuple[str, str], asyncio.Task[None]] = {}
    # Every status task until it ends: one past its debounce has left pending_status but may still
    # be talking to the API, and the cleanup must stop it before the client closes.
    following: set[asyncio.Task[None]] = set()

    async def follow_deployment(
        namespace: str, name: str, uid: str, logger: logging.Logger
    ) -> None:
        await asyncio.sleep(ctx.settings.status_debounce_seconds)
        del pending_status[namespace, name]
        try:
            # The Deployment as the watch shows it now (read if it is gone from the watch);
            # never at the same time as a reconcile pass of the MLModel (one status writer).
            async with ctx.lock_for(uid):
                rolled_back = await sync_status(ctx, namespace, name, logger)
                if rolled_back is not None:
                    await reconcile(ctx, rolled_back, logger)
        except (ApiError, NotOurs, InvalidSpec) as error:
            # Event handlers are not retried; the resync loop catches up.
            logger.warning("status not updated from deployment event: error=%s", error)

    @kopf.on.event(*DEPLOYMENTS, labels=MANAGED_LABELS, registry=registry)
    async def on_deployment_event(
        type: str | None, body: kopf.Body, logger: logging.Logger, **_: Any
    ) -> None:
        """The MLModel's status follows its Deployment's rollout as the controller reports it.

        A rollout is a burst of Deployment events: the first schedules one status update a
        moment later, which the others join, computed from the state the watch shows then."""
        await on_child_event(type, body)
        owner = controlling_mlmodel(body)
        namespace = body.get("metadata", {}).get("namespace")
        if owner is None or namespace is None or (namespace, owner[0]) in pending_status:
            return
        name, uid = owner
        task = asyncio.create_task(
            follow_deployment(namespace, name, uid, logger), name=f"status {namespace}/{name}"
        )
        pending_status[namespace, name] = task
        following.add(task)
        task.add_done_callback(following.discard)

    @kopf.on.event(*MLMODELS, registry=registry)
    async def on_mlmodel_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        if not background:
            # Started here rather than at start-up: kopf.event() needs the event queue that kopf
            # puts in the context of resource handlers only. No MLModel yet: nothing to resync.
            background.append(asyncio.create_task(resync_forever(ctx, namespaces), name="resync"))
        uid = body.get("metadata", {}).get("uid")
        if not uid:
            return
        ctx.mlmodels.observe(type, dict(body))
        if type == "DELETED":
            # No finalizer holds the MLModel for this: a deletion while the operator is down
            # is caught by the resync's comparison with the store instead.
            ctx.recorder.deleted(body)
            ctx.forget(uid)
        else:
            ctx.census.observe(uid, (body.get("status") or {}).get("conditions"))
