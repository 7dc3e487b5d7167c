"""Least privilege, proven: every request the operator made is allowed by the install's
ClusterRole, and every permission that ClusterRole grants was used by some request.

The requests are those of every operator test in this session (collected by the `cluster`
fixture; this module runs last, see conftest.py) plus a scenario run here that touches every
kind of child and runs with kopf peering, as the install does.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import SERVICEMONITOR_CRD, make_mlmodel, wait_for
from emulator import ApiCall, ClusterEmulator
from rbac_check import (
    DEFAULT_DISCOVERY_RULES,
    Request,
    allows,
    cluster_roles,
    grant_used,
    rule_grants,
)

NS = "default"
MLMODEL = "serving.mlmodel.io/v1alpha1/mlmodels"
CHILDREN = {
    "NetworkPolicy": "networking.k8s.io/v1/networkpolicies",
    "Service": "v1/services",
    "Deployment": "apps/v1/deployments",
    "HorizontalPodAutoscaler": "autoscaling/v2/horizontalpodautoscalers",
    "PodDisruptionBudget": "policy/v1/poddisruptionbudgets",
    "ServiceMonitor": "monitoring.coreos.com/v1/servicemonitors",
}
MANAGED_BY = "app.kubernetes.io/managed-by"
REMOVABLE = ("NetworkPolicy", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor")


def as_request(call: ApiCall) -> Request:
    if call.resource is None:
        return Request(verb=call.verb, path=call.path)
    return Request(
        verb=call.verb,
        group=call.group,
        resource=call.resource,
        subresource=call.subresource,
        name=call.name,
    )


def install_peering(cluster: ClusterEmulator, repo_root: Path) -> None:
    with open(repo_root / "operator" / "deploy" / "peering.yaml", encoding="utf-8") as stream:
        for doc in yaml.safe_load_all(stream):
            if doc and doc["kind"] == "CustomResourceDefinition":
                cluster.install_crd(doc)
            elif doc:
                cluster.create(doc)


async def run_every_kind_of_work(cluster: ClusterEmulator, start_operator, repo_root: Path) -> None:
    """Create every child kind, then make the spec drop the optional ones, with peering on."""
    install_peering(cluster, repo_root)
    cluster.install_crd(SERVICEMONITOR_CRD)
    operator = await start_operator(
        resync=0.5, args=["--peering=mlmodel-operator"], POD_ID="mlmodel-operator-rbac"
    )
    cluster.create(
        make_mlmodel(
            replicas=None,
            autoscaling={"minReplicas": 1, "maxReplicas": 3},
            runtime={"resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}},
            networkPolicy={"enabled": True},
        )
    )
    await wait_for(
        lambda: all(cluster.get(path, NS, "sentiment") for path in CHILDREN.values()),
        timeout=20,
        what="every kind of child",
    )
    # Each child edited by hand: each is patched back.
    for path in CHILDREN.values():
        cluster.patch(path, NS, "sentiment", {"metadata": {"labels": {MANAGED_BY: "someone-else"}}})
    await wait_for(
        lambda: all(
            cluster.get(path, NS, "sentiment")["metadata"]["labels"][MANAGED_BY]
            == "mlmodel-operator"
            for path in CHILDREN.values()
        ),
        timeout=20,
        what="every child repaired",
    )
    cluster.patch(
        MLMODEL,
        NS,
        "sentiment",
        {
            "spec": {
                "autoscaling": None,
                "replicas": 1,
                "networkPolicy": {"enabled": False},
                "monitoring": {"serviceMonitor": False},
            }
        },
    )
    await wait_for(
        lambda: all(cluster.get(CHILDREN[kind], NS, "sentiment") is None for kind in REMOVABLE),
        timeout=20,
        what="the optional children removed",
    )
    await wait_for(
        lambda: any(
            c.resource == "clusterkopfpeerings" and c.verb == "get"
            for c in cluster.operator_calls()
        ),
        what="the resync loop to consult the peering object",
    )
    assert await operator.stop() == 0  # kopf leaves the peering object on the way out
    assert not (
        cluster.get("kopf.dev/v1/clusterkopfpeerings", None, "mlmodel-operator").get("status") or {}
    )


def install_rules(repo_root: Path) -> list[dict]:
    with open(repo_root / "operator" / "deploy" / "rbac.yaml", encoding="utf-8") as stream:
        return cluster_roles(doc for doc in yaml.safe_load_all(stream) if doc)["mlmodel-operator"]


def refused(rules: list[dict], requests: list[Request]) -> list[str]:
    return sorted(
        {r.describe() for r in requests if not allows([*rules, *DEFAULT_DISCOVERY_RULES], r)}
    )


def unused(rules: list[dict], requests: list[Request]) -> list[str]:
    found = []
    for index, rule in enumerate(rules):
        for grant in rule_grants(rule):
            if not grant_used(rule, grant, requests):
                group, resource, verb = grant
                found.append(f"rule {index}: {verb} {resource}.{group or 'core'}")
    return found


async def test_every_request_is_allowed_and_every_rule_is_used(
    cluster, start_operator, repo_root, session_requests
):
    await run_every_kind_of_work(cluster, start_operator, repo_root)
    rules = install_rules(repo_root)
    requests = [as_request(call) for call in [*session_requests, *cluster.operator_calls()]]
    assert requests

    assert refused(rules, requests) == [], "the install's RBAC would refuse these requests"
    assert unused(rules, requests) == [], "the install's RBAC grants what no request uses"
    # Never a Secret: the operator references Secrets by name and never reads them.
    assert not [r for r in requests if r.resource == "secrets"]


def test_the_matcher_itself():
    """The RBAC rules this test relies on, checked on known answers."""
    rules = [
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        {"apiGroups": ["serving.mlmodel.io"], "resources": ["mlmodels/status"], "verbs": ["patch"]},
        {
            "apiGroups": ["kopf.dev"],
            "resources": ["clusterkopfpeerings"],
            "verbs": ["get"],
            "resourceNames": ["mlmodel-operator"],
        },
    ]
    ok = [
        Request("create", "", "events"),
        Request("patch", "serving.mlmodel.io", "mlmodels", "status", "m"),
        Request("get", "kopf.dev", "clusterkopfpeerings", name="mlmodel-operator"),
        Request("get", path="/apis/apps/v1"),
    ]
    denied = [
        Request("create", "events.k8s.io", "events"),  # same resource, other group
        Request("patch", "serving.mlmodel.io", "mlmodels", None, "m"),  # not the subresource
        Request("get", "kopf.dev", "clusterkopfpeerings", name="other"),  # not the named one
        Request("list", "kopf.dev", "clusterkopfpeerings"),  # resourceNames cannot cover a list
        Request("get", path="/metrics"),
    ]
    assert refused(rules, ok) == []
    assert len(refused(rules, denied)) == len(denied)
    assert unused(rules, ok) == []
    assert unused(rules, ok[1:]) == ["rule 0: create events.core"]
