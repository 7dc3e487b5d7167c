"""spec.shadow and spec.canary in the builders and the status (pure): the candidates' own
children, the served runtime pointed at the shadow, status.shadow from the serving pods'
counters, and the canary's share, analysis and verdict."""

from __future__ import annotations

import math

import pytest
from mlmodel_operator.agreement import shadow_counts, shadow_status
from mlmodel_operator.builders import build_children
from mlmodel_operator.builders.candidates import canary_replicas, canary_selector, stable_selector
from mlmodel_operator.builders.common import REVISION_LABEL, selector_string
from mlmodel_operator.canary import (
    CANARY_CONDITION,
    CanaryPods,
    Traffic,
    canary_pods,
    canary_status,
    judge,
    traffic,
    with_canary,
)
from mlmodel_operator.settings import OperatorSettings
from mlmodel_spec.resource import InvalidSpec, parse_spec
from support.crd import SAMPLES, root_schema, schema_errors, with_changes

SETTINGS = OperatorSettings()
CANDIDATE = {"uri": "https://models.example.com/house-prices/v2/model.joblib", "sha256": "ab" * 32}
SHADOWED = with_changes(
    SAMPLES["fixed-replicas"],
    {"metadata.uid": "u-1", "spec.shadow": {"model": CANDIDATE, "sampleRate": 0.25}},
)


def children(mlmodel: dict) -> dict[tuple[str, str], dict]:
    built = build_children(mlmodel, SETTINGS, servicemonitor_supported=False)
    return {(child["kind"], child["metadata"]["name"]): child for child in built}


def env(deployment: dict) -> dict[str, str]:
    return {
        item["name"]: item.get("value", "")
        for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }


def test_the_candidate_runs_as_its_own_deployment_and_service_owned_by_the_mlmodel():
    built = children(SHADOWED)
    deployment = built["Deployment", "house-prices-shadow"]
    service = built["Service", "house-prices-shadow"]
    for child in (deployment, service):
        [owner] = child["metadata"]["ownerReferences"]
        assert (owner["name"], owner["uid"], owner["controller"]) == ("house-prices", "u-1", True)
    assert deployment["spec"]["replicas"] == 1
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == "house-prices-shadow"
    assert service["spec"]["selector"]["app.kubernetes.io/instance"] == "house-prices-shadow"
    # The model's own Service never selects the candidate's pods.
    main_selector = built["Service", "house-prices"]["spec"]["selector"]
    assert not all(labels.get(key) == value for key, value in main_selector.items())
    candidate = env(deployment)
    assert candidate["MLMODEL_MODEL_URI"] == CANDIDATE["uri"]
    assert candidate["MLMODEL_MODEL_SHA256"] == CANDIDATE["sha256"]
    assert candidate["MLMODEL_MODEL_NAME"] == "house-prices-shadow"
    assert not any(name.startswith("MLMODEL_SHADOW_") for name in candidate)
    # One candidate: no HPA, PDB or route of its own.
    assert {kind for kind, name in built if name == "house-prices-shadow"} == {"Deployment", "Service"}


def test_the_served_runtime_mirrors_to_the_candidates_service():
    served = env(children(SHADOWED)["Deployment", "house-prices"])
    assert served["MLMODEL_SHADOW_URL"] == "http://house-prices-shadow:80"
    assert served["MLMODEL_SHADOW_MODEL_NAME"] == "house-prices-shadow"
    assert served["MLMODEL_SHADOW_SAMPLE_RATE"] == "0.25"
    assert served["MLMODEL_SHADOW_TOLERANCE"] == "0.001"
    unshadowed = env(children(SAMPLES["fixed-replicas"])["Deployment", "house-prices"])
    assert not any(name.startswith("MLMODEL_SHADOW_") for name in unshadowed)


def test_shadow_settings_are_not_the_users_to_set_through_env():
    with pytest.raises(InvalidSpec, match="MLMODEL_SHADOW_URL"):
        parse_spec(
            with_changes(
                SAMPLES["fixed-replicas"],
                {"spec.runtime.env": [{"name": "MLMODEL_SHADOW_URL", "value": "http://x"}]},
            )
        )


def test_a_name_too_long_for_the_candidates_and_a_relative_candidate_are_refused():
    with pytest.raises(InvalidSpec, match="at most 56 characters with spec.shadow"):
        parse_spec(with_changes(SHADOWED, {"metadata.name": "m" * 57}))
    parse_spec(with_changes(SHADOWED, {"metadata.name": "m" * 56}))
    with pytest.raises(InvalidSpec, match="spec.shadow.model.uri 'v2.joblib' is a relative path"):
        parse_spec(with_changes(SHADOWED, {"spec.shadow.model.uri": "v2.joblib"}))


RUNTIME_METRICS = """\
# HELP mlmodel_shadow_rows_total Rows...
# TYPE mlmodel_shadow_rows_total counter
mlmodel_shadow_rows_total{agreement="agree",model="house-prices"} 45.0
mlmodel_shadow_rows_total{agreement="disagree",model="house-prices"} 5.0
# HELP mlmodel_shadow_requests_total Requests...
# TYPE mlmodel_shadow_requests_total counter
mlmodel_shadow_requests_total{model="house-prices",result="compared"} 20.0
mlmodel_shadow_requests_total{model="house-prices",result="skipped"} 2.0
# HELP mlmodel_requests_total HTTP requests
# TYPE mlmodel_requests_total counter
mlmodel_requests_total{code="200",endpoint="v2_infer",model="house-prices"} 220.0
"""


def test_the_shadow_status_sums_the_serving_pods_counters():
    counts = shadow_counts(RUNTIME_METRICS)
    assert counts == {"agree": 45, "disagree": 5, "compared": 20, "failed": 0, "skipped": 2}
    doubled = {key: 2 * value for key, value in counts.items()}
    status = shadow_status(SHADOWED, parse_spec(SHADOWED), doubled, (2, 2))
    assert status["agreement"] == 0.9
    assert status["rows"] == {"agree": 90, "disagree": 10}
    assert status["requests"] == {"compared": 40, "failed": 0, "skipped": 4}
    assert status["name"] == "house-prices-shadow"
    assert status["modelShortDigest"] == "ab" * 6
    assert status["message"] == "the candidate agrees on 90.0% of 100 rows (2/2 serving pods counted)"
    schema = root_schema()["properties"]["status"]["properties"]["shadow"]
    assert schema_errors(schema, status) == []


@pytest.mark.parametrize(
    "pods,message",
    [((0, 0), "no serving pod is ready yet"), ((0, 2), "no serving pod answered on /metrics"),
     ((2, 2), "no prediction mirrored yet")],
)  # fmt: skip
def test_a_shadow_status_without_rows_says_why(pods, message):
    empty = dict.fromkeys(("agree", "disagree", "compared", "failed", "skipped"), 0)
    status = shadow_status(SHADOWED, parse_spec(SHADOWED), empty, pods)
    assert status["message"] == message and "agreement" not in status


def test_the_sample_with_a_shadow_is_accepted_by_the_crd_schema():
    from support.crd import mlmodel_errors

    assert mlmodel_errors(SHADOWED) == []


# --- spec.canary -------------------------------------------------------------------------------

CANARIED = with_changes(
    SAMPLES["fixed-replicas"],  # 3 replicas
    {"metadata.uid": "u-1", "spec.canary": {"model": CANDIDATE, "weight": 25}},
)


def test_the_canary_runs_behind_the_models_service_as_a_share_of_the_pods():
    built = children(CANARIED)
    deployment = built["Deployment", "house-prices-canary"]
    assert ("Service", "house-prices-canary") not in built
    [owner] = deployment["metadata"]["ownerReferences"]
    assert owner["name"] == "house-prices"
    # 3 stable pods, 25%: one canary pod (a quarter of four).
    assert deployment["spec"]["replicas"] == 1
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service_selector = built["Service", "house-prices"]["spec"]["selector"]
    assert all(pod_labels[key] == value for key, value in service_selector.items())
    assert pod_labels[REVISION_LABEL] == "canary"
    assert deployment["spec"]["selector"]["matchLabels"][REVISION_LABEL] == "canary"
    canary_env = env(deployment)
    assert canary_env["MLMODEL_MODEL_NAME"] == "house-prices"  # the Service's paths
    assert canary_env["MLMODEL_REVISION"] == "canary"
    assert canary_env["MLMODEL_MODEL_URI"] == CANDIDATE["uri"]
    # The served model's pods are untouched by a canary.
    assert children(CANARIED)["Deployment", "house-prices"] == children(
        with_changes(SAMPLES["fixed-replicas"], {"metadata.uid": "u-1"})
    )["Deployment", "house-prices"]


@pytest.mark.parametrize(
    "replicas,weight,expected", [(3, 25, 1), (4, 50, 4), (9, 10, 1), (1, 90, 9), (2, 1, 1), (10, 33, 5)]
)
def test_canary_replicas_follow_the_weight(replicas, weight, expected):
    spec = parse_spec(with_changes(CANARIED, {"spec.replicas": replicas, "spec.canary.weight": weight}))
    assert canary_replicas(spec) == expected


def test_a_failed_canary_runs_no_pod():
    spec = parse_spec(CANARIED)
    failed = canary_status(CANARIED, spec, "Failed", "too slow", Traffic(), Traffic())
    stored = {**CANARIED, "status": {"canary": failed}}
    assert children(stored)["Deployment", "house-prices-canary"]["spec"]["replicas"] == 0
    # A new canary (another weight) is tried again.
    changed = with_changes(stored, {"spec.canary.weight": 40})
    assert children(changed)["Deployment", "house-prices-canary"]["spec"]["replicas"] == 2


def test_shadow_and_canary_together_are_refused():
    with pytest.raises(InvalidSpec, match="set spec.shadow or spec.canary, not both"):
        parse_spec(with_changes(CANARIED, {"spec.shadow": {"model": CANDIDATE}}))


def metrics_text(ok: int, errors: int, buckets: dict[str, int], endpoint: str = "v2_infer") -> str:
    lines = [
        "# TYPE mlmodel_requests_total counter",
        f'mlmodel_requests_total{{code="200",endpoint="{endpoint}",model="m"}} {ok}',
        f'mlmodel_requests_total{{code="503",endpoint="{endpoint}",model="m"}} {errors}',
        'mlmodel_requests_total{code="200",endpoint="metrics",model="m"} 99',
        "# TYPE mlmodel_request_duration_seconds histogram",
    ]
    for bound, count in buckets.items():
        lines.append(f'mlmodel_request_duration_seconds_bucket{{endpoint="{endpoint}",le="{bound}",model="m"}} {count}')
    lines.append(f'mlmodel_request_duration_seconds_count{{endpoint="{endpoint}",model="m"}} {ok + errors}')
    return "\n".join(lines) + "\n"


def test_prediction_traffic_is_read_from_a_runtimes_metrics():
    text = metrics_text(95, 5, {"0.001": 50, "0.01": 98, "0.1": 100, "+Inf": 100})
    found = traffic(text)
    assert (found.requests, found.errors) == (100, 5)
    assert found.buckets == {0.001: 50, 0.01: 98, 0.1: 100, math.inf: 100}
    # p99 inside (0.01, 0.1]: one of two observations there, half way (Prometheus' interpolation).
    assert found.p99() == pytest.approx(0.01 + 0.09 * 0.5)
    both = traffic(text) + traffic(metrics_text(10, 0, {"0.001": 10, "+Inf": 10}, "v1_predict"))
    assert (both.requests, both.errors) == (110, 5)
    assert (both - traffic(text)).requests == 10


def window(requests: int, errors: int, p99_bucket: float) -> Traffic:
    """`requests` predictions, all under `p99_bucket` seconds."""
    return Traffic(requests, errors, {p99_bucket: requests, math.inf: requests})


STUCK = 'ReplicaSet "sentiment-canary-5d8f" has timed out progressing.'
CHECKSUM = ("ArtifactUnavailable", "ChecksumMismatch: sha256 of the artifact is 12ab..., not ab...")
UP, DOWN = CanaryPods(ready=1), CanaryPods(ready=0)


@pytest.mark.parametrize(
    "stable,canary,elapsed,pods,verdict,says",
    [
        # No canary pod has been ready yet: no window, however long the artifact takes to load...
        (Traffic(), Traffic(), None, DOWN, "Analysing", "waiting for a ready canary pod"),
        # ...until its Deployment is past its progress deadline...
        (Traffic(), Traffic(), None, CanaryPods(0, STUCK), "Failed", f"no canary pod became ready: {STUCK}"),
        # ...or its pods fail in a way waiting does not cure.
        (Traffic(), Traffic(), None, CanaryPods(0, None, CHECKSUM), "Failed",
         "the canary's pods fail: ArtifactUnavailable: ChecksumMismatch: sha256 of"),
        # One of its pods still serves: its figures will say how the canary does.
        (window(100, 0, 0.01), window(100, 0, 0.01), 130, CanaryPods(1, None, CHECKSUM), "Passed", "ready to promote"),
        (window(100, 0, 0.01), window(100, 0, 0.01), 30, UP, "Analysing", "30/120 s"),
        (window(100, 0, 0.01), window(10, 0, 0.01), 130, UP, "Analysing", "waiting for traffic: 10 canary"),
        (window(100, 0, 0.01), window(0, 0, 0.01), 130, DOWN, "Failed", "no canary pod was ready at the end"),
        (window(100, 1, 0.01), window(100, 5, 0.01), 130, UP, "Failed", "error rate 5.00% against 1.00%"),
        (window(100, 0, 0.01), window(100, 0, 0.1), 130, UP, "Failed", "times, over the allowed 1.5"),
        # 2.5 times, but 15 ms apart: within the latency margin (20 ms), noise.
        (window(100, 0, 0.01), window(100, 0, 0.025), 130, UP, "Passed", "ready to promote"),
        (window(100, 1, 0.01), window(100, 1, 0.01), 130, UP, "Passed", "ready to promote"),
    ],
)
def test_the_canary_verdict(stable, canary, elapsed, pods, verdict, says):
    spec = parse_spec(CANARIED)
    found, message = judge(spec, stable, canary, elapsed, pods)
    assert found == verdict and says in message, message


def deployment(generation: int, observed: int, ready: int | None, progressing: dict | None) -> dict:
    status: dict = {"observedGeneration": observed, "conditions": [progressing] if progressing else []}
    if ready is not None:
        status["readyReplicas"] = ready
    return {"metadata": {"generation": generation}, "status": status}


TIMED_OUT = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": STUCK}


@pytest.mark.parametrize(
    "found,expected",
    [
        (None, CanaryPods(0, None)),
        (deployment(1, 1, None, {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}), DOWN),
        (deployment(1, 1, 2, None), CanaryPods(2, None)),
        (deployment(1, 1, None, TIMED_OUT), CanaryPods(0, STUCK)),
        # A new canary spec the controller has not seen yet: the old timeout is not its verdict.
        (deployment(2, 1, None, TIMED_OUT), DOWN),
    ],
)
def test_the_canary_pods_are_read_from_its_deployment(found, expected):
    assert canary_pods(found) == expected


def test_only_pod_failures_that_waiting_does_not_cure_fail_a_canary():
    running = deployment(1, 1, None, None)
    assert canary_pods(running, CHECKSUM).failing == CHECKSUM
    assert canary_pods(running, ("CrashLoopBackOff", "back-off restarting")).failing is not None
    # A pod that cannot be scheduled yet may be by an autoscaler: the progress deadline decides.
    assert canary_pods(running, ("Unschedulable", "0/3 nodes are available")).failing is None


def test_the_served_revisions_pods_exclude_the_canarys():
    assert stable_selector(CANARIED).endswith(f",{REVISION_LABEL}!=canary")
    assert stable_selector(CANARIED).startswith(selector_string(CANARIED))
    assert f"{REVISION_LABEL}=canary" in canary_selector(CANARIED).split(",")


def test_the_canary_status_and_condition_fit_the_crd_and_settle():
    spec = parse_spec(CANARIED)
    canary = canary_status(CANARIED, spec, "Passed", "ready to promote", window(80, 0, 0.01), window(60, 0, 0.01))
    assert canary["replicas"] == {"stable": 3, "canary": 1}
    assert canary["podShare"] == 0.25
    assert canary["stable"] == {"requests": 80, "errorRate": 0.0, "p99Seconds": 0.0099}
    status = with_canary({"conditions": []}, canary, generation=3, now="2025-01-01T00:00:00Z")
    [condition] = status["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (CANARY_CONDITION, "True", "ReadyToPromote")
    again = with_canary(status, canary, generation=3, now="2025-01-01T00:09:00Z")
    assert again == status  # nothing to write
    assert with_canary(status, None, generation=4, now="2025-01-01T00:10:00Z") == {"conditions": []}
    schema = root_schema()["properties"]["status"]
    assert schema_errors(schema, status) == []


def test_with_a_gateway_route_the_canary_is_weighed_exactly_by_the_httproute():
    routed = with_changes(CANARIED, {"spec.gateway": {"parentRefs": [{"name": "public"}]}})
    built = children(routed)
    [rule] = built["HTTPRoute", "house-prices"]["spec"]["rules"]
    assert [(ref["name"], ref["weight"]) for ref in rule["backendRefs"]] == [
        ("house-prices", 75), ("house-prices-canary", 25),
    ]  # fmt: skip
    service = built["Service", "house-prices-canary"]
    deployment = built["Deployment", "house-prices-canary"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    # The canary's pods are behind its own Service only: the model's no longer selects them.
    assert all(pod_labels[key] == value for key, value in service["spec"]["selector"].items())
    main_selector = built["Service", "house-prices"]["spec"]["selector"]
    assert not all(pod_labels.get(key) == value for key, value in main_selector.items())
    # The Deployment's selector is the one of the split by pods: only the pods' labels change.
    assert deployment["spec"]["selector"] == children(CANARIED)["Deployment", "house-prices-canary"]["spec"]["selector"]
    # Without the Gateway API the same spec is split by pods, and a failed canary gets no weight.
    unrouted = build_children(routed, SETTINGS, servicemonitor_supported=False, httproute_supported=False)
    assert {(c["kind"], c["metadata"]["name"]) for c in unrouted} >= {("Deployment", "house-prices-canary")}
    assert ("Service", "house-prices-canary") not in {(c["kind"], c["metadata"]["name"]) for c in unrouted}
    spec = parse_spec(routed)
    failed = canary_status(routed, spec, "Failed", "slow", Traffic(), Traffic(), routed=True)
    [rule] = children({**routed, "status": {"canary": failed}})["HTTPRoute", "house-prices"]["spec"]["rules"]
    assert [(ref["name"], ref["weight"]) for ref in rule["backendRefs"]] == [("house-prices", 1)]
    assert failed["split"] == "HTTPRoute"
