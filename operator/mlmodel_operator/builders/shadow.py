"""The candidate of spec.shadow: a Deployment and a Service named NAME-shadow (pure).

Built by the same builders as the served model, from a view of the MLModel in which the
candidate is the model: one replica, no autoscaling, no cache, no external route, no shadow of
its own. Its pods carry the instance label NAME-shadow, so the model's Service never selects
them; only the served runtime's mirror reaches them, through their own Service. Owned by the
MLModel, whose name the owner reference keeps.
"""

from __future__ import annotations

from mlmodel_spec.resource import SHADOW_SUFFIX, MLModelSpec

from mlmodel_operator.builders.common import owner_references
from mlmodel_operator.builders.deployment import build_deployment
from mlmodel_operator.builders.networking import build_service
from mlmodel_operator.settings import OperatorSettings


def shadow_name(mlmodel: dict) -> str:
    return f"{mlmodel['metadata']['name']}{SHADOW_SUFFIX}"


def build_shadow(mlmodel: dict, spec: MLModelSpec, settings: OperatorSettings) -> list[dict]:
    """The shadow's Deployment and Service, or nothing without spec.shadow."""
    if spec.shadow is None:
        return []
    view = {**mlmodel, "metadata": {**mlmodel["metadata"], "name": shadow_name(mlmodel)}}
    candidate = spec.model_copy(
        update={
            "model": spec.shadow.model,
            "replicas": 1,
            "autoscaling": None,
            "cache": None,
            "ingress": None,
            "gateway": None,
            "shadow": None,
        }
    )
    children = [build_deployment(view, candidate, settings), build_service(view, candidate)]
    owners = owner_references(mlmodel)
    for child in children:
        if owners:
            child["metadata"]["ownerReferences"] = owners
    return children
