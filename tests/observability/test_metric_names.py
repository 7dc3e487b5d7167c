"""Metric naming conventions on what the runtime and the operator really export.

Counters end in `_total`, durations are `_seconds`, units are base units, every metric has help
text, and labels are a small known set whose values stay bounded however varied the traffic.
"""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from controlplane.models import SHA256, mlmodel
from load import REVIEWS, run_load, v2_body
from processes import Runtime
from prometheus_client.parser import text_string_to_metric_families
from support.cluster import Cluster
from support.ports import wait_until

ALLOWED_LABELS = {
    "model", "endpoint", "code", "label", "version", "digest", "format", "reason", "component",
    "result", "le", "quantile", "verb", "condition", "status",
}
NOT_BASE_UNITS = re.compile(r"(milli|micro|nano)seconds|_ms$|_ms_|minutes|hours|kilobytes|megabytes|_kb|_mb|percent")
TIME_WORDS = re.compile(r"duration|latency|_time|elapsed|wait")
RUNTIME_METRICS = {
    "mlmodel_requests_total", "mlmodel_request_duration_seconds", "mlmodel_inference_duration_seconds",
    "mlmodel_batch_size", "mlmodel_predictions_total", "mlmodel_model_load_duration_seconds",
    "mlmodel_model_info", "mlmodel_model_ready", "mlmodel_requests_in_flight", "mlmodel_requests_shed_total",
    "mlmodel_metadata_writes_total", "mlmodel_metadata_writes_dropped_total",
}
OPERATOR_METRICS = {
    "mlmodel_operator_reconciles_total", "mlmodel_operator_reconcile_duration_seconds",
    "mlmodel_operator_api_errors_total", "mlmodel_operator_mlmodels", "mlmodel_operator_time_to_ready_seconds",
}


def exported_name(family) -> str:
    # The parser drops `_total` from counter family names; the exported series carry it.
    return family.name + "_total" if family.type == "counter" else family.name


def check_conventions(text: str) -> dict[str, object]:
    families = {exported_name(f): f for f in text_string_to_metric_families(text)}
    # prometheus_client's creation timestamps (X_created, a gauge in the text format) belong to X.
    families = {n: f for n, f in families.items() if not (n.endswith("_created") and n.removesuffix("_created") in families
                                                         or n.removesuffix("_created") + "_total" in families)}
    for name, family in families.items():
        if name.startswith(("python_", "process_")):
            continue  # prometheus_client's own collectors, conventional already
        assert name.startswith("mlmodel_"), f"{name}: no mlmodel_ prefix"
        assert family.documentation.strip(), f"{name}: no help text"
        assert not NOT_BASE_UNITS.search(name), f"{name}: not in base units (seconds, bytes, ratios 0-1)"
        if TIME_WORDS.search(name):
            assert name.endswith("_seconds"), f"{name}: a time without _seconds"
        if family.type == "counter":
            assert name.endswith("_total")
            for sample in family.samples:
                assert sample.name.endswith(("_total", "_created")), sample.name
        else:
            assert not name.endswith("_total"), f"{name}: a {family.type} named like a counter"
        for sample in family.samples:
            unknown = set(sample.labels) - ALLOWED_LABELS
            assert not unknown, f"{name}: unexpected labels {unknown} (ids or inputs must never be labels)"
    return families


def test_runtime_metrics_follow_the_conventions_and_stay_bounded(runtime: Runtime) -> None:
    run_load(runtime.url, runtime.model, rounds=2, pause=0)
    request_ids = [f"obs-{uuid.uuid4().hex}" for _ in range(20)]
    texts = [f"an unusual review number {uuid.uuid4().hex}" for _ in range(20)]
    with httpx.Client(base_url=runtime.url, timeout=10) as client:
        for request_id, text in zip(request_ids, texts):
            response = client.post(f"/v2/models/{runtime.model}/infer", json=v2_body([text]), headers={"x-request-id": request_id})
            assert response.status_code == 200
        for path in ("/v2/models/a-model-nobody-serves/infer", f"/nowhere/{uuid.uuid4().hex}"):
            assert client.post(path, json=v2_body(["x"])).status_code == 404
        text = client.get("/metrics").text

    families = check_conventions(text)
    assert RUNTIME_METRICS <= families.keys(), f"missing: {RUNTIME_METRICS - families.keys()}"
    for needle in [*request_ids, *texts, "a-model-nobody-serves", "/nowhere/", *REVIEWS]:
        assert needle not in text, f"{needle!r} leaked into a label"

    values: dict[str, set[str]] = {}
    for family in families.values():
        for sample in family.samples:
            for label, value in sample.labels.items():
                values.setdefault(label, set()).add(value)
    assert values["model"] == {runtime.model}
    assert all(re.fullmatch(r"[1-5][0-9][0-9]", code) for code in values["code"])
    assert {"v2_infer", "v1_predict"} <= values["endpoint"] and len(values["endpoint"]) <= 12
    assert values["label"] == {"negative", "positive"}  # the classifier's classes, nothing else


@pytest.mark.prometheus
@pytest.mark.cluster
def test_operator_metrics_follow_the_conventions(installed_cluster: Cluster, run_operator, namespace: str) -> None:
    operator = run_operator(namespaces=[namespace], resync=1.0)
    installed_cluster.apply(
        mlmodel("sentiment", namespace),
        mlmodel("relative-uri", namespace, model={"uri": "model.joblib", "sha256": SHA256}),
    )

    def reconciled() -> str | None:
        text = httpx.get(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=2).text
        return text if 'result="invalid_spec"' in text and 'result="success"' in text else None

    text = wait_until(reconciled, 30, "both MLModels reconciled")
    families = check_conventions(text)
    assert OPERATOR_METRICS <= families.keys(), f"missing: {OPERATOR_METRICS - families.keys()}"
    assert "relative-uri" not in text and "sentiment" not in text  # no object names as labels
