"""Least privilege, proven on the real server: every request the operator made in this session
was allowed (the run_operator fixture fails a test on any 403), and every permission the
install's ClusterRole grants was used by some request, as the API server's audit log records.

This module runs last (tests/support/operator.py orders it so) and first runs a scenario that
touches every kind of child with kopf peering on, as the install runs the operator.
"""

from __future__ import annotations

import json

import pytest
import yaml
from support.cluster import (
    HTTPROUTE_CRD,
    REPO_ROOT,
    Cluster,
    gateway_api_crd,
    servicemonitor_crd,
    wait_established,
)
from support.operator import denied, operator_requests
from support.ports import wait_until
from support.rbac import (
    DEFAULT_DISCOVERY_RULES,
    Request,
    allows,
    cluster_roles,
    grant_used,
    rule_grants,
)

from controlplane.models import SHA256, URI, mlmodel

pytestmark = pytest.mark.cluster
CHILDREN = ("networkpolicy", "service", "deployment", "horizontalpodautoscaler",
            "poddisruptionbudget", "servicemonitor", "ingress")
OPTIONAL = ("networkpolicy", "horizontalpodautoscaler", "poddisruptionbudget", "servicemonitor",
            "ingress", "httproute")


def as_request(event: dict) -> Request:
    ref = event.get("objectRef")
    if not ref:
        return Request(verb=event["verb"], path=event["requestURI"].split("?")[0])
    return Request(
        verb=event["verb"],
        group=ref.get("apiGroup") or "",
        resource=ref.get("resource"),
        subresource=ref.get("subresource"),
        name=ref.get("name"),
    )


def install_rules() -> list[dict]:
    documents = yaml.safe_load_all((REPO_ROOT / "operator" / "deploy" / "rbac.yaml").read_text())
    return cluster_roles(doc for doc in documents if doc)["mlmodel-operator"]


def unused(rules: list[dict], requests: list[Request]) -> list[str]:
    found = []
    for index, rule in enumerate(rules):
        for grant in rule_grants(rule):
            if not grant_used(rule, grant, requests):
                group, resource, verb = grant
                found.append(f"rule {index}: {verb} {resource}.{group or 'core'}")
    return found


def run_every_kind_of_work(cluster: Cluster, run_operator, namespace: str) -> None:
    """Every child kind made, edited by hand and put back, then the optional ones dropped; a
    spec the operator refuses; pods in CrashLoopBackOff listed to say why."""
    cluster.kubectl("apply", "--server-side", "-f", str(servicemonitor_crd()))
    cluster.kubectl("wait", "--for=condition=Established", "crd/servicemonitors.monitoring.coreos.com", "--timeout=60s")
    cluster.kubectl("apply", "--server-side", "-f", str(gateway_api_crd()))
    wait_established(cluster, HTTPROUTE_CRD)
    try:
        cluster.kubectl("delete", "clusterkopfpeering", "mlmodel-operator", "--ignore-not-found")
        operator = run_operator(
            "--peering=mlmodel-operator", namespaces=None, resync="0.5",
            POD_ID="mlmodel-operator-rbac", MLMODEL_OPERATOR_POD_DIAGNOSIS_INTERVAL_SECONDS="0.5",
        )
        cluster.apply(
            mlmodel(
                "sentiment", namespace, replicas=None,
                autoscaling={"minReplicas": 1, "maxReplicas": 3},
                runtime={"image": "kwok.test/failing/crashloop:1", "resources": {"requests": {"cpu": "250m"}}},
                networkPolicy={"enabled": True},
                monitoring={"serviceMonitor": True},
                ingress={"host": "models.example.com"},
                shadow={"model": {"uri": URI.replace("sentiment/", "sentiment/v2/"), "sha256": SHA256}},
            )
        )
        wait_until(
            lambda: all(cluster.get(kind, "sentiment", namespace) for kind in CHILDREN),
            timeout=60, what="every kind of child",
        )
        # A spec only the operator refuses: its status is computed with no Deployment to watch.
        cluster.apply(mlmodel("unservable", namespace, model={"uri": "model.joblib", "sha256": "3f" * 32}))
        wait_until(
            lambda: (cluster.get("mlmodel", "unservable", namespace).get("status") or {}).get("conditions"),
            what="the refused spec's status",
        )
        for kind in CHILDREN:
            cluster.kubectl("label", kind, "sentiment", "-n", namespace, "--overwrite", "app.kubernetes.io/managed-by=someone-else")
        wait_until(
            lambda: all(
                cluster.get(kind, "sentiment", namespace)["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlmodel-operator"
                for kind in CHILDREN
            ),
            timeout=60, what="every child put back",
        )
        # The Ingress exchanged for an HTTPRoute (made, and recorded in the status, before it goes).
        exchange = {"spec": {"ingress": None, "gateway": {"parentRefs": [{"name": "public"}]}}}
        cluster.kubectl("patch", "mlmodel", "sentiment", "-n", namespace, "--type=merge", "-p", json.dumps(exchange))
        wait_until(
            lambda: cluster.get("ingress", "sentiment", namespace) is None
            and cluster.get("httproute", "sentiment", namespace)
            and cluster.get("mlmodel", "sentiment", namespace)["status"]["exposure"]["kind"] == "HTTPRoute",
            timeout=60, what="the Ingress exchanged for an HTTPRoute",
        )
        patch = {"spec": {"autoscaling": None, "replicas": 1, "networkPolicy": {"enabled": False},
                          "monitoring": {"serviceMonitor": False}, "gateway": None, "shadow": None}}
        cluster.kubectl("patch", "mlmodel", "sentiment", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
        wait_until(
            lambda: all(cluster.get(kind, "sentiment", namespace) is None for kind in OPTIONAL)
            and all(cluster.get(kind, "sentiment-shadow", namespace) is None for kind in ("deployment", "service")),
            timeout=60, what="the optional children and the shadow candidate removed",
        )
        assert operator.stop() == 0
    finally:
        cluster.kubectl("delete", "crd", "servicemonitors.monitoring.coreos.com", "--ignore-not-found")
        cluster.kubectl("delete", "crd", HTTPROUTE_CRD, "--ignore-not-found")


def test_every_request_is_allowed_and_every_rule_is_used(
    installed_cluster: Cluster, run_operator, namespace: str
):
    run_every_kind_of_work(installed_cluster, run_operator, namespace)
    rules = install_rules()
    events = operator_requests(installed_cluster)
    requests = [as_request(e) for e in events]
    # An apply that creates its object is audited as a patch answered 201; the server
    # authorised it as a create too.
    requests += [
        Request("create", r.group, r.resource, r.subresource, r.name)
        for e, r in zip(events, requests, strict=True)
        if r.verb == "patch" and (e.get("responseStatus") or {}).get("code") == 201
    ]
    assert requests
    refused = sorted({r.describe() for r in requests if not allows([*rules, *DEFAULT_DISCOVERY_RULES], r)})
    assert refused == [], "the install's RBAC would refuse these requests"
    assert denied(events) == [], "the real authorizer refused these"
    assert unused(rules, requests) == [], "the install's RBAC grants what no request uses"
    # Never a Secret: the operator references Secrets by name and never reads them.
    assert not [r for r in requests if r.resource == "secrets"]
