"""What the dashboard and the alert rules ask Prometheus: their PromQL, ready to evaluate."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MONITORING = Path(__file__).resolve().parents[2] / "examples" / "monitoring"
DASHBOARD = MONITORING / "mlmodel-dashboard.json"
RULES = MONITORING / "rules" / "mlmodel.rules.yml"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
SET_OPERATORS = ("and", "or", "unless")


@dataclass(frozen=True)
class Expression:
    origin: str  # "dashboard: <panel> [A]" or "rule: <alert>"
    promql: str


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def load_rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", ())  # the panels of a collapsed row


def dashboard_expressions(dashboard: dict[str, Any]) -> list[Expression]:
    found = [
        Expression(f"dashboard: {panel['title']} [{target['refId']}]", target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", ())
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = LABEL_VALUES.match(query)
            assert match, f"variable {variable['name']}: not a label_values() query: {query}"
            # label_values(SELECTOR, LABEL) lists LABEL over the series SELECTOR returns.
            found.append(Expression(f"variable: {variable['name']}", match["selector"]))
    return found


def rule_expressions(groups: list[dict[str, Any]]) -> list[Expression]:
    return [
        Expression(f"rule: {rule.get('alert') or rule.get('record')}", rule["expr"].strip())
        for group in groups
        for rule in group["rules"]
    ]


def substitute(promql: str, variables: dict[str, str]) -> str:
    """Replace Grafana's $name / ${name} the way Grafana would before sending the query."""
    for name in sorted(variables, key=len, reverse=True):
        promql = promql.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    assert "$" not in promql, f"a dashboard variable was left unexpanded: {promql}"
    return promql


def _top_level_split(promql: str, separators: tuple[str, ...], words: bool) -> list[tuple[str, str]]:
    """Split at separators that stand outside (), {}, [] and strings; returns (text, separator)."""
    parts: list[tuple[str, str]] = []
    depth, quote, start, i = 0, "", 0, 0
    while i < len(promql):
        char = promql[i]
        if quote:
            if char == "\\":
                i += 2
                continue
            if char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            for separator in separators:
                if not promql.startswith(separator, i):
                    continue
                if words:
                    before = promql[i - 1] if i else " "
                    after = promql[i + len(separator)] if i + len(separator) < len(promql) else " "
                    if before.isalnum() or before == "_" or after.isalnum() or after == "_":
                        continue
                parts.append((promql[start:i], separator))
                start = i = i + len(separator)
                break
            else:
                i += 1
                continue
            continue
        i += 1
    parts.append((promql[start:], ""))
    return parts


def value_terms(promql: str) -> list[str]:
    """The values an alert condition compares: `A > 0.05 and B > 0.1` gives [A, B].

    An alert's expression is empty while it does not fire, which proves nothing about its
    series; the values it compares must have data whenever the model or operator is running.
    """
    terms = []
    for term, _ in _top_level_split(promql, SET_OPERATORS, words=True):
        value = _top_level_split(term, COMPARISONS, words=False)[0][0]
        terms.append(value.strip())
    return [term for term in terms if term]
