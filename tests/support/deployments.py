"""A Deployment as the builder makes it and the Deployment controller reports it (for pure tests)."""

from __future__ import annotations

from mlmodel_operator.builders import build_deployment
from mlmodel_operator.settings import OperatorSettings
from mlmodel_spec.resource import parse_spec


def reported_deployment(
    mlmodel: dict,
    *,
    replicas: int = 3,
    updated: int = 3,
    ready: int = 3,
    available: int = 3,
    observed: bool = True,
    conditions: list[dict] | None = None,
    settings: OperatorSettings | None = None,
) -> dict:
    """The Deployment the builder made, as the Deployment controller would report it."""
    obj = build_deployment(mlmodel, parse_spec(mlmodel), settings or OperatorSettings())
    obj["metadata"]["generation"] = 7
    obj["status"] = {
        "observedGeneration": 7 if observed else 6,
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "conditions": conditions
        if conditions is not None
        else [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    }
    return obj
