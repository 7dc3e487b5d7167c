"""Conditions and the MLModel status computed from the Deployment's real state."""

from __future__ import annotations

import copy
import re

import pytest
from mlmodel_operator.builders import selector_string
from mlmodel_operator.conditions import get_condition, set_condition
from mlmodel_operator.settings import OperatorSettings
from mlmodel_operator.status import compute_status, invalid_spec_status
from support.crd import DIGEST, SAMPLES, root_schema, schema_errors, with_changes
from support.deployments import reported_deployment

T0 = "2025-01-01T00:00:00Z"
T1 = "2025-01-01T00:05:00Z"
T2 = "2025-01-01T00:10:00Z"
SETTINGS = OperatorSettings()


# --- set_condition ---------------------------------------------------------------------------


def _set(conditions, status="True", reason="Available", message="ok", generation=1, now=T0, type="Ready"):
    return set_condition(
        conditions, type=type, status=status, reason=reason, message=message,
        observed_generation=generation, now=now,
    )


def test_set_condition_adds_a_new_type():
    conditions = _set([])
    assert conditions == [
        {"type": "Ready", "status": "True", "reason": "Available", "message": "ok",
         "lastTransitionTime": T0, "observedGeneration": 1}
    ]
    assert get_condition(conditions, "Ready") is conditions[0]
    assert get_condition(conditions, "Degraded") is None
    assert get_condition(None, "Ready") is None


def test_transition_time_moves_only_when_status_changes():
    first = _set([], now=T0)
    same = _set(first, reason="StillAvailable", message="still ok", generation=2, now=T1)
    assert same[0]["lastTransitionTime"] == T0
    assert (same[0]["reason"], same[0]["message"], same[0]["observedGeneration"]) == (
        "StillAvailable", "still ok", 2,
    )
    flipped = _set(same, status="False", reason="MinimumReplicasUnavailable", now=T2)
    assert flipped[0]["lastTransitionTime"] == T2


def test_set_condition_returns_a_new_list_and_keeps_order():
    conditions = _set(_set([], type="Progressing"), type="Ready")
    before = copy.deepcopy(conditions)
    updated = _set(conditions, type="Progressing", status="False", now=T1)
    assert conditions == before
    assert [c["type"] for c in updated] == ["Progressing", "Ready"]
    assert _set(updated, type="Progressing", status="False", now=T2) == updated


def test_set_condition_refuses_an_invalid_status():
    with pytest.raises(ValueError, match="True, False or Unknown"):
        _set([], status="yes")


def test_observed_generation_is_optional():
    assert "observedGeneration" not in _set([], generation=None)[0]


# --- compute_status --------------------------------------------------------------------------

MODEL = with_changes(SAMPLES["fixed-replicas"], {"metadata.generation": 4})  # 3 replicas


def deployment(mlmodel: dict = MODEL, **state) -> dict:
    return reported_deployment(mlmodel, **state)


def status_of(mlmodel=MODEL, dep=None, *, supported=True, now=T0, artifact_problem=None) -> dict:
    return compute_status(
        mlmodel, dep, servicemonitor_supported=supported, now=now, artifact_problem=artifact_problem
    )


def conditions(status: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_available_deployment_makes_the_model_ready():
    status = status_of(dep=deployment())
    assert conditions(status) == {
        "Ready": ("True", "Available"),
        "Progressing": ("False", "NewReplicaSetAvailable"),
        "Degraded": ("False", "AsExpected"),
    }
    assert status["observedGeneration"] == 4
    assert all(c["observedGeneration"] == 4 for c in status["conditions"])
    assert status["url"] == "http://house-prices.models.svc.cluster.local:80/v2/models/house-prices"
    assert (status["replicas"], status["readyReplicas"], status["replicaSummary"]) == (3, 3, "3/3")
    assert status["selector"] == selector_string(MODEL)
    assert status["modelDigest"] == f"sha256:{DIGEST}"
    assert status["modelShortDigest"] == DIGEST[:12]
    assert "lastFailure" not in status
    assert status["url"] in get_condition(status["conditions"], "Ready")["message"]


@pytest.mark.parametrize(
    "state,ready_reason,progressing",
    [
        ({"updated": 1, "ready": 1, "available": 1}, "RolloutInProgress", ("True", "RolloutInProgress")),
        (
            {"updated": 2, "ready": 3, "available": 3, "replicas": 4,
                 "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]},
            "RolloutInProgress",
            ("True", "ReplicaSetUpdated"),
        ),
        # Counts look complete, but the controller has not seen the latest Deployment spec yet.
        ({"observed": False}, "RolloutInProgress", ("True", "RolloutInProgress")),
        # Old pods still running next to the new ones.
        ({"replicas": 4}, "RolloutInProgress", ("True", "RolloutInProgress")),
        ({"ready": 2, "available": 2}, "MinimumReplicasUnavailable", ("True", "MinimumReplicasUnavailable")),
    ],
)
def test_a_rollout_in_progress_is_not_ready(state, ready_reason, progressing):
    status = status_of(dep=deployment(**state))
    found = conditions(status)
    assert found["Ready"] == ("False", ready_reason)
    assert found["Progressing"] == progressing
    assert found["Degraded"] == ("False", "AsExpected")


def test_a_deployment_for_an_older_spec_is_not_ready():
    older = deployment(with_changes(MODEL, {"spec.model.uri": "https://m.example.com/old.joblib"}))
    assert conditions(status_of(dep=older))["Ready"] == ("False", "RolloutInProgress")
    scaled = deployment(with_changes(MODEL, {"spec.replicas": 2}), replicas=2, updated=2, ready=2, available=2)
    assert conditions(status_of(dep=scaled))["Ready"] == ("False", "RolloutInProgress")


def test_progress_deadline_exceeded_is_degraded():
    stuck = deployment(
        updated=1, ready=0, available=0,
        conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                     "message": 'ReplicaSet "house-prices-abc" has timed out progressing.'}],
    )
    status = status_of(dep=stuck)
    assert conditions(status) == {
        "Ready": ("False", "ProgressDeadlineExceeded"),
        "Progressing": ("False", "ProgressDeadlineExceeded"),
        "Degraded": ("True", "ProgressDeadlineExceeded"),
    }
    assert status["lastFailure"] == {
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "house-prices-abc" has timed out progressing.',
        "time": T0,
    }


def test_a_stale_deadline_from_the_previous_generation_is_ignored():
    stale = deployment(
        observed=False,
        conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}],
    )
    assert conditions(status_of(dep=stale))["Degraded"] == ("False", "AsExpected")


def test_replica_failure_is_degraded():
    failing = deployment(
        updated=0, ready=0, available=0, replicas=0,
        conditions=[{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                     "message": 'pods "house-prices-x" is forbidden: exceeded quota'}],
    )
    status = status_of(dep=failing)
    assert conditions(status)["Degraded"] == ("True", "ReplicaFailure")
    assert conditions(status)["Ready"] == ("False", "ReplicaFailure")
    assert "exceeded quota" in get_condition(status["conditions"], "Degraded")["message"]


def test_an_artifact_problem_is_degraded_and_not_ready():
    problem = ("ArtifactUnavailable", "GET https://m.example.com/h.joblib: 404")
    status = status_of(dep=deployment(updated=3, ready=0, available=0), artifact_problem=problem)
    assert conditions(status)["Degraded"] == ("True", "ArtifactUnavailable")
    assert conditions(status)["Ready"] == ("False", "ArtifactUnavailable")
    assert status["lastFailure"]["message"] == problem[1]


def test_a_missing_deployment():
    status = status_of(dep=None)
    assert conditions(status) == {
        "Ready": ("False", "DeploymentMissing"),
        "Progressing": ("True", "DeploymentMissing"),
        "Degraded": ("False", "AsExpected"),
    }
    assert status["replicaSummary"] == "0/3"


def test_scaled_to_zero_is_not_ready():
    model = SAMPLES["scaled-to-zero"]
    dep = deployment(model, replicas=0, updated=0, ready=0, available=0)
    assert conditions(status_of(model, dep))["Ready"] == ("False", "ScaledToZero")


def test_autoscaled_replicas_come_from_the_deployment():
    model = SAMPLES["full"]
    dep = deployment(model, replicas=4, updated=4, ready=4, available=4)
    dep["spec"]["replicas"] = 4  # set by the HPA
    status = status_of(model, dep)
    assert conditions(status)["Ready"] == ("True", "Available")
    assert status["replicaSummary"] == "4/4"
    assert status["url"] == "http://sentiment.models.svc.cluster.local:8000/v2/models/sentiment"


def test_an_unchanged_world_gives_an_identical_status():
    """The operator writes status only when it differs: a resync later must produce the same dict."""
    for dep in (deployment(), deployment(updated=1, ready=1, available=1), None):
        first = status_of(dep=dep, now=T0, artifact_problem=("ArtifactUnavailable", "down"))
        again = status_of({**MODEL, "status": first}, dep, now=T2, artifact_problem=("ArtifactUnavailable", "down"))
        assert again == first


def test_transitions_and_the_last_failure_survive_recovery():
    broken = status_of(dep=deployment(ready=0, available=0), now=T0, artifact_problem=("ArtifactUnavailable", "404"))
    healed = status_of({**MODEL, "status": broken}, deployment(), now=T1)
    assert conditions(healed)["Ready"] == ("True", "Available")
    ready = get_condition(healed["conditions"], "Ready")
    assert ready["lastTransitionTime"] == T1
    assert healed["lastFailure"] == {"reason": "ArtifactUnavailable", "message": "404", "time": T0}
    other = status_of({**MODEL, "status": healed}, deployment(ready=0, available=0), now=T2,
                      artifact_problem=("ArtifactUnavailable", "sha256 mismatch"))
    assert other["lastFailure"]["time"] == T2


@pytest.mark.parametrize(
    "mlmodel,supported,expected",
    [
        (MODEL, True, (False, "Disabled")),  # fixed-replicas turns the ServiceMonitor off
        (SAMPLES["minimal"], True, (True, "Enabled")),
        (SAMPLES["minimal"], False, (False, "CRDNotInstalled")),
    ],
)
def test_monitoring_says_whether_and_why(mlmodel, supported, expected):
    monitoring = status_of(mlmodel, None, supported=supported)["monitoring"]
    assert (monitoring["serviceMonitor"], monitoring["reason"]) == expected
    if expected[1] == "CRDNotInstalled":
        assert "servicemonitors.monitoring.coreos.com" in monitoring["message"]


def test_unverified_model_digest():
    status = status_of(SAMPLES["onnx-unverified"], None)
    assert (status["modelDigest"], status["modelShortDigest"]) == ("", "unverified")


def test_invalid_spec_status_keeps_what_runs_and_says_what_to_fix():
    running = status_of(dep=deployment(), now=T0)
    broken = with_changes({**MODEL, "status": running}, {"spec.model.uri": "model.joblib", "metadata.generation": 5})
    status = status_of(broken, deployment(), now=T1)
    assert status == invalid_spec_status(broken, status["lastFailure"]["message"], now=T1)
    assert conditions(status) == {
        "Ready": ("False", "InvalidSpec"),
        "Progressing": ("False", "InvalidSpec"),
        "Degraded": ("True", "InvalidSpec"),
    }
    assert "relative path" in get_condition(status["conditions"], "Degraded")["message"]
    assert status["observedGeneration"] == 5
    assert (status["url"], status["replicaSummary"]) == (running["url"], "3/3")
    assert status["lastFailure"]["time"] == T1


STATUS_SCHEMA = root_schema()["properties"]["status"]


@pytest.mark.parametrize(
    "status",
    [
        status_of(dep=deployment()),
        status_of(dep=None, supported=False),
        status_of(dep=deployment(ready=0, available=0), artifact_problem=("ArtifactUnavailable", "x")),
        invalid_spec_status(MODEL, "bad", now=T0),
    ],
    ids=["ready", "missing", "degraded", "invalid"],
)
def test_status_fits_the_crd_status_schema(status):
    assert schema_errors(STATUS_SCHEMA, status) == []
    for key in status:
        assert key in STATUS_SCHEMA["properties"], f"status.{key} would be pruned by the API server"


def _jsonpath(obj: dict, path: str) -> object:
    """The subset of kubectl's JSONPath the printer columns use: .a.b and [?(@.type=="X")]."""
    value: object = obj
    for name, wanted in re.findall(r'\.(\w+)(?:\[\?\(@\.type=="(\w+)"\)\])?', path):
        value = value[name]
        if wanted:
            value = next(c for c in value if c["type"] == wanted)
    return value


def test_printer_columns_show_ready_reason_replicas_model_url():
    from support.crd import version

    mlmodel = {**MODEL, "status": status_of(dep=deployment())}
    shown = {
        column["name"]: _jsonpath(mlmodel, column["jsonPath"])
        for column in version()["additionalPrinterColumns"]
        if column["name"] != "Age"
    }
    assert shown == {
        "Ready": "True",
        "Reason": "Available",
        "Replicas": "3/3",
        "Model": DIGEST[:12],
        "URL": "http://house-prices.models.svc.cluster.local:80/v2/models/house-prices",
    }


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"updated": 1, "ready": 1, "available": 1},
        {"observed": False},
        {"replicas": 4},
        {"conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]},
        {"conditions": [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate"}]},
    ],
)
def test_the_watch_cache_keeps_all_the_status_reads_of_a_deployment(state):
    """The operator keeps only status_view() of each watched Deployment: the status computed
    from it is the one computed from the whole Deployment."""
    from mlmodel_operator.children import status_view

    whole = deployment(**state)
    assert status_of(dep=status_view(whole)) == status_of(dep=whole)
    spec_changed = deployment(build_mlmodel_with_replicas(2), **state)
    assert status_of(dep=status_view(spec_changed)) == status_of(dep=spec_changed)


def build_mlmodel_with_replicas(replicas: int) -> dict:
    changed = copy.deepcopy(MODEL)
    changed["spec"]["replicas"] = replicas
    return changed


def test_a_child_conflict_is_degraded_and_not_ready_even_when_the_pods_are():
    conflict = ("ChildConflict", "Service ns/m is controlled by another owner")
    found = conditions(compute_status(
        MODEL, deployment(), servicemonitor_supported=True, now=T0, conflict=conflict
    ))
    assert found["Ready"] == ("False", "ChildConflict")
    assert found["Degraded"] == ("True", "ChildConflict")
