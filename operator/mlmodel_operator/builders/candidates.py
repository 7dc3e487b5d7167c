"""The candidates of spec.shadow and spec.canary, run beside the served model (pure).

Built by the same builders as the served model, from a view of the MLModel in which the
candidate is the model (no autoscaling, cache, external route or candidate of its own), and
owned by the MLModel, whose name the owner reference keeps.

- The shadow: Deployment and Service NAME-shadow, one replica, pods labelled as a model of that
  name, so the model's Service never selects them; only the served runtime's mirror reaches them.
- The canary: Deployment NAME-canary, its pods serving under the model's name and saying
  `canary` in their responses. Split by pods (no Gateway API route): they carry the model's own
  selector labels, so the model's Service routes to them, the traffic following their share of
  the pods. Split by the HTTPRoute (spec.gateway where the Gateway API is installed): they are
  labelled as a model named NAME-canary, behind a Service of that name, which the route weighs
  exactly against the model's. The Deployment's selector (the revision and whose canary) is the
  same in both, so a cluster that gains or loses the Gateway API only relabels the pods. A
  failed canary (status.canary) runs no pod.
"""

from __future__ import annotations

from mlmodel_spec.resource import CANARY_SUFFIX, SHADOW_SUFFIX, MLModelSpec

from mlmodel_operator.builders.common import (
    APP_NAME,
    CANARY_OF_LABEL,
    REVISION_LABEL,
    owner_references,
    selector_labels,
    selector_string,
)
from mlmodel_operator.builders.deployment import build_deployment
from mlmodel_operator.builders.networking import build_service
from mlmodel_operator.settings import OperatorSettings

CANARY = "canary"


def shadow_name(mlmodel: dict) -> str:
    return f"{mlmodel['metadata']['name']}{SHADOW_SUFFIX}"


def canary_name(mlmodel: dict) -> str:
    return f"{mlmodel['metadata']['name']}{CANARY_SUFFIX}"


def canary_labels(mlmodel: dict) -> dict[str, str]:
    """The canary pods' selector, however the traffic is split."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        REVISION_LABEL: CANARY,
        CANARY_OF_LABEL: mlmodel["metadata"]["name"],
    }


def canary_selector(mlmodel: dict) -> str:
    return ",".join(f"{key}={value}" for key, value in canary_labels(mlmodel).items())


def stable_selector(mlmodel: dict) -> str:
    """The served revision's pods: the model's selector, less the canary's pods that carry it
    when the split is by pods."""
    return f"{selector_string(mlmodel)},{REVISION_LABEL}!={CANARY}"


def stable_replicas(spec: MLModelSpec) -> int:
    """The served model's replicas the canary's share is reckoned against (autoscaled: its
    minimum)."""
    if spec.autoscaling is not None:
        return spec.autoscaling.min_replicas
    return 1 if spec.replicas is None else spec.replicas


def canary_replicas(spec: MLModelSpec) -> int:
    """Canary pods for spec.canary.weight percent of the pods: at least one."""
    assert spec.canary is not None
    stable = stable_replicas(spec)
    weight = spec.canary.weight
    return max(1, round(stable * weight / (100 - weight)))


def _candidate(mlmodel: dict, spec: MLModelSpec, name: str, model: object, replicas: int) -> tuple[dict, MLModelSpec]:
    view = {**mlmodel, "metadata": {**mlmodel["metadata"], "name": name}}
    candidate = spec.model_copy(
        update={
            "model": model,
            "replicas": replicas,
            "autoscaling": None,
            "cache": None,
            "ingress": None,
            "gateway": None,
            "shadow": None,
            "canary": None,
        }
    )
    return view, candidate


def _owned(children: list[dict], mlmodel: dict) -> list[dict]:
    owners = owner_references(mlmodel)
    for child in children:
        if owners:
            child["metadata"]["ownerReferences"] = owners
    return children


def build_shadow(mlmodel: dict, spec: MLModelSpec, settings: OperatorSettings) -> list[dict]:
    """The shadow's Deployment and Service, or nothing without spec.shadow."""
    if spec.shadow is None:
        return []
    view, candidate = _candidate(mlmodel, spec, shadow_name(mlmodel), spec.shadow.model, 1)
    return _owned([build_deployment(view, candidate, settings), build_service(view, candidate)], mlmodel)


def build_canary(
    mlmodel: dict,
    spec: MLModelSpec,
    settings: OperatorSettings,
    *,
    failed: bool = False,
    routed: bool = False,
) -> list[dict]:
    """The canary's Deployment (no pod once `failed`), and its Service when `routed` (an
    HTTPRoute splits the traffic); nothing without spec.canary."""
    if spec.canary is None:
        return []
    replicas = 0 if failed else canary_replicas(spec)
    view, candidate = _candidate(mlmodel, spec, canary_name(mlmodel), spec.canary.model, replicas)
    # Served under the model's own name (the route's paths), saying which revision answers.
    deployment = build_deployment(
        view, candidate, settings, model_name=mlmodel["metadata"]["name"], revision=CANARY
    )
    selector = canary_labels(mlmodel)
    deployment["spec"]["selector"] = {"matchLabels": selector}
    template = deployment["spec"]["template"]
    # Which Service routes to the pods: the model's, or (routed) the canary's own.
    template["metadata"]["labels"].update(
        {**selector, **(selector_labels(view) if routed else selector_labels(mlmodel))}
    )
    for constraint in template["spec"].get("topologySpreadConstraints") or ():
        constraint["labelSelector"] = {"matchLabels": selector}
    children = [deployment]
    if routed:
        children.append(build_service(view, candidate))
    return _owned(children, mlmodel)
