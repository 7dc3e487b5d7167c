"""The operator's own Prometheus metrics (names are part of the project's metrics contract)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "mlmodel_operator_reconciles_total",
    "Reconcile passes over an MLModel, by result (success, invalid_spec, retry, error).",
    ["result"],
)
RECONCILE_DURATION = Histogram(
    "mlmodel_operator_reconcile_duration_seconds",
    "Wall time of one reconcile pass.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
API_ERRORS = Counter(
    "mlmodel_operator_api_errors_total",
    "Kubernetes API requests that failed, by verb and HTTP code ('network' when no answer came).",
    ["verb", "code"],
)
MLMODELS = Gauge(
    "mlmodel_operator_mlmodels",
    "MLModels known to the operator, by condition type and status.",
    ["condition", "status"],
)
TIME_TO_READY = Histogram(
    "mlmodel_operator_time_to_ready_seconds",
    "Time from an MLModel becoming not Ready (created or changed) to Ready again.",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)

ROLLBACKS = Counter(
    "mlmodel_operator_rollbacks_total",
    "Failed MLModel generations rolled back to their last Ready revision, by failure reason.",
    ["reason"],
)


class ConditionCensus:
    """Counts MLModels per (condition, status) from the last status seen of each."""

    def __init__(self) -> None:
        self._by_uid: dict[str, dict[str, str]] = {}

    def observe(self, uid: str, conditions: list[dict] | None) -> None:
        self._by_uid[uid] = {
            c["type"]: c.get("status", "Unknown") for c in conditions or () if "type" in c
        }
        self._publish()

    def forget(self, uid: str) -> None:
        if self._by_uid.pop(uid, None) is not None:
            self._publish()

    def _publish(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        for conditions in self._by_uid.values():
            for type_, status in conditions.items():
                counts[(type_, status)] = counts.get((type_, status), 0) + 1
        for type_ in {t for t, _ in counts} | {"Ready", "Progressing", "Degraded"}:
            for status in ("True", "False", "Unknown"):
                MLMODELS.labels(condition=type_, status=status).set(counts.get((type_, status), 0))


def serve_metrics(port: int, address: str = "0.0.0.0") -> None:
    """Expose /metrics on `port` from a background thread."""
    start_http_server(port, addr=address)
