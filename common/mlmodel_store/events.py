"""Write events: what the operator and the runtime tell the store, stamped when they happen.

Events are plain frozen values, built on the caller's side (no I/O), queued by the writer and
applied later by ``repository.apply_events``; the time is the event's, not the flush's, so rows
written after a database outage still say when things really happened.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ModelSpec:
    """The fields of an MLModel whose changes a rollout records."""

    model_uri: str
    sha256: str | None
    format: str
    runtime_image: str
    desired_replicas: int | None


@dataclass(frozen=True)
class DeploymentObserved:
    """The operator saw an MLModel (created, changed or resumed): upsert its deployment row."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: ModelSpec
    phase: str = "Progressing"
    ready: bool = False
    created_at: datetime | None = None  # metadata.creationTimestamp when known
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class DeploymentStatusChanged:
    namespace: str
    name: str
    uid: str
    phase: str
    ready: bool
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class DeploymentDeleted:
    namespace: str
    name: str
    uid: str
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class RolloutStarted:
    """A generation was seen for the first time; ``changes`` is computed against the last one."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: ModelSpec
    changed_by: str | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class RolloutReady:
    namespace: str
    name: str
    uid: str
    generation: int
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class RolloutFailed:
    namespace: str
    name: str
    uid: str
    generation: int
    reason: str
    message: str = ""
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class RolloutRolledBack:
    """A failed generation: the operator serves ``to_generation``'s spec again."""

    namespace: str
    name: str
    uid: str
    generation: int
    to_generation: int
    reason: str
    message: str = ""
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class InstanceRegistered:
    """A runtime process loaded its model and is about to serve."""

    instance_id: str
    namespace: str
    model: str
    pod_name: str
    model_digest: str | None
    model_version: str | None = None
    load_duration_seconds: float | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class InstanceHeartbeat:
    instance_id: str
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class InstanceStopped:
    instance_id: str
    at: datetime = field(default_factory=utcnow)


# Payloads are cut to this many characters of JSON each unless the event says otherwise.
DEFAULT_PAYLOAD_CAP = 4096


@dataclass(frozen=True)
class PredictionLogged:
    """One sampled prediction. Payloads stay Python objects until the writer's thread encodes
    them, so the request path pays nothing for JSON."""

    namespace: str
    model: str
    request_id: str | None
    latency_seconds: float | None
    inputs: Any
    outputs: Any
    model_digest: str | None = None
    payload_cap: int = DEFAULT_PAYLOAD_CAP
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class ShadowDisagreement:
    """A sampled prediction on which the shadow model disagreed with the served answer (rows of
    the first disagreement: what was served, what the shadow said)."""

    namespace: str
    model: str
    path: str
    request: Any
    served: Any
    shadow: Any
    model_digest: str | None = None
    payload_cap: int = DEFAULT_PAYLOAD_CAP
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: datetime = field(default_factory=utcnow)


def new_instance_id() -> str:
    return uuid.uuid4().hex
