"""spec.shadow in the builders and the status (pure): the candidate's own Deployment and Service,
the served runtime pointed at it, and status.shadow from the serving pods' counters."""

from __future__ import annotations

import pytest
from mlmodel_operator.agreement import shadow_counts, shadow_status
from mlmodel_operator.builders import build_children
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
