"""The Grafana dashboard: variables, panels that cover the issue, PromQL that parses and names real metrics."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from processes import PROMTOOL
from promql import (
    dashboard_expressions,
    load_dashboard,
    load_rule_groups,
    panels,
    rule_expressions,
    substitute,
)

# The metrics contract (BRIEF: runtime, store and operator metric names); a panel or rule that
# names anything else is a typo or a metric nobody exports.
CONTRACT_METRICS = {
    "mlmodel_requests_total",
    "mlmodel_request_duration_seconds",
    "mlmodel_inference_duration_seconds",
    "mlmodel_batch_size",
    "mlmodel_predictions_total",
    "mlmodel_model_load_duration_seconds",
    "mlmodel_model_info",
    "mlmodel_model_ready",
    "mlmodel_artifact_errors_total",
    "mlmodel_requests_in_flight",
    "mlmodel_requests_shed_total",
    "mlmodel_metadata_writes_dropped_total",
    "mlmodel_metadata_writes_total",
    "mlmodel_operator_reconciles_total",
    "mlmodel_operator_reconcile_duration_seconds",
    "mlmodel_operator_api_errors_total",
    "mlmodel_operator_mlmodels",
    "mlmodel_operator_time_to_ready_seconds",
}
HISTOGRAMS = {
    "mlmodel_request_duration_seconds",
    "mlmodel_inference_duration_seconds",
    "mlmodel_batch_size",
    "mlmodel_operator_reconcile_duration_seconds",
    "mlmodel_operator_time_to_ready_seconds",
}
METRIC_NAME = re.compile(r"\bmlmodel_[a-z0-9_]+\b")
# What each part of the issue asks the dashboard to show, found by panel title.
REQUIRED_PANELS = {
    "request rate": r"Predictions / s|Requests by endpoint",
    "error ratio": r"Error ratio",
    "latency percentiles": r"Request latency p50 / p95 / p99",
    "inference latency": r"Inference latency",
    "batch size": r"Batch size",
    "ready replicas": r"Ready replicas|Ready / scraped replicas",
    "prediction labels": r"Prediction label distribution",
    "model digest in service": r"Model in service",
    "reconciles by result": r"Reconciles by result",
    "reconcile duration": r"Reconcile duration",
    "MLModels by condition": r"MLModels by condition",
    "time to ready": r"Time to Ready",
}
GRAFANA_VARIABLES = {"namespace": ".*", "model": "sentiment", "__rate_interval": "1m", "datasource": "prometheus"}


def real_panels() -> list[dict]:
    return [panel for panel in panels(load_dashboard()) if panel["type"] != "row"]


def test_variables_pick_the_data_source_and_the_model() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    model = variables["model"]
    assert model["type"] == "query"
    # mlmodel_model_ready, not mlmodel_model_info: a runtime exports it from its start, so a model
    # whose artifact never loaded (the one you want to look at) is in the list too.
    assert re.fullmatch(r"label_values\(mlmodel_model_ready(\{.*\})?, model\)", model["query"]["query"])
    assert model["datasource"]["uid"] == "${datasource}"


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    for panel in real_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"panel {panel['title']} queries nothing"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_the_dashboard_covers_what_the_issue_asks() -> None:
    titles = [panel["title"] for panel in real_panels()]
    missing = [what for what, pattern in REQUIRED_PANELS.items() if not any(re.search(pattern, t) for t in titles)]
    assert missing == []
    latency = next(p for p in real_panels() if p["title"].startswith("Request latency"))
    assert [re.match(r"histogram_quantile\(([0-9.]+),", t["expr"]).group(1) for t in latency["targets"]] == ["0.5", "0.95", "0.99"]
    digest = next(p for p in real_panels() if p["title"] == "Model in service")
    assert "digest" in digest["targets"][0]["expr"] and "mlmodel_model_info" in digest["targets"][0]["expr"]
    # Panels filtered by the model variable, operator panels not (its metrics have no model label).
    for panel in real_panels():
        for target in panel["targets"]:
            if "mlmodel_operator_" not in target["expr"]:
                assert 'model=~"$model"' in target["expr"], panel["title"]


def test_ids_are_unique_and_panels_do_not_overlap() -> None:
    ids = [panel["id"] for panel in panels(load_dashboard())]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels(load_dashboard()):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not area & cells, f"panel {panel['title']} overlaps another"
        cells |= area


def test_only_contract_metrics_are_queried() -> None:
    expressions = dashboard_expressions(load_dashboard()) + rule_expressions(load_rule_groups())
    for expression in expressions:
        for name in METRIC_NAME.findall(expression.promql):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            known = name in CONTRACT_METRICS or (base in HISTOGRAMS and base != name)
            assert known, f"{expression.origin}: {name} is not in the metrics contract"


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    """promtool parses each query (variables expanded as Grafana would) as a recording rule."""
    expressions = dashboard_expressions(load_dashboard())
    rules = [{"record": f"dashboard:query_{i}", "expr": substitute(e.promql, GRAFANA_VARIABLES)} for i, e in enumerate(expressions)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
