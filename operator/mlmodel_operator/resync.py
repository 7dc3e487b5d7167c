"""Level-based drift repair: every resync interval, each MLModel is reconciled from a fresh list.

This is a loop of the operator rather than a kopf timer because kopf puts a finalizer on every
object that has a timer, and a finalizer would block `kubectl delete mlmodel` whenever the
operator is not running. The one piece of external state, the metadata store's deployment rows,
needs none either: each pass marks deleted the rows whose MLModel is no longer listed.
"""

from __future__ import annotations

import asyncio
import datetime
import fnmatch
import logging
from collections.abc import Sequence
from typing import Any

from mlmodel_operator.builders import InvalidSpec
from mlmodel_operator.kube import MLMODEL, ApiError, NotOurs
from mlmodel_operator.peering import paused_by, peering_objects, peers_of
from mlmodel_operator.reconcile import Context, reconcile

logger = logging.getLogger("mlmodel_operator.resync")
# MLModels reconciled at once during a resync pass (each pass is a handful of reads).
CONCURRENCY = 8


def served(namespace: str, patterns: Sequence[str]) -> bool:
    """Whether the operator serves `namespace` (no patterns: every namespace; kopf's glob syntax)."""
    if not patterns:
        return True
    included = [p for p in patterns if not p.startswith("!")]
    excluded = [p[1:] for p in patterns if p.startswith("!")]
    return (not included or any(fnmatch.fnmatchcase(namespace, p) for p in included)) and not any(
        fnmatch.fnmatchcase(namespace, p) for p in excluded
    )


async def resync_forever(ctx: Context, namespaces: Sequence[str]) -> None:
    """Run until cancelled (at operator shutdown)."""
    was_paused = False
    while True:
        await asyncio.sleep(ctx.settings.resync_interval_seconds)
        try:
            paused = await paused_by_peers(ctx)
            if paused != was_paused:
                logger.info(
                    "resync %s: peering=%s", "paused" if paused else "resumed", ctx.peering.name
                )
                was_paused = paused
            if not paused:
                await resync_once(ctx, namespaces)
        except ApiError as error:
            logger.warning("resync skipped: error=%s", error)
        except Exception:  # a bug must not end drift repair for good: log it, try next time
            logger.exception("resync failed")


async def paused_by_peers(ctx: Context) -> bool:
    """Whether another operator is active, so this one must not act (as kopf has paused it)."""
    name = ctx.peering.name
    if name is None:
        return False
    now = datetime.datetime.now(datetime.UTC)
    for rtype, namespace in peering_objects(ctx.peering):
        obj = await ctx.kube.get(rtype, namespace, name)
        if obj is None:
            if ctx.peering.mandatory:
                return True  # kopf waits for its peering object too
            continue
        if paused_by(peers_of(obj), ctx.peering.identity, ctx.peering.priority, now):
            return True
    return False


async def resync_once(ctx: Context, namespaces: Sequence[str]) -> None:
    # Plain namespace names are listed one by one, so a namespaced install needs no cluster-wide
    # list permission; patterns (globs, exclusions) need the cluster-wide list.
    plain = namespaces and not any(set(ns) & set("*?[!") for ns in namespaces)
    # Read before listing: a model created in between must not look deleted.
    recorded = await ctx.recorder.live_deployments()
    items: list[dict[str, Any]] = []
    for namespace in namespaces if plain else [None]:
        items += (await ctx.kube.list(MLMODEL, namespace)).get("items") or []
    # The listing is complete (an error would have ended the pass): models deleted while the
    # operator was down, or while its watch was reconnecting, are recorded as deleted now.
    ctx.recorder.sweep(recorded, items, lambda namespace: served(namespace, namespaces))
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(mlmodel: dict[str, Any]) -> None:
        async with gate:
            await _resync_one(ctx, mlmodel)

    await asyncio.gather(
        *(
            one(mlmodel)
            for mlmodel in items
            if served(mlmodel["metadata"]["namespace"], namespaces)
            and not mlmodel["metadata"].get("deletionTimestamp")
        )
    )


class ObjectLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes messages with the object, as kopf's per-object logger does."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['object']}] {msg}", kwargs  # type: ignore[index]


async def _resync_one(ctx: Context, mlmodel: dict[str, Any]) -> None:
    meta = mlmodel["metadata"]
    object_logger = ObjectLogger(logger, {"object": f"{meta['namespace']}/{meta['name']}"})
    try:
        async with ctx.lock_for(meta["uid"]):
            await reconcile(ctx, mlmodel, object_logger)  # type: ignore[arg-type]
    except InvalidSpec:
        pass  # the status already says what to fix; nothing to retry until the spec changes
    except (ApiError, NotOurs) as error:
        object_logger.warning("resync failed: error=%s", error)
