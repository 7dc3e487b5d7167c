"""The runtime's Prometheus metrics (names shared with the dashboards and alerts), one registry per
app so several apps can live in one process (tests).

With several workers (``serve --workers N``) the supervisor gives them one directory in
``PROMETHEUS_MULTIPROC_DIR`` before they start: prometheus_client then keeps every value in a file
there, and ``/metrics`` answers with the sum over all workers, dead ones' counters included, so a
scrape is the pod's whatever worker answers it. Each gauge says how workers' values combine."""

from __future__ import annotations

import os
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# prometheus_client reads it when first imported: set before a worker starts, never changed in one.
MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class RuntimeMetrics:
    """Every runtime metric, labelled with the one model this process serves."""

    def __init__(self, model: str, registry: CollectorRegistry | None = None) -> None:
        self.model = model
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mlmodel_requests", "HTTP requests by endpoint and status code.",
            ["model", "endpoint", "code"], registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "mlmodel_request_duration_seconds", "HTTP request latency, from first byte in to response sent.",
            ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference_duration = Histogram(
            "mlmodel_inference_duration_seconds", "Duration of one model call (one batch).",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        ).labels(model)  # fmt: skip
        self.batch_size = Histogram(
            "mlmodel_batch_size", "Rows per model call.", ["model"], buckets=BATCH_BUCKETS, registry=r,
        ).labels(model)  # fmt: skip
        self._predictions = Counter(
            "mlmodel_predictions", "Predicted labels (classifiers only).", ["model", "label"], registry=r,
        )  # fmt: skip
        self.load_duration = Gauge(
            "mlmodel_model_load_duration_seconds", "Time from start to model ready: fetch, verify and load.",
            ["model"], registry=r, multiprocess_mode="livemax",
        ).labels(model)  # fmt: skip
        self._info = Gauge(
            "mlmodel_model_info", "The model being served (always 1).",
            ["model", "version", "digest", "format"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        # Several workers: 1 only while every live worker serves.
        self.ready = Gauge(
            "mlmodel_model_ready", "1 when the model is loaded and serving.", ["model"],
            registry=r, multiprocess_mode="livemin",
        ).labels(model)  # fmt: skip
        self._artifact_errors = Counter(
            "mlmodel_artifact_errors", "Failed attempts to fetch or load the model artifact, by reason.",
            ["model", "reason"], registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "mlmodel_requests_in_flight",
            "Prediction requests being handled.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        ).labels(model)
        self.shed = Counter(
            "mlmodel_requests_shed", "Prediction requests refused with 503 because too many were in flight.",
            ["model"], registry=r,
        ).labels(model)  # fmt: skip
        self._cache_lookups = Counter(
            "mlmodel_cache_requests", "Prediction cache lookups by result: hit, miss, error (Redis "
            "failed or timed out), skipped (not tried: Redis failed moments ago), bypass (no-cache).",
            ["model", "result"], registry=r,
        )  # fmt: skip
        self._cache_writes = Counter(
            "mlmodel_cache_writes", "Prediction cache writes by result: stored, too_large, error, "
            "skipped, dropped (too many writes pending).",
            ["model", "result"], registry=r,
        )  # fmt: skip
        self.cache_up = Gauge(
            "mlmodel_cache_up", "1 while the prediction cache's Redis answers, 0 after it failed "
            "(no series without a cache).",
            ["model"], registry=r, multiprocess_mode="livemin",
        )  # fmt: skip
        self._shadow_requests = Counter(
            "mlmodel_shadow_requests", "Predictions mirrored to the shadow model, by result: "
            "compared, failed (no answer, an error status or a body that is not JSON), skipped "
            "(the shadow was busy, or binary tensors).",
            ["model", "result"], registry=r,
        )  # fmt: skip
        self._shadow_rows = Counter(
            "mlmodel_shadow_rows", "Rows the shadow model predicted, by agreement with the served "
            "answer (agree: same label, or numbers within the tolerance; disagree).",
            ["model", "agreement"], registry=r,
        )  # fmt: skip
        self.ready.set(0)
        # Labelled children cached: .labels() costs a lock and a dict lookup per call.
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}
        # (metric, label value) -> child, for the metrics labelled by model and one value.
        self._children: dict[tuple[Counter, str], Counter] = {}

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        key = (endpoint, code)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(
                self.model, endpoint, str(code)
            )
        counter.inc()
        histogram = self._duration_children.get(endpoint)
        if histogram is None:
            histogram = self._duration_children[endpoint] = self.request_duration.labels(
                self.model, endpoint
            )
        histogram.observe(seconds)

    def _count(self, counter: Counter, value: str, amount: float = 1) -> None:
        """counter{model, <its one other label>=value} += amount, the labelled child cached."""
        child = self._children.get((counter, value))
        if child is None:
            child = self._children[counter, value] = counter.labels(self.model, value)
        child.inc(amount)

    def count_labels(self, labels: Mapping[str, int]) -> None:
        for label, count in labels.items():
            self._count(self._predictions, label, count)

    def cache_lookup(self, result: str) -> None:
        self._count(self._cache_lookups, result)

    def cache_write(self, result: str) -> None:
        self._count(self._cache_writes, result)

    def shadow_request(self, result: str) -> None:
        self._count(self._shadow_requests, result)

    def shadow_rows(self, agreed: int, disagreed: int) -> None:
        if agreed:
            self._count(self._shadow_rows, "agree", agreed)
        if disagreed:
            self._count(self._shadow_rows, "disagree", disagreed)

    def artifact_error(self, reason: str) -> None:
        self._artifact_errors.labels(self.model, reason).inc()

    def model_info(self, *, version: str, digest: str, model_format: str) -> None:
        self._info.labels(self.model, version, digest, model_format).set(1)


def shared_directory() -> str | None:
    """The directory the workers of one server share their metrics in; None with one process."""
    return os.environ.get(MULTIPROCESS_DIRECTORY) or None


def exposition(registry: CollectorRegistry) -> bytes:
    """The text ``/metrics`` answers: ``registry``'s metrics, or every worker's when shared."""
    directory = shared_directory()
    if directory is None:
        return generate_latest(registry)
    combined = CollectorRegistry()
    MultiProcessCollector(combined, path=directory)
    return generate_latest(combined)
