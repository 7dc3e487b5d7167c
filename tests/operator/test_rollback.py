"""Automatic rollback as a pure function of the MLModel, its stored status and its Deployment:
which spec is served, and what the status says at each step (docs/rollouts.md)."""

from __future__ import annotations

import copy

import pytest
from mlmodel_operator.builders import build_children
from mlmodel_operator.builders.common import ROLLOUT_HASH_ANNOTATION
from mlmodel_operator.conditions import get_condition
from mlmodel_operator.metadata import health_of
from mlmodel_operator.rollback import ROLLBACK_REASONS, ROLLED_BACK, served, settle
from mlmodel_operator.settings import OperatorSettings
from mlmodel_operator.status import compute_status
from support.crd import SAMPLES, root_schema, schema_errors, with_changes
from support.deployments import reported_deployment as deployment

SETTINGS = OperatorSettings()
GOOD = with_changes(SAMPLES["fixed-replicas"], {"metadata.generation": 4})
NEW_DIGEST = "ab" * 32
# Generation 5: a new artifact, whose pods then fail.
NEW = with_changes(GOOD, {"metadata.generation": 5, "spec.model.sha256": NEW_DIGEST})
CRASHING = ("CrashLoopBackOff", "container runtime of pod x: back-off 5m0s restarting")
T0, T1, T2 = "2025-01-01T00:00:00Z", "2025-01-01T00:05:00Z", "2025-01-01T00:10:00Z"


def conditions(status: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def step(mlmodel: dict, dep: dict | None, *, now: str, problem=None) -> tuple[dict, dict, object]:
    """What sync_status does: compute for the served spec, settle, store."""
    computed = compute_status(
        served(mlmodel), dep, servicemonitor_supported=True, now=now, artifact_problem=problem
    )
    status, starting = settle(mlmodel, computed, now=now)
    stored = {**copy.deepcopy(mlmodel), "status": status}
    return stored, status, starting


def ready_then_failing() -> tuple[dict, dict, object]:
    """Generation 4 Ready, then generation 5 applied and its pods crash-looping."""
    stored, _, _ = step(GOOD, deployment(GOOD), now=T0)
    failing = {**copy.deepcopy(NEW), "status": stored["status"]}
    rolling = deployment(NEW, updated=1, ready=3, available=3, replicas=4)
    return step(failing, rolling, now=T1, problem=CRASHING)


def test_a_ready_generation_becomes_the_stable_revision():
    stored, status, starting = step(GOOD, deployment(GOOD), now=T0)
    assert starting is None
    assert status["rollout"] == {"stable": {"generation": 4, "spec": GOOD["spec"]}}
    assert get_condition(status["conditions"], ROLLED_BACK) is None
    # Settled again, an unchanged world writes nothing.
    assert step(stored, deployment(GOOD), now=T1)[1] == status


def test_a_failing_new_generation_is_rolled_back_without_touching_the_spec():
    stored, status, starting = ready_then_failing()
    assert starting is not None
    assert (starting.generation, starting.to_generation, starting.reason) == (5, 4, "CrashLoopBackOff")
    assert status["rollout"]["rolledBack"] == {
        "generation": 5, "reason": "CrashLoopBackOff", "message": CRASHING[1], "time": T1,
    }
    assert stored["spec"] == NEW["spec"]
    assert conditions(status)["Ready"] == ("False", "RollingBack")
    assert conditions(status)["Degraded"] == ("True", ROLLED_BACK)
    assert conditions(status)[ROLLED_BACK] == ("True", "CrashLoopBackOff")
    rolled = get_condition(status["conditions"], ROLLED_BACK)
    assert "generation 5 failed (CrashLoopBackOff" in rolled["message"]
    assert "generation 4 serves until the spec changes" in rolled["message"]
    assert rolled["observedGeneration"] == 5

    # From now on the children are those of generation 4's spec, under the MLModel's name.
    assert served(stored)["spec"] == GOOD["spec"]
    assert served(stored)["metadata"] == stored["metadata"]
    rebuilt = build_children(served(stored), SETTINGS, servicemonitor_supported=True)
    assert rebuilt == build_children(
        {**GOOD, "metadata": stored["metadata"]}, SETTINGS, servicemonitor_supported=True
    )


def test_the_rolled_back_model_is_ready_with_reason_rolled_back_and_stays_so():
    stored, _, _ = ready_then_failing()
    # The Deployment is back on generation 4's pod template, all available.
    back = deployment({**GOOD, "metadata": stored["metadata"]})
    assert back["spec"]["template"]["metadata"]["annotations"][ROLLOUT_HASH_ANNOTATION] == (
        deployment(GOOD)["spec"]["template"]["metadata"]["annotations"][ROLLOUT_HASH_ANNOTATION]
    )
    stored, status, starting = step(stored, back, now=T2)
    assert starting is None
    assert conditions(status)["Ready"] == ("True", ROLLED_BACK)
    assert conditions(status)["Degraded"] == ("True", ROLLED_BACK)
    assert conditions(status)[ROLLED_BACK] == ("True", "CrashLoopBackOff")
    assert status["observedGeneration"] == 5
    # What serves is generation 4's artifact.
    assert status["modelDigest"] == f"sha256:{GOOD['spec']['model']['sha256']}"
    ready = get_condition(status["conditions"], "Ready")
    assert "rolled back: generation 4 serves until the spec changes" in ready["message"]
    # Generation 5 never becomes the stable revision, however long it stays rolled back.
    assert status["rollout"]["stable"]["generation"] == 4
    assert step(stored, back, now="2025-01-01T01:00:00Z")[1] == status


def test_a_new_spec_tries_again_and_a_ready_one_ends_the_rollback():
    stored, _, _ = ready_then_failing()
    stored, _, _ = step(stored, deployment({**GOOD, "metadata": stored["metadata"]}), now=T2)
    fixed = with_changes(NEW, {"metadata.generation": 6, "spec.model.sha256": "cd" * 32})
    fixed["status"] = stored["status"]
    assert served(fixed) is fixed  # generation 6 is tried as written
    rolling = deployment(fixed, updated=1, ready=3, available=3, replicas=4)
    _, status, starting = step(fixed, rolling, now=T2)
    assert starting is None
    assert "rolledBack" not in status["rollout"]
    assert conditions(status)[ROLLED_BACK] == ("False", "SpecServed")
    assert conditions(status)["Ready"][0] == "False"
    fixed["status"] = status
    _, status, _ = step(fixed, deployment(fixed), now=T2)
    assert conditions(status)["Ready"] == ("True", "Available")
    assert conditions(status)["Degraded"] == ("False", "AsExpected")
    assert status["rollout"] == {"stable": {"generation": 6, "spec": fixed["spec"]}}


def test_a_new_generation_that_fails_again_is_rolled_back_again():
    stored, _, _ = ready_then_failing()
    stored, _, _ = step(stored, deployment({**GOOD, "metadata": stored["metadata"]}), now=T2)
    again = with_changes(NEW, {"metadata.generation": 6, "spec.model.sha256": "cd" * 32})
    again["status"] = stored["status"]
    rolling = deployment(again, updated=1, ready=3, available=3, replicas=4)
    _, _, starting = step(again, rolling, now=T2, problem=("OOMKilled", "raise the limit"))
    assert (starting.generation, starting.to_generation, starting.reason) == (6, 4, "OOMKilled")


@pytest.mark.parametrize("reason", sorted(ROLLBACK_REASONS - {"ProgressDeadlineExceeded"}))
def test_each_pod_failure_reason_rolls_back(reason):
    stored, _, _ = step(GOOD, deployment(GOOD), now=T0)
    failing = {**copy.deepcopy(NEW), "status": stored["status"]}
    rolling = deployment(NEW, updated=1, ready=3, available=3, replicas=4)
    _, _, starting = step(failing, rolling, now=T1, problem=(reason, "why"))
    assert starting is not None and starting.reason == reason


def test_a_rollout_past_its_progress_deadline_rolls_back():
    stored, _, _ = step(GOOD, deployment(GOOD), now=T0)
    failing = {**copy.deepcopy(NEW), "status": stored["status"]}
    stuck = deployment(NEW, updated=1, ready=3, available=3, replicas=4, conditions=[
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "x" has timed out progressing.'},
    ])
    _, status, starting = step(failing, stuck, now=T1)
    assert starting is not None and starting.reason == "ProgressDeadlineExceeded"
    assert 'has timed out progressing' in status["rollout"]["rolledBack"]["message"]


@pytest.mark.parametrize(
    "problem",
    [("Unschedulable", "0/1 nodes are available"), ("ClaimNotFound", "claim models not found")],
)
def test_failures_that_waiting_may_cure_wait_for_the_progress_deadline(problem):
    stored, _, _ = step(GOOD, deployment(GOOD), now=T0)
    failing = {**copy.deepcopy(NEW), "status": stored["status"]}
    rolling = deployment(NEW, updated=1, ready=3, available=3, replicas=4)
    _, status, starting = step(failing, rolling, now=T1, problem=problem)
    assert starting is None
    assert conditions(status)["Degraded"] == ("True", problem[0])


def test_auto_rollback_false_leaves_the_failed_generation_failing():
    stored, _, _ = step(GOOD, deployment(GOOD), now=T0)
    failing = with_changes(NEW, {"spec.rollout": {"autoRollback": False}})
    failing["status"] = stored["status"]
    rolling = deployment(failing, updated=1, ready=3, available=3, replicas=4)
    _, status, starting = step(failing, rolling, now=T1, problem=CRASHING)
    assert starting is None
    assert "rolledBack" not in status["rollout"]
    assert conditions(status)["Degraded"] == ("True", "CrashLoopBackOff")


def test_nothing_to_roll_back_to_before_a_first_ready_generation():
    _, status, starting = step(NEW, deployment(NEW, ready=0, available=0), now=T0, problem=CRASHING)
    assert starting is None and "rollout" not in status
    assert conditions(status)["Degraded"] == ("True", "CrashLoopBackOff")


def test_a_ready_generation_that_breaks_later_is_not_rolled_back():
    stored, _, _ = step(GOOD, deployment(GOOD), now=T0)
    _, status, starting = step(stored, deployment(GOOD, ready=2, available=2), now=T1, problem=CRASHING)
    assert starting is None
    assert conditions(status)["Degraded"] == ("True", "CrashLoopBackOff")


def test_a_stable_spec_the_operator_no_longer_serves_is_not_used():
    stored = copy.deepcopy(ready_then_failing()[0])
    stored["status"]["rollout"]["stable"]["spec"]["model"]["uri"] = "relative/model.joblib"
    assert served(stored) is stored


def test_the_rollout_status_fits_the_crd_status_schema():
    stored, _, _ = ready_then_failing()
    stored, status, _ = step(stored, deployment({**GOOD, "metadata": stored["metadata"]}), now=T2)
    schema = root_schema()["properties"]["status"]
    assert schema_errors(schema, status) == []


def test_the_store_hears_a_rollback_with_the_generation_served_again():
    stored, _, _ = ready_then_failing()
    _, status, _ = step(stored, deployment({**GOOD, "metadata": stored["metadata"]}), now=T2)
    health = health_of(status, reached_ready=False)
    assert (health.kind, health.phase, health.ready) == ("rolled_back", ROLLED_BACK, True)
    assert (health.to_generation, health.reason) == (4, "CrashLoopBackOff")
