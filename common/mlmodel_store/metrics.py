"""Prometheus metrics of the metadata writer, registered once per registry."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge


@dataclass(frozen=True)
class StoreMetrics:
    writes: Counter  # labels: component, result (ok | retried | error)
    dropped: Counter  # labels: component
    queued: Gauge  # labels: component


_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, StoreMetrics] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def store_metrics(registry: CollectorRegistry | None = None) -> StoreMetrics:
    """The metrics in ``registry`` (the default one when None), created on first use."""
    registry = REGISTRY if registry is None else registry
    with _lock:
        metrics = _by_registry.get(registry)
        if metrics is None:
            metrics = StoreMetrics(
                writes=Counter(
                    "mlmodel_metadata_writes_total",
                    "Metadata write events by outcome: ok (committed), retried (in a batch that "
                    "failed with a transient error and was tried again), error (discarded: "
                    "rejected by the database).",
                    ["component", "result"],
                    registry=registry,
                ),
                dropped=Counter(
                    "mlmodel_metadata_writes_dropped_total",
                    "Metadata write events lost: the queue was full, or shutdown came before the "
                    "database was reachable again.",
                    ["component"],
                    registry=registry,
                ),
                queued=Gauge(
                    "mlmodel_metadata_writes_queued",
                    "Metadata write events not written yet (grows while the database is down).",
                    ["component"],
                    registry=registry,
                    multiprocess_mode="livesum",  # several runtime workers: the pod's total
                ),
            )
            _by_registry[registry] = metrics
        return metrics
