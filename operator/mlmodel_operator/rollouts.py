"""The store events an MLModel's reconcile outcomes imply: deployment rows and rollout history.

``model_spec`` and ``changed_by`` are pure readers of an MLModel body; ``RolloutEvents``
turns reconcile outcomes into queued write events, skipping exact repeats (timers reconcile
the same state over and over).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from mlmodel_spec.resource import InvalidSpec, parse_spec
from mlmodel_store.database import Database
from mlmodel_store.events import (
    DeploymentDeleted,
    DeploymentObserved,
    DeploymentStatusChanged,
    ModelSpec,
    RolloutFailed,
    RolloutReady,
    RolloutRolledBack,
    RolloutStarted,
)
from mlmodel_store.writer import AsyncWriter
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

COMPONENT = "operator"


def model_spec(body: Mapping[str, Any], *, default_image: str) -> ModelSpec | None:
    """The tracked fields of an MLModel; autoscaled models record their minimum replicas.

    Read as written, without the rules about serving it in a cluster: the rollout of a spec the
    operator refuses is recorded too, and fails. None for what the CRD's schema itself refuses.
    """
    try:
        spec = parse_spec(dict(body), in_cluster=False)
    except InvalidSpec:
        return None
    if spec.autoscaling is not None:
        replicas = spec.autoscaling.min_replicas
    else:
        replicas = 1 if spec.replicas is None else spec.replicas
    return ModelSpec(
        model_uri=spec.model.uri,
        sha256=spec.model.sha256.lower() if spec.model.sha256 else None,
        format=spec.model.format,
        runtime_image=spec.runtime.image or default_image,
        desired_replicas=replicas,
    )


def changed_by(body: Mapping[str, Any]) -> str | None:
    """The field manager (kubectl, argocd, helm...) that last wrote the spec, from managedFields."""
    latest: tuple[str, str] | None = None
    for entry in (body.get("metadata") or {}).get("managedFields") or []:
        if entry.get("subresource") or "f:spec" not in (entry.get("fieldsV1") or {}):
            continue
        stamp = entry.get("time") or ""
        if latest is None or stamp >= latest[0]:
            latest = (stamp, entry.get("manager") or "")
    return latest[1] or None if latest else None


def creation_time(body: Mapping[str, Any]) -> datetime | None:
    stamp = (body.get("metadata") or {}).get("creationTimestamp")
    return datetime.fromisoformat(stamp) if stamp else None


def identity(body: Mapping[str, Any]) -> tuple[str, str, str]:
    metadata = body.get("metadata") or {}
    return metadata.get("namespace") or "default", metadata["name"], metadata.get("uid") or ""


def generation(body: Mapping[str, Any]) -> int:
    return int((body.get("metadata") or {}).get("generation") or 1)


class RolloutEvents:
    def __init__(self, writer: AsyncWriter, *, default_image: str) -> None:
        self.writer = writer
        self.default_image = default_image
        # Last state sent per (namespace, name, uid, kind of event): timers repeat themselves.
        self._last_sent: dict[tuple[str, str, str, str], tuple] = {}

    @classmethod
    def create(
        cls,
        database_url: SecretStr | str | None,
        *,
        cache_dir: Path,
        default_image: str,
        registry: CollectorRegistry | None = None,
        **writer_options: Any,
    ) -> RolloutEvents:
        database = Database.from_settings(
            database_url, cache_dir, application_name="mlmodel-operator"
        )
        writer = AsyncWriter(database, component=COMPONENT, registry=registry, **writer_options)
        return cls(writer, default_image=default_image)

    def start(self) -> None:
        self.writer.start()

    def observed(
        self, body: Mapping[str, Any], *, phase: str = "Progressing", ready: bool = False
    ) -> None:
        """Upsert the deployment row and open a rollout for this generation (idempotent).

        ``phase``/``ready`` are used when a generation is first seen; later health changes go
        through ``ready``, ``failed`` and ``status``.
        """
        namespace, name, uid = identity(body)
        spec = model_spec(body, default_image=self.default_image)
        gen = generation(body)
        if spec is None or not self._changed((namespace, name, uid, "observed"), (gen, spec)):
            return
        self.writer.submit(
            RolloutStarted(namespace, name, uid, gen, spec, changed_by=changed_by(body))
        )
        self.writer.submit(
            DeploymentObserved(
                namespace,
                name,
                uid,
                gen,
                spec,
                phase=phase,
                ready=ready,
                created_at=creation_time(body),
            )
        )

    def ready(self, body: Mapping[str, Any]) -> None:
        namespace, name, uid = identity(body)
        gen = generation(body)
        if self._changed((namespace, name, uid, "health"), ("ready", gen)):
            self.writer.submit(RolloutReady(namespace, name, uid, gen))

    def failed(self, body: Mapping[str, Any], *, reason: str, message: str = "") -> None:
        namespace, name, uid = identity(body)
        gen = generation(body)
        if self._changed((namespace, name, uid, "health"), ("failed", gen, reason, message)):
            self.writer.submit(
                RolloutFailed(namespace, name, uid, gen, reason=reason, message=message)
            )

    def rolled_back(
        self, body: Mapping[str, Any], *, to_generation: int, reason: str, message: str = ""
    ) -> None:
        namespace, name, uid = identity(body)
        gen = generation(body)
        if self._changed(
            (namespace, name, uid, "health"), ("rolled_back", gen, to_generation, reason, message)
        ):
            self.writer.submit(
                RolloutRolledBack(
                    namespace, name, uid, gen, to_generation, reason=reason, message=message
                )
            )

    def status(self, body: Mapping[str, Any], *, phase: str, ready: bool) -> None:
        """A later change of health (Degraded after Ready, say) without a new generation."""
        namespace, name, uid = identity(body)
        if self._changed(
            (namespace, name, uid, "health"), ("status", generation(body), phase, ready)
        ):
            self.writer.submit(
                DeploymentStatusChanged(namespace, name, uid, phase=phase, ready=ready)
            )

    def deleted(self, body: Mapping[str, Any]) -> None:
        namespace, name, uid = identity(body)
        for kind in ("observed", "health"):
            self._last_sent.pop((namespace, name, uid, kind), None)
        self.writer.submit(DeploymentDeleted(namespace, name, uid))

    async def close(self, timeout: float = 10.0) -> int:
        return await self.writer.close(timeout)

    def _changed(self, key: tuple[str, str, str, str], state: tuple) -> bool:
        if self._last_sent.get(key) == state:
            return False
        self._last_sent[key] = state
        return True
