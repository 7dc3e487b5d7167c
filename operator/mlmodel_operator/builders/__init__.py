"""Pure builders: an MLModel and the operator settings in, complete Kubernetes objects out.

``build_children`` parses the MLModel once (``InvalidSpec`` says what to fix: the spec model is
the one gate, no builder refuses anything) and returns plain dicts; nothing here reads the
environment, the clock or the cluster.
"""

from __future__ import annotations

from mlmodel_spec.resource import InvalidSpec, parse_spec

from mlmodel_operator.builders.common import child_names, selector_string, service_url
from mlmodel_operator.builders.deployment import build_deployment_from_spec
from mlmodel_operator.builders.monitoring import (
    SERVICEMONITOR_API_VERSION,
    SERVICEMONITOR_CRD,
    build_servicemonitor_from_spec,
)
from mlmodel_operator.builders.networking import (
    build_network_policy_from_spec,
    build_service_from_spec,
)
from mlmodel_operator.builders.scaling import build_hpa_from_spec, build_pdb_from_spec
from mlmodel_operator.settings import OperatorSettings

__all__ = [
    "SERVICEMONITOR_API_VERSION",
    "SERVICEMONITOR_CRD",
    "InvalidSpec",
    "build_children",
    "build_deployment",
    "build_hpa",
    "build_network_policy",
    "build_pdb",
    "build_service",
    "build_servicemonitor",
    "child_names",
    "selector_string",
    "service_url",
]


def build_deployment(mlmodel: dict, settings: OperatorSettings) -> dict:
    return build_deployment_from_spec(mlmodel, parse_spec(mlmodel), settings)


def build_service(mlmodel: dict, settings: OperatorSettings) -> dict:
    return build_service_from_spec(mlmodel, parse_spec(mlmodel))


def build_hpa(mlmodel: dict, settings: OperatorSettings) -> dict | None:
    """None when spec.autoscaling is absent (the Deployment then carries spec.replicas)."""
    return build_hpa_from_spec(mlmodel, parse_spec(mlmodel))


def build_pdb(mlmodel: dict, settings: OperatorSettings) -> dict | None:
    """None unless more than one replica can run (spec.replicas > 1 or maxReplicas > 1)."""
    return build_pdb_from_spec(mlmodel, parse_spec(mlmodel))


def build_servicemonitor(mlmodel: dict, settings: OperatorSettings) -> dict | None:
    """None when spec.monitoring.serviceMonitor is false."""
    return build_servicemonitor_from_spec(mlmodel, parse_spec(mlmodel), settings)


def build_network_policy(mlmodel: dict, settings: OperatorSettings) -> dict | None:
    """None unless spec.networkPolicy.enabled."""
    return build_network_policy_from_spec(mlmodel, parse_spec(mlmodel))


def build_children(
    mlmodel: dict, settings: OperatorSettings, *, servicemonitor_supported: bool
) -> list[dict]:
    """Every desired child, in apply order: the policy before the pods it guards, the
    Deployment before what scales or watches it. Kinds left out are not wanted (delete them)."""
    spec = parse_spec(mlmodel)
    candidates = [
        build_network_policy_from_spec(mlmodel, spec),
        build_service_from_spec(mlmodel, spec),
        build_deployment_from_spec(mlmodel, spec, settings),
        build_hpa_from_spec(mlmodel, spec),
        build_pdb_from_spec(mlmodel, spec),
        build_servicemonitor_from_spec(mlmodel, spec, settings) if servicemonitor_supported else None,
    ]
    return [child for child in candidates if child is not None]

