"""The analysis of spec.canary: the candidate against the served model on what their runtimes
already measure (status.canary and the Canary condition).

Both revisions' ready pods are read (podmetrics.py): predictions answered
(mlmodel_requests_total of the V2 and V1 endpoints), those answered 5xx, and the latency
histogram (mlmodel_request_duration_seconds). The first reading with a ready canary pod opens
the window (a canary whose Deployment passes its progress deadline before that fails, and one
whose pods fail in a way waiting does not cure, such as a wrong sha256, fails at once); once
`windowSeconds` have passed and each revision answered `minRequests` in it, the canary passes
if its error rate is at most `maxErrorRateIncrease` above the stable one's and its p99 at most
`maxLatencyRatio` times the stable one's (a p99 within `latencyMarginMs` of the stable one's
never fails: at a few milliseconds, the ratio of two p99s is noise), and fails otherwise. A
canary with no ready pod at the end of its window fails. A verdict holds for the canary it was
reached for (its spec hash): a failed canary is scaled to zero; a passed one keeps its share
until the spec promotes it.
The window lives in the operator's memory: a restarted operator opens a new one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from typing import Any

from mlmodel_spec.resource import MLModelSpec
from prometheus_client.parser import text_string_to_metric_families

from mlmodel_operator.builders.candidates import (
    canary_name,
    canary_replicas,
    canary_selector,
    stable_replicas,
    stable_selector,
)
from mlmodel_operator.builders.common import canary_hash
from mlmodel_operator.conditions import set_condition
from mlmodel_operator.kube import KubeClient
from mlmodel_operator.podmetrics import PodMetrics
from mlmodel_operator.rollback import ROLLBACK_REASONS as UNCURED_BY_WAITING
from mlmodel_operator.settings import OperatorSettings
from mlmodel_operator.status import past_progress_deadline

CANARY_CONDITION = "Canary"
ANALYSING, PASSED, FAILED = "Analysing", "Passed", "Failed"
# The routes of predictions, as the runtime labels them (its FastAPI route names).
PREDICTION_ENDPOINTS = frozenset({"v2_infer", "v1_predict"})
QUANTILE = 0.99


@dataclasses.dataclass(frozen=True)
class Traffic:
    """Predictions a revision answered: how many, how many with a 5xx, and their latency
    histogram (cumulative counts by upper bound in seconds)."""

    requests: int = 0
    errors: int = 0
    buckets: Mapping[float, int] = dataclasses.field(default_factory=dict)

    def __add__(self, other: Traffic) -> Traffic:
        keys = set(self.buckets) | set(other.buckets)
        return Traffic(
            self.requests + other.requests,
            self.errors + other.errors,
            {k: self.buckets.get(k, 0) + other.buckets.get(k, 0) for k in keys},
        )

    def __sub__(self, other: Traffic) -> Traffic:
        return Traffic(
            self.requests - other.requests,
            self.errors - other.errors,
            {k: v - other.buckets.get(k, 0) for k, v in self.buckets.items()},
        )

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def p99(self) -> float | None:
        """The 99th percentile, interpolated within its bucket as Prometheus'
        histogram_quantile does; None without observations."""
        bounds = sorted(self.buckets)
        total = self.buckets.get(math.inf, 0)
        if not bounds or total <= 0:
            return None
        rank = QUANTILE * total
        lower, below = 0.0, 0
        for bound in bounds:
            count = self.buckets[bound]
            if count >= rank:
                if math.isinf(bound):
                    return lower  # beyond the largest finite bucket: its bound is all we know
                inside = count - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = bound, count
        return lower


def traffic(text: str) -> Traffic:
    """The prediction traffic one runtime's /metrics text reports (pure)."""
    requests = errors = 0
    buckets: dict[float, int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("endpoint") not in PREDICTION_ENDPOINTS:
                continue
            if sample.name == "mlmodel_requests_total":
                requests += int(sample.value)
                if sample.labels.get("code", "").startswith("5"):
                    errors += int(sample.value)
            elif sample.name == "mlmodel_request_duration_seconds_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0) + int(sample.value)
    return Traffic(requests, errors, buckets)


def _went_back(now: Traffic, then: Traffic) -> bool:
    """Counters lower than at the window's start: a pod restarted (its counters did)."""
    return now.requests < then.requests or now.errors < then.errors


def _figures(window: Traffic) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "requests": window.requests,
        "errorRate": round(window.error_rate, 4),
    }
    p99 = window.p99()
    if p99 is not None:
        figures["p99Seconds"] = round(p99, 6)
    return figures


@dataclasses.dataclass(frozen=True)
class CanaryPods:
    """What the canary's Deployment and pods say."""

    ready: int = 0
    # The Deployment controller's message once the canary made no progress within the
    # Deployment's progressDeadlineSeconds (spec.rollout.progressDeadlineSeconds).
    stuck: str | None = None
    # (reason, message) of its pods failing in a way waiting does not cure (a wrong sha256, an
    # image that cannot be pulled, a crash loop: the reasons automatic rollback acts on at once).
    failing: tuple[str, str] | None = None


def canary_pods(
    deployment: dict[str, Any] | None, problem: tuple[str, str] | None = None
) -> CanaryPods:
    """The canary's ready pods, whether its Deployment is past its progress deadline, and its
    pods' failure if `problem` (the pod diagnosis) is one that waiting does not cure (pure)."""
    if not deployment:
        return CanaryPods()
    ready = (deployment.get("status") or {}).get("readyReplicas")
    return CanaryPods(
        ready if isinstance(ready, int) else 0,
        past_progress_deadline(deployment),
        problem if problem is not None and problem[0] in UNCURED_BY_WAITING else None,
    )


def judge(
    spec: MLModelSpec, stable: Traffic, canary: Traffic, elapsed: float | None, pods: CanaryPods
) -> tuple[str, str]:
    """(verdict, message) of the window so far (pure); `elapsed`: seconds since the window
    opened, None until a canary pod has been ready."""
    assert spec.canary is not None
    analysis = spec.canary.analysis
    if pods.ready == 0 and pods.failing is not None:
        return FAILED, "the canary's pods fail: {}: {}".format(*pods.failing)
    if elapsed is None:
        if pods.stuck is not None:
            return FAILED, f"no canary pod became ready: {pods.stuck}"
        return ANALYSING, "waiting for a ready canary pod to open the window"
    if elapsed < analysis.window_seconds:
        return ANALYSING, f"{elapsed:.0f}/{analysis.window_seconds} s of the window watched"
    if pods.ready == 0:
        return FAILED, "no canary pod was ready at the end of the window"
    if stable.requests < analysis.min_requests or canary.requests < analysis.min_requests:
        return ANALYSING, (
            f"waiting for traffic: {canary.requests} canary and {stable.requests} stable "
            f"predictions of the {analysis.min_requests} each needs"
        )
    excess = canary.error_rate - stable.error_rate
    if excess > analysis.max_error_rate_increase:
        return FAILED, (
            f"error rate {canary.error_rate:.2%} against {stable.error_rate:.2%} stable, over "
            f"the allowed increase of {analysis.max_error_rate_increase:.2%}"
        )
    canary_p99, stable_p99 = canary.p99(), stable.p99()
    if canary_p99 is not None and stable_p99 is not None and stable_p99 > 0:
        ratio = canary_p99 / stable_p99
        margin = analysis.latency_margin_ms / 1000.0
        if ratio > analysis.max_latency_ratio and canary_p99 - stable_p99 > margin:
            return FAILED, (
                f"p99 {canary_p99 * 1000:.1f} ms against {stable_p99 * 1000:.1f} ms stable, "
                f"{ratio:.2f} times, over the allowed {analysis.max_latency_ratio:g}"
            )
    return PASSED, (
        f"error rate {canary.error_rate:.2%} against {stable.error_rate:.2%}, p99 within "
        f"{analysis.max_latency_ratio:g} times the stable one over {canary.requests} canary "
        "predictions: ready to promote (make spec.canary.model spec.model)"
    )


@dataclasses.dataclass
class _Window:
    spec_hash: str
    started: float
    stable: Traffic
    canary: Traffic


class CanaryAnalysis:
    def __init__(self, settings: OperatorSettings, pods: PodMetrics) -> None:
        self._settings = settings
        self._pods = pods
        self._windows: dict[str, _Window] = {}
        self._last: dict[str, tuple[float, dict]] = {}

    def forget(self, uid: str) -> None:
        self._windows.pop(uid, None)
        self._last.pop(uid, None)

    async def status(
        self,
        kube: KubeClient,
        mlmodel: dict,
        spec: MLModelSpec,
        pods: CanaryPods,
        *,
        routed: bool = False,
    ) -> dict | None:
        """status.canary of a model with spec.canary (None without), read at most once per
        interval; a verdict already reached for this canary is kept as it is."""
        uid = mlmodel["metadata"]["uid"]
        if spec.canary is None:
            self.forget(uid)
            return None
        spec_hash = canary_hash(spec)
        previous = (mlmodel.get("status") or {}).get("canary") or {}
        if previous.get("specHash") == spec_hash and previous.get("verdict") in (PASSED, FAILED):
            self.forget(uid)
            return previous
        now = time.monotonic()
        cached = self._last.get(uid)
        if (
            cached is not None
            and cached[1].get("specHash") == spec_hash
            and now - cached[0] < self._settings.pod_diagnosis_interval_seconds
        ):
            return cached[1]
        namespace = mlmodel["metadata"]["namespace"]
        stable_texts, _ = await self._pods.read(kube, namespace, stable_selector(mlmodel))
        canary_texts, _ = await self._pods.read(kube, namespace, canary_selector(mlmodel))
        stable = sum((traffic(text) for text in stable_texts), Traffic())
        canary = sum((traffic(text) for text in canary_texts), Traffic())
        window = self._windows.get(uid)
        if window is not None and (
            window.spec_hash != spec_hash
            or _went_back(stable, window.stable)
            or _went_back(canary, window.canary)
        ):
            window = None
        if window is None and pods.ready > 0:
            # Both revisions are watched while both serve: the window opens once a canary pod is
            # ready, however long its artifact took to load.
            window = _Window(spec_hash, now, stable, canary)
        if window is None:
            self._windows.pop(uid, None)
            elapsed, stable_seen, canary_seen = None, Traffic(), Traffic()
        else:
            self._windows[uid] = window
            elapsed = now - window.started
            stable_seen, canary_seen = stable - window.stable, canary - window.canary
        verdict, message = judge(spec, stable_seen, canary_seen, elapsed, pods)
        found = canary_status(
            mlmodel, spec, verdict, message, stable_seen, canary_seen, routed=routed
        )
        self._last[uid] = (time.monotonic(), found)
        return found


def canary_status(
    mlmodel: dict,
    spec: MLModelSpec,
    verdict: str,
    message: str,
    stable: Traffic,
    canary: Traffic,
    *,
    routed: bool = False,
) -> dict:
    """status.canary (pure); `routed`: an HTTPRoute weighs the traffic, not the pods."""
    assert spec.canary is not None
    replicas = {"stable": stable_replicas(spec), "canary": canary_replicas(spec)}
    if verdict == FAILED:
        replicas["canary"] = 0
    share = canary_replicas(spec) / (stable_replicas(spec) + canary_replicas(spec))
    return {
        "split": "HTTPRoute" if routed else "Pods",
        "name": canary_name(mlmodel),
        "specHash": canary_hash(spec),
        "modelShortDigest": (spec.canary.model.sha256 or "unverified")[:12],
        "weight": spec.canary.weight,
        "podShare": round(share, 4),
        "replicas": replicas,
        "verdict": verdict,
        "message": message,
        "stable": _figures(stable),
        "candidate": _figures(canary),
    }


_CONDITION = {
    ANALYSING: ("Unknown", "Analysing"),
    PASSED: ("True", "ReadyToPromote"),
    FAILED: ("False", "CanaryFailed"),
}


def with_canary(status: dict, canary: dict | None, *, generation: int | None, now: str) -> dict:
    """`status` with status.canary and the Canary condition, or without either (pure)."""
    result = dict(status)
    if canary is None:
        result.pop("canary", None)
        result["conditions"] = [
            c for c in result.get("conditions") or [] if c.get("type") != CANARY_CONDITION
        ]
        return result
    condition_status, reason = _CONDITION[canary["verdict"]]
    result["canary"] = canary
    result["conditions"] = set_condition(
        result.get("conditions") or [],
        type=CANARY_CONDITION,
        status=condition_status,
        reason=reason,
        message=canary["message"],
        observed_generation=generation,
        now=now,
    )
    return result
