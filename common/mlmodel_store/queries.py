"""Reads of the metadata store: rollout history, deployments and runtime instances."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .dialects import decode_timestamp
from .session import Session


@dataclass(frozen=True)
class Rollout:
    namespace: str
    name: str
    uid: str
    generation: int
    model_uri: str
    sha256: str | None
    format: str
    runtime_image: str
    desired_replicas: int | None
    changes: dict[str, Any]
    changed_by: str | None
    started_at: datetime
    ready_at: datetime | None
    failed_at: datetime | None
    reason: str | None
    message: str | None
    # The generation served again when this one failed and was rolled back.
    rolled_back_to: int | None = None


@dataclass(frozen=True)
class Deployment:
    namespace: str
    name: str
    uid: str
    generation: int
    model_uri: str
    sha256: str | None
    format: str
    runtime_image: str
    desired_replicas: int | None
    phase: str
    ready: bool
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True)
class RuntimeInstance:
    instance_id: str
    namespace: str
    model: str
    pod_name: str
    model_digest: str | None
    model_version: str | None
    load_duration_seconds: float | None
    started_at: datetime
    last_seen_at: datetime
    stopped_at: datetime | None


def rollout_history(
    session: Session, namespace: str, name: str, limit: int | None = None
) -> list[Rollout]:
    """Rollouts of one MLModel name (all its incarnations), newest first."""
    rows = session.fetch_all(
        """
        SELECT * FROM rollouts WHERE namespace = :namespace AND name = :name
        ORDER BY started_at DESC, generation DESC
        """
        + (" LIMIT :limit" if limit else ""),
        {"namespace": namespace, "name": name, **({"limit": limit} if limit else {})},
    )
    return [
        Rollout(
            **{
                **row,
                "changes": json.loads(row["changes"]),
                "started_at": decode_timestamp(row["started_at"]),
                "ready_at": decode_timestamp(row["ready_at"]),
                "failed_at": decode_timestamp(row["failed_at"]),
            }
        )
        for row in rows
    ]


def get_deployments(session: Session, namespace: str, name: str) -> list[Deployment]:
    """Every incarnation (uid) of an MLModel name, newest first."""
    rows = session.fetch_all(
        """SELECT * FROM deployments WHERE namespace = :namespace AND name = :name
           ORDER BY created_at DESC""",
        {"namespace": namespace, "name": name},
    )
    return [
        Deployment(
            **{
                **row,
                "ready": bool(row["ready"]),
                "created_at": decode_timestamp(row["created_at"]),
                "updated_at": decode_timestamp(row["updated_at"]),
                "deleted_at": decode_timestamp(row["deleted_at"]),
            }
        )
        for row in rows
    ]


def live_deployments(session: Session) -> list[tuple[str, str, str]]:
    """(namespace, name, uid) of every deployment not marked deleted."""
    rows = session.fetch_all("SELECT namespace, name, uid FROM deployments WHERE deleted_at IS NULL")
    return [(row["namespace"], row["name"], row["uid"]) for row in rows]


def list_instances(session: Session, namespace: str, model: str) -> list[RuntimeInstance]:
    rows = session.fetch_all(
        """SELECT * FROM runtime_instances WHERE namespace = :namespace AND model = :model
           ORDER BY started_at DESC""",
        {"namespace": namespace, "model": model},
    )
    return [_instance(row) for row in rows]


def instances_serving_at(
    session: Session, namespace: str, model: str, when: datetime
) -> list[RuntimeInstance]:
    """Which processes (and so which digests) served a model at a given time."""
    rows = session.fetch_all(
        """
        SELECT * FROM runtime_instances
        WHERE namespace = :namespace AND model = :model AND started_at <= :when
          AND (stopped_at IS NULL OR stopped_at > :when)
        ORDER BY started_at DESC
        """,
        {"namespace": namespace, "model": model, "when": when},
    )
    return [_instance(row) for row in rows]


def _instance(row: dict[str, Any]) -> RuntimeInstance:
    return RuntimeInstance(
        **{
            **row,
            "started_at": decode_timestamp(row["started_at"]),
            "last_seen_at": decode_timestamp(row["last_seen_at"]),
            "stopped_at": decode_timestamp(row["stopped_at"]),
        }
    )


def count_rows(session: Session, table: str) -> int:
    if table not in (
        "deployments",
        "rollouts",
        "runtime_instances",
        "predictions",
        "shadow_disagreements",
        "schema_migrations",
    ):
        raise ValueError(f"unknown table {table!r}")
    row = session.fetch_one(f"SELECT COUNT(*) AS n FROM {table}")
    return int(row["n"]) if row else 0
