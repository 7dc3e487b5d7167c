"""How many runtime pods run: the HorizontalPodAutoscaler and the PodDisruptionBudget."""

from __future__ import annotations

from mlmodel_spec.resource import MLModelSpec

from mlmodel_operator.builders.common import name_of, object_meta, selector_labels


def build_hpa(mlmodel: dict, spec: MLModelSpec) -> dict | None:
    scaling = spec.autoscaling
    if scaling is None:
        return None
    behavior = (
        {"behavior": {"scaleDown": {"stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds}}}
        if scaling.scale_down_stabilization_seconds is not None
        else {}
    )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(mlmodel, spec),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name_of(mlmodel)},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
            **behavior,
        },
    }


def may_run_several_replicas(spec: MLModelSpec) -> bool:
    if spec.autoscaling is not None:
        return spec.autoscaling.max_replicas > 1
    return (spec.replicas if spec.replicas is not None else 1) > 1


def build_pdb(mlmodel: dict, spec: MLModelSpec) -> dict | None:
    """A budget of one pod down at a time, only when more than one replica can run.

    With one replica a budget either protects nothing (maxUnavailable 1) or blocks every node
    drain forever (minAvailable 1), so none is made. maxUnavailable 1 never blocks a drain.
    """
    if not may_run_several_replicas(spec):
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(mlmodel, spec),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(mlmodel)},
            # A crash-looping pod (an unreachable artifact, say) must not hold a node drain hostage.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
