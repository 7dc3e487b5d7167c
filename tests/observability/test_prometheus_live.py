"""A real Prometheus scrapes a real runtime and the real operator; every dashboard and alert query returns data.

An expression that returns nothing is a broken panel (or an alert that can never fire), so each
one is evaluated through Prometheus's HTTP API after a short load.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from controlplane.models import SHA256, condition, mlmodel
from load import run_load
from processes import Prometheus, Runtime
from prometheus_client.parser import text_string_to_metric_families
from promql import (
    RULES,
    dashboard_expressions,
    load_dashboard,
    load_rule_groups,
    substitute,
    value_terms,
)
from support.cluster import OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, Cluster
from support.faultproxy import Fault, FaultProxy
from support.ports import wait_until

pytestmark = [pytest.mark.prometheus, pytest.mark.cluster]

BROKEN_MODEL = "broken-digest"
# What Grafana sends for `model` with both models selected, and the time window it would use.
GRAFANA_VARIABLES = {"namespace": ".*", "model": f"(sentiment|{BROKEN_MODEL})", "__rate_interval": "1m"}


def has_data(result: list[dict[str, Any]]) -> bool:
    """At least one series with a number (histogram_quantile over no traffic gives NaN)."""
    return any(math.isfinite(float(series["value"][1])) for series in result)


def broken_manifest(repo_root: Path, directory: Path) -> Path:
    """The sentiment example under another name, with a digest its artifact does not have."""
    example = repo_root / "examples" / "sentiment"
    manifest = yaml.safe_load((example / "mlmodel.yaml").read_text())
    manifest["metadata"]["name"] = BROKEN_MODEL
    manifest["spec"]["model"]["uri"] = str(example / "model.joblib")
    manifest["spec"]["model"]["sha256"] = "0" * 64
    path = directory / "broken.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def prometheus_config(runtimes: dict[str, Runtime], operator_port: int) -> dict[str, Any]:
    # Target labels as the operator's ServiceMonitor gives them (job = the MLModel's name).
    jobs = [
        {"job_name": name, "static_configs": [{"targets": [process.url.removeprefix("http://")],
                                               "labels": {"namespace": "default", "pod": f"{name}-0"}}]}
        for name, process in runtimes.items()
    ]
    jobs.append({"job_name": "mlmodel-operator", "static_configs": [{"targets": [f"127.0.0.1:{operator_port}"],
                 "labels": {"namespace": "mlmodel-system", "pod": "mlmodel-operator-0"}}]})
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": jobs,
    }


def drive_the_operator(cluster: Cluster, namespace: str, proxy: FaultProxy) -> None:
    """One MLModel to Ready, one invalid (Degraded), one whose Deployment the API refuses (403)."""
    cluster.apply(mlmodel("sentiment", namespace))
    cluster.kubectl("wait", "--for=condition=Ready", "mlmodel/sentiment", "-n", namespace, "--timeout=60s")
    cluster.apply(mlmodel("relative-uri", namespace, model={"uri": "model.joblib", "sha256": SHA256}))
    refused = proxy.inject(Fault("PATCH", rf"/namespaces/{namespace}/deployments/refused\?", status=403, times=3))
    cluster.apply(mlmodel("refused", namespace))
    wait_until(
        lambda: condition(cluster.get("mlmodel", "relative-uri", namespace), "Degraded").get("status") == "True",
        30, "relative-uri Degraded",
    )
    wait_until(lambda: refused.hits == 3, 30, "the refused Deployment's three 403s")


def test_every_dashboard_and_alert_expression_returns_data(
    runtime: Runtime, repo_root: Path, tmp_path: Path, installed_cluster: Cluster, run_operator, namespace: str
) -> None:
    broken = Runtime(broken_manifest(repo_root, tmp_path), tmp_path, name=BROKEN_MODEL)
    prometheus: Prometheus | None = None
    proxy = FaultProxy(installed_cluster.server, installed_cluster.ca_pem()).start()
    try:
        # Through the fault proxy, which refuses one Deployment as RBAC would (a 403 the real
        # server is not asked for: the operator's own ClusterRole allows it).
        token = installed_cluster.token(OPERATOR_SERVICE_ACCOUNT, OPERATOR_NAMESPACE)
        kubeconfig = installed_cluster.kubeconfig_for_token(tmp_path / "proxied.kubeconfig", token, server=proxy.url)
        operator = run_operator(namespaces=[namespace], resync=1.0, kubeconfig=kubeconfig)
        wait_until(lambda: broken.alive() and (r := broken.get("/metrics")) is not None and r.status_code == 200,
                   60, "the broken runtime's /metrics")
        (tmp_path / "prometheus").mkdir()
        config = prometheus_config({"sentiment": runtime, BROKEN_MODEL: broken}, operator.metrics_port)
        prometheus = Prometheus(tmp_path / "prometheus", config)
        prometheus.wait_ready()
        wait_until(lambda: set(prometheus.targets_up().values()) == {"up"} and len(prometheus.targets_up()) == 3,
                   30, "every target up")

        # Everything below happens while Prometheus scrapes every second, so rates see it.
        drive_the_operator(installed_cluster, namespace, proxy)
        counts = run_load(runtime.url, runtime.model)
        assert counts[("v2_infer", 200)] == 192 and counts[("v1_predict", 200)] == 64, counts
        assert sum(n for (_, code), n in counts.items() if 400 <= code < 500) >= 40, counts
        # A few more scrapes and rule evaluations: every rule group evaluated 3 s after the load.
        loaded = time.time()
        wait_until(lambda: last_rule_evaluation(prometheus) >= loaded + 3, 30, "rule evaluations after the load")

        report, failures = evaluate_everything(prometheus)
        print("\n".join(report))
        assert failures == [], "expressions without data:\n" + "\n".join(failures)
        assert_rules_evaluate_cleanly(prometheus)
        # The alert conditions this run really meets, evaluated whole.
        assert {s["metric"]["model"] for s in prometheus.query(rule_expr("MLModelNotReady"))} == {BROKEN_MODEL}
        assert has_data(prometheus.query(rule_expr("MLModelDegraded")))
    finally:
        if prometheus is not None:
            prometheus.stop()
        broken.stop()
        proxy.stop()


def last_rule_evaluation(prometheus: Prometheus) -> float:
    """When the rule group evaluated least recently last ran (Unix time, Prometheus's own metric)."""
    text = httpx.get(f"{prometheus.url}/metrics", timeout=5).text
    return min(
        (
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "prometheus_rule_group_last_evaluation_timestamp_seconds"
        ),
        default=0.0,
    )


def rule_expr(alert: str) -> str:
    return next(r["expr"] for g in load_rule_groups() for r in g["rules"] if r.get("alert") == alert)


def evaluate_everything(prometheus: Prometheus) -> tuple[list[str], list[str]]:
    report, failures = [], []
    for expression in dashboard_expressions(load_dashboard()):
        promql = substitute(expression.promql, GRAFANA_VARIABLES)
        result = prometheus.query(promql)
        ok = has_data(result)
        report.append(f"{'data ' if ok else 'EMPTY'} {expression.origin}: {len(result)} series")
        if not ok:
            failures.append(f"{expression.origin}: {promql}")
        models = {series["metric"].get("model") for series in result} - {None}
        assert models <= {"sentiment", BROKEN_MODEL}, f"{expression.origin} ignores the model variable: {models}"
    for group in load_rule_groups():
        for rule in group["rules"]:
            name = rule["alert"]
            firing = has_data(prometheus.query(rule["expr"]))
            # The alert's own expression is empty unless its condition holds; what it compares
            # must have data whenever the model or the operator runs.
            for term in value_terms(rule["expr"]):
                ok = has_data(prometheus.query(term))
                report.append(f"{'data ' if ok else 'EMPTY'} rule {name} (condition {'met' if firing else 'not met'}): {' '.join(term.split())[:90]}")
                if not ok:
                    failures.append(f"rule {name}: {term}")
    return report, failures


def assert_rules_evaluate_cleanly(prometheus: Prometheus) -> None:
    rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == {r["alert"] for g in load_rule_groups() for r in g["rules"]}
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
