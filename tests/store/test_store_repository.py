"""Repository round trips on both backends: deployments, rollouts, instances, predictions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from mlmodel_store import queries
from mlmodel_store.database import Database
from mlmodel_store.events import (
    DeploymentDeleted,
    DeploymentObserved,
    DeploymentStatusChanged,
    InstanceHeartbeat,
    InstanceRegistered,
    InstanceStopped,
    ModelSpec,
    PredictionLogged,
    RolloutFailed,
    RolloutReady,
    RolloutStarted,
)

T0 = datetime(2025, 3, 1, 14, 0, 0, 123456, tzinfo=UTC)
DIGEST_A = "a" * 64
DIGEST_B = "b" * 64
SPEC_A = ModelSpec("s3://models/sentiment/1.joblib", DIGEST_A, "sklearn", "runtime:0.1.0", 2)
SPEC_B = ModelSpec("s3://models/sentiment/2.joblib", DIGEST_B, "sklearn", "runtime:0.1.0", 3)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_deployment_round_trip_and_health_updates(database: Database) -> None:
    database.write(
        [
            DeploymentObserved("ml", "sentiment", "uid-1", 1, SPEC_A, created_at=at(-5), at=at(0)),
            RolloutStarted("ml", "sentiment", "uid-1", 1, SPEC_A, at=at(0)),
            RolloutReady("ml", "sentiment", "uid-1", 1, at=at(3)),
        ]
    )
    with database.session(write=False) as session:
        [deployment] = queries.get_deployments(session, "ml", "sentiment")
    assert deployment == queries.Deployment(
        namespace="ml",
        name="sentiment",
        uid="uid-1",
        generation=1,
        model_uri=SPEC_A.model_uri,
        sha256=DIGEST_A,
        format="sklearn",
        runtime_image="runtime:0.1.0",
        desired_replicas=2,
        phase="Ready",
        ready=True,
        created_at=at(-5),
        updated_at=at(3),
        deleted_at=None,
    )

    # Seeing the same generation again (operator restart) must not reset its health...
    database.write([DeploymentObserved("ml", "sentiment", "uid-1", 1, SPEC_A, at=at(10))])
    with database.session(write=False) as session:
        [deployment] = queries.get_deployments(session, "ml", "sentiment")
    assert (deployment.phase, deployment.ready, deployment.updated_at) == ("Ready", True, at(10))
    assert deployment.created_at == at(-5)

    # ...while a status change and a new generation do.
    database.write(
        [DeploymentStatusChanged("ml", "sentiment", "uid-1", "Degraded", False, at=at(20))]
    )
    with database.session(write=False) as session:
        [deployment] = queries.get_deployments(session, "ml", "sentiment")
    assert (deployment.phase, deployment.ready) == ("Degraded", False)
    database.write([DeploymentObserved("ml", "sentiment", "uid-1", 2, SPEC_B, at=at(30))])
    with database.session(write=False) as session:
        [deployment] = queries.get_deployments(session, "ml", "sentiment")
    assert (deployment.generation, deployment.sha256, deployment.phase) == (
        2,
        DIGEST_B,
        "Progressing",
    )

    database.write([DeploymentDeleted("ml", "sentiment", "uid-1", at=at(40))])
    database.write([DeploymentDeleted("ml", "sentiment", "uid-1", at=at(50))])  # repeat: no change
    with database.session(write=False) as session:
        [deployment] = queries.get_deployments(session, "ml", "sentiment")
    assert (deployment.phase, deployment.ready, deployment.deleted_at) == ("Deleted", False, at(40))


def test_rollout_history_records_what_changed(database: Database) -> None:
    spec_a_scaled = ModelSpec(SPEC_A.model_uri, DIGEST_A, "sklearn", "runtime:0.1.0", 5)
    database.write(
        [
            RolloutStarted("ml", "sentiment", "uid-1", 1, SPEC_A, changed_by="kubectl", at=at(0)),
            RolloutReady("ml", "sentiment", "uid-1", 1, at=at(2)),
            RolloutStarted("ml", "sentiment", "uid-1", 2, SPEC_B, changed_by="argocd", at=at(60)),
            RolloutFailed(
                "ml", "sentiment", "uid-1", 2, "ArtifactDigestMismatch", "sha256 differs", at=at(70)
            ),
            RolloutFailed(
                "ml", "sentiment", "uid-1", 2, "ArtifactUnreachable", "timeout", at=at(80)
            ),
            RolloutStarted("ml", "sentiment", "uid-1", 3, spec_a_scaled, at=at(120)),
            # Retried by the operator: the first observation wins.
            RolloutStarted("ml", "sentiment", "uid-1", 3, SPEC_B, at=at(130)),
            RolloutReady("ml", "sentiment", "uid-1", 3, at=at(125)),
            RolloutReady("ml", "sentiment", "uid-1", 3, at=at(140)),
            # Another model in the same namespace stays out of this history.
            RolloutStarted("ml", "house-prices", "uid-9", 1, SPEC_A, at=at(65)),
        ]
    )
    with database.session(write=False) as session:
        history = queries.rollout_history(session, "ml", "sentiment")
        newest_two = queries.rollout_history(session, "ml", "sentiment", limit=2)
    assert [rollout.generation for rollout in history] == [3, 2, 1]
    assert [rollout.generation for rollout in newest_two] == [3, 2]
    third, second, first = history
    assert first.changes == {"created": True}
    assert first.changed_by == "kubectl"
    assert (first.started_at, first.ready_at, first.failed_at) == (at(0), at(2), None)
    assert second.changes == {
        "uri": {"from": SPEC_A.model_uri, "to": SPEC_B.model_uri},
        "digest": {"from": DIGEST_A, "to": DIGEST_B},
        "replicas": {"from": 2, "to": 3},
    }
    assert (second.failed_at, second.reason, second.message) == (
        at(70),
        "ArtifactUnreachable",
        "timeout",
    )
    assert second.ready_at is None
    # Generation 3 is compared with generation 2 (the one before it), not with the first.
    assert third.changes == {
        "uri": {"from": SPEC_B.model_uri, "to": SPEC_A.model_uri},
        "digest": {"from": DIGEST_B, "to": DIGEST_A},
        "replicas": {"from": 3, "to": 5},
    }
    assert (third.sha256, third.started_at, third.ready_at) == (DIGEST_A, at(120), at(125))


def test_recreated_model_is_compared_with_its_previous_incarnation(database: Database) -> None:
    database.write(
        [
            RolloutStarted("ml", "sentiment", "uid-1", 1, SPEC_A, at=at(0)),
            RolloutStarted("ml", "sentiment", "uid-2", 1, SPEC_B, at=at(100)),
        ]
    )
    with database.session(write=False) as session:
        newest, oldest = queries.rollout_history(session, "ml", "sentiment")
    assert (newest.uid, oldest.uid) == ("uid-2", "uid-1")
    assert set(newest.changes) == {"uri", "digest", "replicas"}


def test_runtime_instances_register_heartbeat_and_stop(database: Database) -> None:
    database.write(
        [
            InstanceRegistered(
                "i-1", "ml", "sentiment", "sentiment-abc", DIGEST_A, "1.0", 0.42, at=at(0)
            ),
            InstanceRegistered(
                "i-2", "ml", "sentiment", "sentiment-def", DIGEST_B, "2.0", 0.40, at=at(100)
            ),
            InstanceHeartbeat("i-1", at=at(30)),
            InstanceHeartbeat("i-1", at=at(20)),  # late delivery never moves last-seen back
            InstanceStopped("i-1", at=at(110)),
            InstanceStopped("i-1", at=at(500)),  # stopping twice keeps the first time
        ]
    )
    with database.session(write=False) as session:
        instances = queries.list_instances(session, "ml", "sentiment")
        serving_early = queries.instances_serving_at(session, "ml", "sentiment", at(50))
        serving_overlap = queries.instances_serving_at(session, "ml", "sentiment", at(105))
        serving_late = queries.instances_serving_at(session, "ml", "sentiment", at(200))
    assert [instance.instance_id for instance in instances] == ["i-2", "i-1"]
    old = instances[1]
    assert (old.pod_name, old.model_digest, old.model_version) == ("sentiment-abc", DIGEST_A, "1.0")
    assert old.load_duration_seconds == pytest.approx(0.42)
    assert (old.started_at, old.last_seen_at, old.stopped_at) == (at(0), at(110), at(110))
    assert instances[0].stopped_at is None
    # "Which digest served traffic at 14:00:50?" -- and at the hand-over, both did.
    assert [instance.model_digest for instance in serving_early] == [DIGEST_A]
    assert [instance.model_digest for instance in serving_overlap] == [DIGEST_B, DIGEST_A]
    assert [instance.model_digest for instance in serving_late] == [DIGEST_B]


def test_predictions_are_stored_with_payloads_cut_at_the_cap(database: Database) -> None:
    small = PredictionLogged("ml", "sentiment", "req-1", 0.002, {"text": ["great"]}, [1], at=at(0))
    large = PredictionLogged(
        "ml", "sentiment", "req-2", 0.003, {"text": ["x" * 500]}, [0], payload_cap=100, at=at(1)
    )
    database.write(
        [small, large, InstanceHeartbeat("nobody", at=at(2)), small]
    )  # duplicate id ignored
    with database.session(write=False) as session:
        rows = session.fetch_all("SELECT * FROM predictions ORDER BY predicted_at")
        assert queries.count_rows(session, "predictions") == 2
    assert [row["request_id"] for row in rows] == ["req-1", "req-2"]
    assert json.loads(rows[0]["inputs"]) == {"text": ["great"]}
    assert json.loads(rows[0]["outputs"]) == [1]
    assert not bool(rows[0]["truncated"])
    assert len(rows[1]["inputs"]) == 100 and bool(rows[1]["truncated"])
    assert rows[0]["latency_seconds"] == pytest.approx(0.002)


def test_a_failed_batch_writes_nothing(database: Database) -> None:
    with pytest.raises(TypeError, match="not a metadata write event"):
        database.write([RolloutStarted("ml", "m", "u", 1, SPEC_A, at=at(0)), object()])
    with database.session(write=False) as session:
        assert queries.count_rows(session, "rollouts") == 0
    # The connection is still usable afterwards.
    database.write([RolloutStarted("ml", "m", "u", 1, SPEC_A, at=at(0))])
    with database.session(write=False) as session:
        assert queries.count_rows(session, "rollouts") == 1


def test_naive_timestamps_are_refused(database: Database) -> None:
    naive = datetime(2025, 3, 1, 14, 0, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        database.write([InstanceRegistered("i-1", "ml", "m", "pod", None, at=naive)])
    with database.session(write=False) as session:
        assert queries.count_rows(session, "runtime_instances") == 0
