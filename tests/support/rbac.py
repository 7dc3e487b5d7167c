"""Kubernetes RBAC rule matching, enough to decide whether a ClusterRole allows a request.

Follows the RBAC authorizer (k8s.io/kubernetes plugin/pkg/auth/authorizer/rbac): a request is
allowed when one rule matches its verb, API group, resource (with `resource/subresource` for
subresources) and, if the rule lists resourceNames, its object name; non-resource URLs match
`nonResourceURLs` entries exactly or by a trailing `*` prefix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

# Bound to every authenticated user by a default ClusterRoleBinding (system:discovery and
# system:public-info-viewer): the discovery documents kopf reads need no rule of our own.
DEFAULT_DISCOVERY_RULES: list[dict[str, Any]] = [
    {
        "nonResourceURLs": [
            "/api",
            "/api/*",
            "/apis",
            "/apis/*",
            "/healthz",
            "/livez",
            "/readyz",
            "/openapi",
            "/openapi/*",
            "/version",
            "/version/",
        ],
        "verbs": ["get"],
    }
]


@dataclasses.dataclass(frozen=True)
class Request:
    """What the authorizer sees: a resource request (group is not None) or a non-resource URL."""

    verb: str
    group: str | None = None
    resource: str | None = None
    subresource: str | None = None
    name: str | None = None
    path: str = ""

    @property
    def is_resource(self) -> bool:
        return self.resource is not None

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else str(self.resource)

    def describe(self) -> str:
        if not self.is_resource:
            return f"{self.verb} {self.path}"
        group = self.group or "core"
        name = f" {self.name}" if self.name else ""
        return f"{self.verb} {self.full_resource}.{group}{name}"


def _verb_matches(rule: dict[str, Any], verb: str) -> bool:
    verbs = rule.get("verbs") or []
    return "*" in verbs or verb in verbs


def _resource_matches(rule: dict[str, Any], request: Request) -> bool:
    for resource in rule.get("resources") or []:
        if resource in ("*", request.full_resource):
            return True
        if request.subresource and resource == f"*/{request.subresource}":
            return True
    return False


def _non_resource_matches(rule: dict[str, Any], path: str) -> bool:
    for pattern in rule.get("nonResourceURLs") or []:
        if pattern == "*" or pattern == path:
            return True
        if pattern.endswith("*") and path.startswith(pattern[:-1]):
            return True
    return False


def rule_allows(rule: dict[str, Any], request: Request) -> bool:
    if not _verb_matches(rule, request.verb):
        return False
    if not request.is_resource:
        return _non_resource_matches(rule, request.path)
    groups = rule.get("apiGroups")
    if groups is None or not ("*" in groups or (request.group or "") in groups):
        return False
    if not _resource_matches(rule, request):
        return False
    names = rule.get("resourceNames") or []
    return not names or (request.name is not None and request.name in names)


def allows(rules: Iterable[dict[str, Any]], request: Request) -> bool:
    return any(rule_allows(rule, request) for rule in rules)


def rule_grants(rule: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) — or ("", url, verb) — that a rule grants, to find unused ones."""
    if rule.get("nonResourceURLs"):
        return [("", url, verb) for url in rule["nonResourceURLs"] for verb in rule["verbs"]]
    return [
        (group, resource, verb)
        for group in rule.get("apiGroups") or []
        for resource in rule.get("resources") or []
        for verb in rule.get("verbs") or []
    ]


def grant_used(
    rule: dict[str, Any], grant: tuple[str, str, str], requests: Iterable[Request]
) -> bool:
    """Whether some request is allowed by this one (group, resource, verb) of `rule`."""
    group, resource, verb = grant
    narrowed = dict(rule, verbs=[verb])
    if rule.get("nonResourceURLs"):
        narrowed["nonResourceURLs"] = [resource]
    else:
        narrowed.update(apiGroups=[group], resources=[resource])
    return any(rule_allows(narrowed, request) for request in requests)


def cluster_roles(documents: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {
        doc["metadata"]["name"]: doc.get("rules") or []
        for doc in documents
        if doc.get("kind") == "ClusterRole"
    }
