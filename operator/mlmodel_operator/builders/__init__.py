"""Pure builders: an MLModel and the operator settings in, complete Kubernetes objects out.

``build_children`` parses the MLModel once (``InvalidSpec`` says what to fix: the spec model is
the one gate, no builder refuses anything); each ``build_<kind>(mlmodel, spec, ...)`` returns a
plain dict, or None when the spec wants no such child. Nothing here reads the environment, the
clock or the cluster.
"""

from __future__ import annotations

from mlmodel_spec.resource import InvalidSpec, MLModelSpec, parse_spec

from mlmodel_operator.builders.candidates import (
    build_canary,
    build_shadow,
    canary_name,
    shadow_name,
)
from mlmodel_operator.builders.common import canary_hash, selector_string, service_url
from mlmodel_operator.builders.deployment import build_deployment
from mlmodel_operator.builders.exposure import (
    HTTPROUTE_CRD,
    build_httproute,
    build_ingress,
    external_url,
)
from mlmodel_operator.builders.monitoring import (
    SERVICEMONITOR_API_VERSION,
    SERVICEMONITOR_CRD,
    build_servicemonitor,
)
from mlmodel_operator.builders.networking import (
    build_network_policy,
    build_service,
)
from mlmodel_operator.builders.scaling import build_hpa, build_pdb
from mlmodel_operator.settings import OperatorSettings

__all__ = [
    "HTTPROUTE_CRD",
    "SERVICEMONITOR_API_VERSION",
    "SERVICEMONITOR_CRD",
    "InvalidSpec",
    "build_canary",
    "build_children",
    "build_deployment",
    "build_hpa",
    "build_httproute",
    "build_ingress",
    "build_network_policy",
    "build_pdb",
    "build_service",
    "build_servicemonitor",
    "build_shadow",
    "canary_name",
    "canary_routed",
    "external_url",
    "selector_string",
    "service_url",
    "shadow_name",
]


def canary_routed(spec: MLModelSpec, *, httproute_supported: bool) -> bool:
    """Whether spec.canary's traffic is split by an HTTPRoute (exact) rather than by pods."""
    return spec.canary is not None and spec.gateway is not None and httproute_supported


def canary_failed(mlmodel: dict, spec: MLModelSpec) -> bool:
    """Whether the status says this very canary failed its analysis (it then runs no pod)."""
    canary = (mlmodel.get("status") or {}).get("canary") or {}
    return spec.canary is not None and canary.get("verdict") == "Failed" and canary.get(
        "specHash"
    ) == canary_hash(spec)


def build_children(
    mlmodel: dict,
    settings: OperatorSettings,
    *,
    servicemonitor_supported: bool,
    httproute_supported: bool = True,
) -> list[dict]:
    """Every desired child, in apply order: the policy before the pods it guards, the
    Deployment before what scales or watches it. Kinds left out are not wanted (delete them)."""
    spec = parse_spec(mlmodel)
    failed = canary_failed(mlmodel, spec)
    # A canary is weighed by the HTTPRoute where one is made; else by its share of the pods.
    routed = canary_routed(spec, httproute_supported=httproute_supported)
    canary_weight = spec.canary.weight if spec.canary and routed and not failed else 0
    candidates = [
        build_network_policy(mlmodel, spec),
        build_service(mlmodel, spec),
        build_deployment(mlmodel, spec, settings),
        *build_shadow(mlmodel, spec, settings),
        *build_canary(mlmodel, spec, settings, failed=failed, routed=routed),
        build_hpa(mlmodel, spec),
        build_pdb(mlmodel, spec),
        build_servicemonitor(mlmodel, spec, settings) if servicemonitor_supported else None,
        build_ingress(mlmodel, spec),
        build_httproute(mlmodel, spec, canary_weight=canary_weight) if httproute_supported else None,
    ]
    return [child for child in candidates if child is not None]

