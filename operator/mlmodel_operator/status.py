"""The MLModel's status, computed from the real state of its Deployment (pure).

Ready is True only when the Deployment is fully rolled out for the current spec; Degraded says
why not when something is wrong; Progressing says a rollout is under way.
"""

from __future__ import annotations

from mlmodel_spec.resource import InvalidSpec, MLModelSpec, parse_spec

from mlmodel_operator.builders.common import (
    ROLLOUT_HASH_ANNOTATION,
    name_of,
    rollout_hash,
    selector_string,
    service_url,
)
from mlmodel_operator.builders.exposure import HTTPROUTE_CRD, external_url
from mlmodel_operator.builders.monitoring import SERVICEMONITOR_CRD
from mlmodel_operator.conditions import DEGRADED, PROGRESSING, READY, get_condition, set_condition

# Deployment Progressing reasons that mean "a rollout is moving" (k8s.io/kubernetes deployment util).
_MOVING_REASONS = {"NewReplicaSetCreated", "FoundNewReplicaSet", "ReplicaSetUpdated"}
# Status fields carried over from the previous status when the spec cannot be evaluated.
_CARRIED_FIELDS = ("url", "replicas", "readyReplicas", "replicaSummary", "modelDigest",
                   "modelShortDigest", "monitoring", "exposure", "shadow")


class _Verdict:
    """The three conditions as (status, reason, message) triples, plus the failure if any."""

    def __init__(self) -> None:
        self.ready = ("False", "Unknown", "")
        self.progressing = ("False", "Unknown", "")
        self.degraded = ("False", "AsExpected", "no problem found")

    @property
    def failure(self) -> tuple[str, str] | None:
        status, reason, message = self.degraded
        return (reason, message) if status == "True" else None


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def past_progress_deadline(deployment: dict) -> str | None:
    """What the Deployment controller says of a rollout that made no progress within the
    Deployment's progressDeadlineSeconds (None while it progresses, or when the controller has
    not yet seen the latest spec)."""
    status = deployment.get("status") or {}
    if _int(status.get("observedGeneration")) < _int((deployment.get("metadata") or {}).get("generation")):
        return None
    progressing = get_condition(status.get("conditions") or [], "Progressing") or {}
    if progressing.get("status") != "False" or progressing.get("reason") != "ProgressDeadlineExceeded":
        return None
    return progressing.get("message") or "the rollout made no progress within its deadline"


def _judge_missing(name: str, verdict: _Verdict) -> None:
    message = f"Deployment {name} does not exist yet; the operator creates it"
    verdict.ready = ("False", "DeploymentMissing", message)
    verdict.progressing = ("True", "DeploymentMissing", message)


def _judge_deployment(
    mlmodel: dict, spec: MLModelSpec, deployment: dict, url: str, verdict: _Verdict
) -> tuple[int, int, int]:
    """Fills the verdict from the Deployment; returns (desired, current, ready) replica counts."""
    dep_meta = deployment.get("metadata") or {}
    dep_spec = deployment.get("spec") or {}
    dep_status = deployment.get("status") or {}
    dep_conditions = dep_status.get("conditions") or []

    desired = _int(dep_spec.get("replicas", 1))
    wanted = desired if spec.autoscaling is not None else (1 if spec.replicas is None else spec.replicas)
    template_annotations = ((dep_spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
    matches_spec = (
        template_annotations.get(ROLLOUT_HASH_ANNOTATION) == rollout_hash(spec) and desired == wanted
    )
    # A Deployment controller that has not seen the latest Deployment spec reports stale counts.
    observed = _int(dep_status.get("observedGeneration")) >= _int(dep_meta.get("generation"))
    current = _int(dep_status.get("replicas"))
    updated = _int(dep_status.get("updatedReplicas"))
    ready = _int(dep_status.get("readyReplicas"))
    available = _int(dep_status.get("availableReplicas"))

    progressing = get_condition(dep_conditions, "Progressing") or {}
    failure = get_condition(dep_conditions, "ReplicaFailure") or {}
    stuck = past_progress_deadline(deployment)
    replica_failure = failure.get("status") == "True"
    rolled_out = (
        matches_spec
        and observed
        and wanted > 0
        and updated >= wanted
        and current <= updated
        and available >= wanted
    )

    if stuck is not None:
        verdict.degraded = (
            "True",
            "ProgressDeadlineExceeded",
            stuck,
        )
    elif replica_failure:
        verdict.degraded = (
            "True",
            "ReplicaFailure",
            failure.get("message") or "the Deployment cannot create its pods",
        )

    if rolled_out:
        verdict.ready = ("True", "Available", f"{ready}/{wanted} replicas ready, serving at {url}")
        verdict.progressing = ("False", "NewReplicaSetAvailable", "rollout complete")
    elif wanted == 0:
        message = "spec.replicas is 0: nothing serves this model"
        verdict.ready = ("False", "ScaledToZero", message)
        verdict.progressing = ("False", "ScaledToZero", message)
    else:
        if not matches_spec:
            reason, message = "RolloutInProgress", "the Deployment is being updated to the MLModel's spec"
        elif not observed or updated < wanted or current > updated:
            reason = "RolloutInProgress"
            message = f"{updated}/{wanted} replicas updated, {available} available"
        else:
            reason = "MinimumReplicasUnavailable"
            message = f"{available}/{wanted} replicas available"
        if verdict.failure:
            verdict.ready = ("False", *verdict.failure)
        else:
            verdict.ready = ("False", reason, message)
        if stuck is not None:
            verdict.progressing = ("False", "ProgressDeadlineExceeded", verdict.degraded[2])
        else:
            moving = progressing.get("reason") if matches_spec and observed else None
            verdict.progressing = (
                "True",
                moving if moving in _MOVING_REASONS else reason,
                message,
            )
    return wanted, current, ready


def _monitoring(mlmodel: dict, spec: MLModelSpec, servicemonitor_supported: bool) -> dict:
    if not spec.monitoring.service_monitor:
        return {
            "serviceMonitor": False,
            "reason": "Disabled",
            "message": "spec.monitoring.serviceMonitor is false",
        }
    if not servicemonitor_supported:
        return {
            "serviceMonitor": False,
            "reason": "CRDNotInstalled",
            "message": (
                f"the ServiceMonitor CRD ({SERVICEMONITOR_CRD}) is not installed, so no "
                "ServiceMonitor was created; the runtime still serves /metrics on port http"
            ),
        }
    return {
        "serviceMonitor": True,
        "reason": "Enabled",
        "message": f"ServiceMonitor {name_of(mlmodel)} scrapes /metrics on port http",
    }


def _exposure(mlmodel: dict, spec: MLModelSpec, httproute_supported: bool) -> dict:
    """How the model is reached from outside; the kind is what the reconcile may have to delete."""
    name = name_of(mlmodel)
    if spec.ingress is not None:
        message = f"Ingress {name} routes {spec.ingress.host} to the model"
        return {"kind": "Ingress", "reason": "Ingress", "message": message}
    if spec.gateway is None:
        message = "no spec.ingress or spec.gateway: reached through its Service only"
        return {"kind": "", "reason": "ClusterOnly", "message": message}
    if not httproute_supported:
        return {
            "kind": "",
            "reason": "CRDNotInstalled",
            "message": (
                f"the Gateway API's HTTPRoute CRD ({HTTPROUTE_CRD}) is not installed, so no "
                "HTTPRoute was made; the model is reached through its Service only"
            ),
        }
    message = f"HTTPRoute {name} attaches to the Gateways of spec.gateway.parentRefs"
    return {"kind": "HTTPRoute", "reason": "HTTPRoute", "message": message}


def _last_failure(previous: dict, failure: tuple[str, str] | None, now: str) -> dict | None:
    """The latest failure; kept unchanged (time included) while the same failure persists."""
    before = previous.get("lastFailure")
    if failure is None:
        return before
    reason, message = failure
    if before and before.get("reason") == reason and before.get("message") == message:
        return before
    return {"reason": reason, "message": message, "time": now}


def _conditions(previous: dict, verdict: _Verdict, generation: int | None, now: str) -> list[dict]:
    conditions = previous.get("conditions") or []
    for type_, (status, reason, message) in (
        (READY, verdict.ready),
        (PROGRESSING, verdict.progressing),
        (DEGRADED, verdict.degraded),
    ):
        conditions = set_condition(
            conditions,
            type=type_,
            status=status,
            reason=reason,
            message=message,
            observed_generation=generation,
            now=now,
        )
    return conditions


def _digests(spec: MLModelSpec) -> dict:
    if spec.model.sha256:
        return {"modelDigest": f"sha256:{spec.model.sha256}", "modelShortDigest": spec.model.sha256[:12]}
    return {"modelDigest": "", "modelShortDigest": "unverified"}


def compute_status(
    mlmodel: dict,
    deployment: dict | None,
    *,
    servicemonitor_supported: bool,
    httproute_supported: bool = True,
    now: str,
    artifact_problem: tuple[str, str] | None = None,
    conflict: tuple[str, str] | None = None,
    shadow: dict | None = None,
) -> dict:
    """The full desired `status`; equal to the stored one when nothing changed (no write needed).

    `artifact_problem` is (reason, message) when the pods say why they are not ready: the
    runtime cannot fetch or verify its artifact (("ArtifactUnavailable", "ChecksumMismatch: ..."))
    or a container is stuck (("CrashLoopBackOff", ...), ("OOMKilled", ...)); it makes the MLModel
    Degraded. `conflict` is (reason, message) when a child's name is taken by an object another
    owner controls: the model is Degraded and not Ready (its URL may reach someone else's Service).
    `shadow` is status.shadow (how often the spec.shadow candidate agrees), when it has one.
    """
    try:
        spec = parse_spec(mlmodel)
    except InvalidSpec as error:
        return invalid_spec_status(mlmodel, str(error), now=now)
    previous = mlmodel.get("status") or {}
    generation = mlmodel["metadata"].get("generation")
    url = service_url(mlmodel, spec.service.port)
    if spec.ingress is not None or httproute_supported:
        url = external_url(mlmodel, spec) or url

    verdict = _Verdict()
    if artifact_problem is not None:
        verdict.degraded = ("True", *artifact_problem)
    if deployment is None:
        _judge_missing(name_of(mlmodel), verdict)
        if verdict.failure:
            verdict.ready = ("False", *verdict.failure)
        if spec.autoscaling is not None:
            desired = spec.autoscaling.min_replicas
        else:
            desired = 1 if spec.replicas is None else spec.replicas
        current = ready = 0
    else:
        desired, current, ready = _judge_deployment(mlmodel, spec, deployment, url, verdict)
    if conflict is not None:
        verdict.degraded = ("True", *conflict)
        verdict.ready = ("False", *conflict)

    status = {
        "observedGeneration": generation,
        "conditions": _conditions(previous, verdict, generation, now),
        "url": url,
        "replicas": current,
        "readyReplicas": ready,
        "replicaSummary": f"{ready}/{desired}",
        "selector": selector_string(mlmodel),
        **_digests(spec),
        "monitoring": _monitoring(mlmodel, spec, servicemonitor_supported),
        "exposure": _exposure(mlmodel, spec, httproute_supported),
    }
    if shadow is not None:
        status["shadow"] = shadow
    if generation is None:
        del status["observedGeneration"]
    last_failure = _last_failure(previous, verdict.failure, now)
    if last_failure:
        status["lastFailure"] = last_failure
    return status


def invalid_spec_status(mlmodel: dict, message: str, *, now: str) -> dict:
    """Status for a spec the operator cannot serve: Degraded with what to fix, Ready False.

    What the previous status said about running replicas is kept: the children of the last
    valid spec are left running, untouched, until the spec is fixed.
    """
    previous = mlmodel.get("status") or {}
    generation = mlmodel["metadata"].get("generation")
    verdict = _Verdict()
    verdict.degraded = ("True", "InvalidSpec", message)
    verdict.ready = ("False", "InvalidSpec", message)
    verdict.progressing = ("False", "InvalidSpec", "nothing is rolled out until the spec is fixed")
    status = {key: previous[key] for key in _CARRIED_FIELDS if key in previous}
    status.update(
        {
            "conditions": _conditions(previous, verdict, generation, now),
            "selector": selector_string(mlmodel),
        }
    )
    if generation is not None:
        status["observedGeneration"] = generation
    last_failure = _last_failure(previous, verdict.failure, now)
    if last_failure:
        status["lastFailure"] = last_failure
    return status
