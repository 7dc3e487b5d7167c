"""Writes of the metadata store: one function per write event, and ``apply_events`` for a batch.

Each takes a ``Session`` and an event from ``events``. Statements are portable SQL with
``:name`` placeholders; reads live in ``queries``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from .changes import diff_specs
from .events import (
    DeploymentDeleted,
    DeploymentObserved,
    DeploymentStatusChanged,
    InstanceHeartbeat,
    InstanceRegistered,
    InstanceStopped,
    ModelSpec,
    PredictionLogged,
    RolloutFailed,
    RolloutReady,
    RolloutRolledBack,
    RolloutStarted,
    ShadowDisagreement,
)
from .session import Session

# --- writes: deployments ---------------------------------------------------------------------


def record_deployment(session: Session, event: DeploymentObserved) -> None:
    spec = event.spec
    session.execute(
        """
        INSERT INTO deployments (namespace, name, uid, generation, model_uri, sha256, format,
                                 runtime_image, desired_replicas, phase, ready, created_at,
                                 updated_at, deleted_at)
        VALUES (:namespace, :name, :uid, :generation, :model_uri, :sha256, :format,
                :runtime_image, :desired_replicas, :phase, :ready, :created_at, :at, NULL)
        ON CONFLICT (namespace, name, uid) DO UPDATE SET
            generation = excluded.generation,
            model_uri = excluded.model_uri,
            sha256 = excluded.sha256,
            format = excluded.format,
            runtime_image = excluded.runtime_image,
            desired_replicas = excluded.desired_replicas,
            -- Health moves through the status events; a repeated observation of the same
            -- generation (operator restart, resume) must not reset it to Progressing.
            phase = CASE WHEN deployments.generation = excluded.generation
                         THEN deployments.phase ELSE excluded.phase END,
            ready = CASE WHEN deployments.generation = excluded.generation
                         THEN deployments.ready ELSE excluded.ready END,
            updated_at = excluded.updated_at
        """,
        {
            "namespace": event.namespace,
            "name": event.name,
            "uid": event.uid,
            "generation": event.generation,
            "model_uri": spec.model_uri,
            "sha256": spec.sha256,
            "format": spec.format,
            "runtime_image": spec.runtime_image,
            "desired_replicas": spec.desired_replicas,
            "phase": event.phase,
            "ready": event.ready,
            "created_at": event.created_at or event.at,
            "at": event.at,
        },
    )


def record_deployment_status(session: Session, event: DeploymentStatusChanged) -> None:
    _set_deployment_status(
        session, event.namespace, event.name, event.uid, event.phase, event.ready, event.at
    )


def mark_deployment_deleted(session: Session, event: DeploymentDeleted) -> None:
    session.execute(
        """
        UPDATE deployments SET deleted_at = :at, updated_at = :at, phase = 'Deleted', ready = :ready
        WHERE namespace = :namespace AND name = :name AND uid = :uid AND deleted_at IS NULL
        """,
        {
            "namespace": event.namespace,
            "name": event.name,
            "uid": event.uid,
            "at": event.at,
            "ready": False,
        },
    )


def _set_deployment_status(
    session: Session, namespace: str, name: str, uid: str, phase: str, ready: bool, at: datetime
) -> None:
    session.execute(
        """
        UPDATE deployments SET phase = :phase, ready = :ready, updated_at = :at
        WHERE namespace = :namespace AND name = :name AND uid = :uid AND deleted_at IS NULL
        """,
        {
            "namespace": namespace,
            "name": name,
            "uid": uid,
            "phase": phase,
            "ready": ready,
            "at": at,
        },
    )


# --- writes: rollouts ------------------------------------------------------------------------


def record_rollout_started(session: Session, event: RolloutStarted) -> None:
    """The first observation of a generation wins; repeats (retries, resumes) change nothing."""
    key = {
        "namespace": event.namespace,
        "name": event.name,
        "uid": event.uid,
        "generation": event.generation,
    }
    if session.fetch_one(
        """SELECT 1 AS present FROM rollouts WHERE namespace = :namespace AND name = :name
           AND uid = :uid AND generation = :generation""",
        key,
    ):
        return
    # Compared with the latest earlier rollout of the same name, so a re-created MLModel shows
    # what differs from its previous incarnation.
    previous = session.fetch_one(
        """
        SELECT model_uri, sha256, format, runtime_image, desired_replicas FROM rollouts
        WHERE namespace = :namespace AND name = :name
          AND NOT (uid = :uid AND generation >= :generation)
        ORDER BY started_at DESC, generation DESC
        LIMIT 1
        """,
        key,
    )
    changes = diff_specs(ModelSpec(**previous) if previous else None, event.spec)
    spec = event.spec
    session.execute(
        """
        INSERT INTO rollouts (namespace, name, uid, generation, model_uri, sha256, format,
                              runtime_image, desired_replicas, changes, changed_by, started_at)
        VALUES (:namespace, :name, :uid, :generation, :model_uri, :sha256, :format,
                :runtime_image, :desired_replicas, :changes, :changed_by, :at)
        ON CONFLICT (namespace, name, uid, generation) DO NOTHING
        """,
        {
            **key,
            "model_uri": spec.model_uri,
            "sha256": spec.sha256,
            "format": spec.format,
            "runtime_image": spec.runtime_image,
            "desired_replicas": spec.desired_replicas,
            "changes": json.dumps(changes, sort_keys=True),
            "changed_by": event.changed_by,
            "at": event.at,
        },
    )


def record_rollout_ready(session: Session, event: RolloutReady) -> None:
    session.execute(
        """
        UPDATE rollouts SET ready_at = :at
        WHERE namespace = :namespace AND name = :name AND uid = :uid AND generation = :generation
          AND ready_at IS NULL
        """,
        _rollout_key(event),
    )
    _set_deployment_status(session, event.namespace, event.name, event.uid, "Ready", True, event.at)


def record_rollout_failed(session: Session, event: RolloutFailed) -> None:
    """Keeps the first failure time, and the latest reason and message."""
    session.execute(
        """
        UPDATE rollouts SET
            failed_at = CASE WHEN failed_at IS NULL THEN :at ELSE failed_at END,
            reason = :reason,
            message = :message
        WHERE namespace = :namespace AND name = :name AND uid = :uid AND generation = :generation
        """,
        {**_rollout_key(event), "reason": event.reason, "message": event.message},
    )
    _set_deployment_status(
        session, event.namespace, event.name, event.uid, "Failed", False, event.at
    )


def record_rollout_rolled_back(session: Session, event: RolloutRolledBack) -> None:
    """A failed rollout that the operator rolled back; the deployment serves again."""
    session.execute(
        """
        UPDATE rollouts SET
            failed_at = CASE WHEN failed_at IS NULL THEN :at ELSE failed_at END,
            reason = :reason,
            message = :message,
            rolled_back_to = :to_generation
        WHERE namespace = :namespace AND name = :name AND uid = :uid AND generation = :generation
        """,
        {
            **_rollout_key(event),
            "reason": event.reason,
            "message": event.message,
            "to_generation": event.to_generation,
        },
    )
    _set_deployment_status(
        session, event.namespace, event.name, event.uid, "RolledBack", True, event.at
    )


def _rollout_key(event: RolloutReady | RolloutFailed | RolloutRolledBack) -> dict[str, Any]:
    return {
        "namespace": event.namespace,
        "name": event.name,
        "uid": event.uid,
        "generation": event.generation,
        "at": event.at,
    }


# --- writes: runtime instances and predictions -------------------------------------------------


def register_instance(session: Session, event: InstanceRegistered) -> None:
    session.execute(
        """
        INSERT INTO runtime_instances (instance_id, namespace, model, pod_name, model_digest,
                                       model_version, load_duration_seconds, started_at,
                                       last_seen_at, stopped_at)
        VALUES (:instance_id, :namespace, :model, :pod_name, :model_digest, :model_version,
                :load_duration_seconds, :at, :at, NULL)
        ON CONFLICT (instance_id) DO NOTHING
        """,
        {
            "instance_id": event.instance_id,
            "namespace": event.namespace,
            "model": event.model,
            "pod_name": event.pod_name,
            "model_digest": event.model_digest,
            "model_version": event.model_version,
            "load_duration_seconds": event.load_duration_seconds,
            "at": event.at,
        },
    )


def heartbeat(session: Session, event: InstanceHeartbeat) -> None:
    session.execute(
        """
        UPDATE runtime_instances SET last_seen_at = :at
        WHERE instance_id = :instance_id AND last_seen_at < :at
        """,
        {"instance_id": event.instance_id, "at": event.at},
    )


def stop_instance(session: Session, event: InstanceStopped) -> None:
    session.execute(
        """
        UPDATE runtime_instances SET stopped_at = :at,
            last_seen_at = CASE WHEN last_seen_at < :at THEN :at ELSE last_seen_at END
        WHERE instance_id = :instance_id AND stopped_at IS NULL
        """,
        {"instance_id": event.instance_id, "at": event.at},
    )


def record_predictions(session: Session, events: Sequence[PredictionLogged]) -> None:
    rows = []
    for event in events:
        inputs, inputs_cut = encode_payload(event.inputs, event.payload_cap)
        outputs, outputs_cut = encode_payload(event.outputs, event.payload_cap)
        rows.append(
            {
                "id": event.id,
                "request_id": event.request_id,
                "namespace": event.namespace,
                "model": event.model,
                "model_digest": event.model_digest,
                "at": event.at,
                "latency_seconds": event.latency_seconds,
                "inputs": inputs,
                "outputs": outputs,
                "truncated": inputs_cut or outputs_cut,
            }
        )
    session.execute_many(
        """
        INSERT INTO predictions (id, request_id, namespace, model, model_digest, predicted_at,
                                 latency_seconds, inputs, outputs, truncated)
        VALUES (:id, :request_id, :namespace, :model, :model_digest, :at, :latency_seconds,
                :inputs, :outputs, :truncated)
        ON CONFLICT (id) DO NOTHING
        """,
        rows,
    )


def record_shadow_disagreement(session: Session, event: ShadowDisagreement) -> None:
    request, request_cut = encode_payload(event.request, event.payload_cap)
    served, served_cut = encode_payload(event.served, event.payload_cap)
    shadow, shadow_cut = encode_payload(event.shadow, event.payload_cap)
    session.execute(
        """
        INSERT INTO shadow_disagreements (id, namespace, model, model_digest, observed_at, path,
                                          request, served, shadow, truncated)
        VALUES (:id, :namespace, :model, :model_digest, :at, :path, :request, :served, :shadow,
                :truncated)
        ON CONFLICT (id) DO NOTHING
        """,
        {
            "id": event.id,
            "namespace": event.namespace,
            "model": event.model,
            "model_digest": event.model_digest,
            "at": event.at,
            "path": event.path,
            "request": request,
            "served": served,
            "shadow": shadow,
            "truncated": request_cut or served_cut or shadow_cut,
        },
    )


def encode_payload(payload: Any, cap: int) -> tuple[str, bool]:
    """JSON text of ``payload`` cut to ``cap`` characters; the flag says whether it was cut."""
    text = json.dumps(payload, default=_jsonable, separators=(",", ":"), ensure_ascii=False)
    if len(text) <= cap:
        return text, False
    return text[:cap], True


def _jsonable(value: Any) -> Any:
    # numpy arrays and scalars, without importing numpy here.
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


_WRITERS: dict[type, Callable[[Session, Any], None]] = {
    DeploymentObserved: record_deployment,
    DeploymentStatusChanged: record_deployment_status,
    DeploymentDeleted: mark_deployment_deleted,
    RolloutStarted: record_rollout_started,
    RolloutReady: record_rollout_ready,
    RolloutFailed: record_rollout_failed,
    RolloutRolledBack: record_rollout_rolled_back,
    InstanceRegistered: register_instance,
    InstanceHeartbeat: heartbeat,
    InstanceStopped: stop_instance,
    ShadowDisagreement: record_shadow_disagreement,
}


def apply_events(session: Session, events: Sequence[Any]) -> None:
    """Apply events in order; consecutive predictions go in one multi-row statement."""
    index = 0
    while index < len(events):
        event = events[index]
        if isinstance(event, PredictionLogged):
            end = index
            while end < len(events) and isinstance(events[end], PredictionLogged):
                end += 1
            record_predictions(session, events[index:end])
            index = end
            continue
        try:
            writer = _WRITERS[type(event)]
        except KeyError:
            raise TypeError(f"not a metadata write event: {type(event).__name__}") from None
        writer(session, event)
        index += 1
