"""The alerting rules: valid for promtool, unit-tested, and the same in both shipped forms."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from processes import PROMTOOL
from promql import MONITORING, PROMETHEUS_RULE, RULES, load_rule_groups

UNIT_TESTS = sorted((MONITORING / "tests").glob("*.yml"))
REQUIRED_ALERTS = {
    "MLModelNotReady",
    "MLModelHighErrorRatio",
    "MLModelHighLatencyP99",
    "MLModelOperatorReconcileErrors",
    "MLModelMetadataWritesDropped",
}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], check=False, capture_output=True, text=True, timeout=60, cwd=cwd)


def alerts() -> list[dict]:
    return [rule for group in load_rule_groups() for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_the_rules_file() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_the_required_alerts_exist_with_severity_and_a_runbook() -> None:
    by_name = {rule["alert"]: rule for rule in alerts()}
    assert REQUIRED_ALERTS <= by_name.keys()
    for name, rule in by_name.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        for key in ("summary", "description", "runbook"):
            assert len(annotations.get(key, "").split()) >= 3, f"{name}: annotation {key} missing or empty"


def test_prometheusrule_holds_exactly_the_plain_rule_groups(tmp_path: Path) -> None:
    resource = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    assert resource["metadata"]["name"] and resource["metadata"]["namespace"]
    assert resource["spec"] == yaml.safe_load(RULES.read_text())
    # And what the Prometheus Operator hands Prometheus passes promtool too.
    extracted = tmp_path / "from-prometheusrule.yml"
    extracted.write_text(yaml.safe_dump(resource["spec"]))
    result = promtool("check", "rules", str(extracted))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_unit_tests_that_fire_and_stay_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", ()):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown staying quiet"


def test_promtool_unit_tests_pass() -> None:
    assert UNIT_TESTS
    result = promtool("test", "rules", *map(str, UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _alert_block(text: str, alert: str) -> tuple[int, int]:
    start = text.index(f"- alert: {alert}\n")
    following = text.find("- alert: ", start + 1)
    return start, len(text) if following == -1 else following


# A change to one rule that its unit tests must catch: (alert, text in its block, replacement).
MUTATIONS = [
    ("MLModelNotReady", "mlmodel_model_ready == 0", "mlmodel_model_ready == 2"),
    ("MLModelNoReadyReplica", "(mlmodel_model_ready) == 0", "(mlmodel_model_ready) == 5"),
    ("MLModelHighErrorRatio", ") > 0.05", ") > 0.5"),
    ("MLModelHighLatencyP99", ") > 0.25", ") > 2.5"),
    ("MLModelMetadataWritesDropped", "dropped_total[10m]", "dropped_total[1m]"),
    ("MLModelOperatorReconcileErrors", 'result="error"}[10m]', 'result=~"error|invalid_spec"}[10m]'),
    ("MLModelDegraded", "for: 5m", "for: 2m"),
]


@pytest.mark.parametrize(("alert", "old", "new"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_unit_tests_fail_when_a_rule_is_broken(tmp_path: Path, alert: str, old: str, new: str) -> None:
    shutil.copytree(MONITORING / "tests", tmp_path / "tests")
    (tmp_path / "rules").mkdir()
    text = RULES.read_text()
    start, end = _alert_block(text, alert)
    assert text[start:end].count(old) == 1, f"mutation {old!r} does not apply to {alert}"
    (tmp_path / "rules" / RULES.name).write_text(text[:start] + text[start:end].replace(old, new) + text[end:])

    result = promtool("test", "rules", *(str(tmp_path / "tests" / p.name) for p in UNIT_TESTS))
    assert result.returncode != 0, f"the unit tests did not notice {alert} broken:\n{result.stdout}"
    assert f"alertname: {alert}," in result.stdout + result.stderr


def test_unit_tests_fail_on_a_wrong_expectation(tmp_path: Path) -> None:
    shutil.copytree(MONITORING / "tests", tmp_path / "tests")
    shutil.copytree(MONITORING / "rules", tmp_path / "rules")
    path = tmp_path / "tests" / UNIT_TESTS[0].name
    text = path.read_text()
    wrong = re.sub(r"severity: critical, namespace: prod, model: fraud", "severity: warning, namespace: prod, model: fraud", text)
    assert wrong != text
    path.write_text(wrong)
    result = promtool("test", "rules", str(path))
    assert result.returncode != 0
    assert "alertname: MLModelNoReadyReplica," in result.stdout + result.stderr
