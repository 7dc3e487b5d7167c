"""The operator's side of the metadata store: reconcile outcomes become deployment and rollout rows.

Nothing here waits for the database: writes are queued by the store's writer, and the one read
(which deployments the store still counts as live) runs in its own thread under a timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

from mlmodel_store.database import Database
from mlmodel_store.queries import live_deployments
from prometheus_client import REGISTRY

from mlmodel_operator.conditions import DEGRADED, READY, get_condition
from mlmodel_operator.rollback import ROLLED_BACK
from mlmodel_operator.rollouts import RolloutEvents
from mlmodel_operator.settings import OperatorSettings

logger = logging.getLogger("mlmodel_operator.metadata")

# How long a resync waits for the store's list of live deployments before it goes without.
READ_TIMEOUT_SECONDS = 5.0

DeploymentKey = tuple[str, str, str]  # namespace, name, uid


@dataclasses.dataclass(frozen=True)
class Health:
    """What the store should hear about an MLModel's current status."""

    kind: Literal["ready", "failed", "rolled_back", "status"]
    phase: str
    ready: bool
    reason: str = ""
    message: str = ""
    # For "rolled_back": the generation served again.
    to_generation: int = 0


def health_of(status: Mapping[str, Any], *, reached_ready: bool) -> Health:
    """The store's view of a computed status (pure).

    Degraded before this generation was ever Ready is a failed rollout; Degraded after it was
    Ready is a change of health of a rollout that succeeded (pods crashing later, say).
    """
    conditions = status.get("conditions")
    ready = get_condition(conditions, READY) or {}
    degraded = get_condition(conditions, DEGRADED) or {}
    back = (status.get("rollout") or {}).get("rolledBack")
    stable = (status.get("rollout") or {}).get("stable")
    if back and stable:
        return Health(
            "rolled_back",
            ROLLED_BACK,
            ready.get("status") == "True",
            reason=back.get("reason") or "",
            message=back.get("message") or "",
            to_generation=int(stable["generation"]),
        )
    if ready.get("status") == "True":
        return Health("ready", "Ready", True)
    if degraded.get("status") == "True":
        if reached_ready:
            return Health("status", "Degraded", False)
        return Health(
            "failed",
            "Failed",
            False,
            reason=degraded.get("reason") or "Degraded",
            message=degraded.get("message") or "",
        )
    return Health("status", "Progressing", False)


def stale_deployments(
    recorded: Iterable[DeploymentKey],
    listed_uids: set[str],
    served: Callable[[str], bool],
) -> list[DeploymentKey]:
    """Rows the store counts as live whose MLModel is gone (pure). Only namespaces this operator
    serves are judged: another operator may own the rest."""
    return [key for key in recorded if served(key[0]) and key[2] not in listed_uids]


def _identity(mlmodel: Mapping[str, Any]) -> tuple[str, int]:
    meta = mlmodel.get("metadata") or {}
    return meta.get("uid") or "", int(meta.get("generation") or 1)


class MetadataRecorder:
    """Records what the operator learns in the metadata store (queued, never awaited); a no-op
    when built with no events queue."""

    def __init__(
        self, events: RolloutEvents | None = None, reader: Database | None = None
    ) -> None:
        self.events = events
        self._reader = reader
        self._read_executor: ThreadPoolExecutor | None = None
        self._read_in_flight: Future[list[DeploymentKey]] | None = None
        # Per uid: the generation whose rollout was recorded in this process, and the latest
        # generation that reached Ready. Health is only recorded for a generation already
        # recorded, so it never precedes (and misses) its rollout row.
        self._observed: dict[str, int] = {}
        self._ready: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> MetadataRecorder:
        """The configured PostgreSQL database, else SQLite in ``settings.cache_dir``."""
        events = RolloutEvents.create(
            settings.database_url,
            cache_dir=settings.cache_dir,
            default_image=settings.runtime_image,
            registry=REGISTRY,  # the registry the operator's /metrics serves
        )
        reader = Database.from_settings(
            settings.database_url, settings.cache_dir, application_name="mlmodel-operator"
        )
        return cls(events, reader)

    @property
    def enabled(self) -> bool:
        return self.events is not None

    @property
    def backend(self) -> str:
        return self._reader.backend if self._reader is not None else "none"

    def start(self) -> None:
        if self.events is not None:
            self.events.start()

    # --- what reconcile passes tell ------------------------------------------------------------
    def applied(self, mlmodel: Mapping[str, Any]) -> None:
        """The children of this generation were applied: open its rollout."""
        if self.events is None:
            return
        self.events.observed(mlmodel, phase="Progressing", ready=False)
        uid, generation = _identity(mlmodel)
        self._observed[uid] = generation

    def invalid(self, mlmodel: Mapping[str, Any]) -> None:
        """This generation cannot be served: its rollout is recorded, and fails with the status."""
        if self.events is None:
            return
        self.events.observed(mlmodel, phase="Failed", ready=False)
        uid, generation = _identity(mlmodel)
        self._observed[uid] = generation

    def status(self, mlmodel: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        """The status just computed (written or unchanged): level-based, so a restarted operator
        records what it finds; the events queue drops exact repeats."""
        if self.events is None:
            return
        uid, generation = _identity(mlmodel)
        if self._observed.get(uid) != generation:
            return  # the reconcile pass for this generation records it right after its apply
        health = health_of(status, reached_ready=self._ready.get(uid) == generation)
        if health.kind == "ready":
            self._ready[uid] = generation
            self.events.ready(mlmodel)
        elif health.kind == "failed":
            self.events.failed(mlmodel, reason=health.reason, message=health.message)
        elif health.kind == "rolled_back":
            self.events.rolled_back(
                mlmodel,
                to_generation=health.to_generation,
                reason=health.reason,
                message=health.message,
            )
        else:
            self.events.status(mlmodel, phase=health.phase, ready=health.ready)

    def deleted(self, mlmodel: Mapping[str, Any]) -> None:
        if self.events is None:
            return
        self.forget(_identity(mlmodel)[0])
        self.events.deleted(mlmodel)

    def forget(self, uid: str) -> None:
        self._observed.pop(uid, None)
        self._ready.pop(uid, None)

    # --- deletions missed while the operator was down --------------------------------------
    async def live_deployments(self) -> list[DeploymentKey] | None:
        """Deployments the store has not marked deleted; None when it cannot say right now.

        Read before the MLModels are listed, so a model created in between is never mistaken
        for a deleted one. A hung read is left behind (its thread is the reader's own), and no
        second one is started until it ends.
        """
        if self._reader is None:
            return None
        if self._read_in_flight is not None and not self._read_in_flight.done():
            return None
        if self._read_executor is None:
            self._read_executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="metadata-operator-read"
            )
        self._read_in_flight = self._read_executor.submit(self._read_live)
        try:
            return await asyncio.wait_for(
                asyncio.wrap_future(self._read_in_flight), READ_TIMEOUT_SECONDS
            )
        except Exception as error:  # noqa: BLE001 - the store is optional for reconciling
            logger.debug(
                "metadata store not read; deletions checked next resync: error=%s",
                self._reader.scrub(str(error)).strip() or type(error).__name__,
            )
            return None

    def sweep(
        self,
        recorded: list[DeploymentKey] | None,
        listed: Iterable[Mapping[str, Any]],
        served: Callable[[str], bool],
    ) -> int:
        """Mark deleted the recorded deployments whose MLModel is no longer listed."""
        if self.events is None or recorded is None:
            return 0
        uids = {(m.get("metadata") or {}).get("uid") or "" for m in listed}
        stale = stale_deployments(recorded, uids, served)
        for namespace, name, uid in stale:
            logger.info(
                "mlmodel deleted while unobserved; recorded now: namespace=%s name=%s",
                namespace,
                name,
            )
            self.deleted({"metadata": {"namespace": namespace, "name": name, "uid": uid}})
        return len(stale)

    def _read_live(self) -> list[DeploymentKey]:
        assert self._reader is not None
        with self._reader.session(write=False, create=False) as session:
            return live_deployments(session)

    async def close(self, timeout: float) -> int:
        """Flush for up to ``timeout`` seconds; returns how many writes were lost."""
        lost = 0
        if self.events is not None:
            lost = await self.events.close(timeout)
        if self._read_executor is not None:
            reader = self._reader
            if reader is not None:
                self._read_executor.submit(reader.close)
            self._read_executor.shutdown(wait=False)
        return lost
