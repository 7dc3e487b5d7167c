"""The runtime's and the operator's recorders, writing through the queue to a real database."""

from __future__ import annotations

import asyncio
import json

from mlmodel_operator.rollouts import RolloutEvents, changed_by, model_spec
from mlmodel_runtime.recorder import RuntimeRecorder
from mlmodel_runtime.settings import RuntimeSettings
from mlmodel_store import queries
from mlmodel_store.database import Database
from prometheus_client import CollectorRegistry

DIGEST_A = "A" * 64
DIGEST_B = "b" * 64


def mlmodel(
    generation: int, sha256: str, *, replicas: int = 2, manager: str = "kubectl-client-side-apply"
) -> dict:
    return {
        "apiVersion": "serving.mlmodel.io/v1alpha1",
        "kind": "MLModel",
        "metadata": {
            "name": "sentiment",
            "namespace": "ml",
            "uid": "0b9c6a8e-uid",
            "generation": generation,
            "creationTimestamp": "2025-03-01T14:00:00Z",
            "managedFields": [
                {
                    "manager": "mlmodel-operator",
                    "operation": "Update",
                    "subresource": "status",
                    "time": "2025-03-01T15:00:00Z",
                    "fieldsV1": {"f:status": {}},
                },
                {
                    "manager": "argocd-controller",
                    "operation": "Apply",
                    "time": "2025-03-01T13:00:00Z",
                    "fieldsV1": {"f:spec": {}},
                },
                {
                    "manager": manager,
                    "operation": "Update",
                    "time": "2025-03-01T14:30:00Z",
                    "fieldsV1": {"f:metadata": {}, "f:spec": {"f:model": {}}},
                },
            ],
        },
        "spec": {"model": {"uri": "model.joblib", "sha256": sha256}, "replicas": replicas},
    }


def test_model_spec_and_changed_by_read_the_body() -> None:
    body = mlmodel(1, DIGEST_A)
    spec = model_spec(body, default_image="runtime:default")
    assert (
        spec.model_uri,
        spec.sha256,
        spec.format,
        spec.runtime_image,
        spec.desired_replicas,
    ) == (
        "model.joblib",
        "a" * 64,
        "sklearn",
        "runtime:default",
        2,
    )
    body["spec"]["runtime"] = {"image": "runtime:custom"}
    body["spec"]["autoscaling"] = {"minReplicas": 3, "maxReplicas": 9}
    spec = model_spec(body, default_image="runtime:default")
    assert (spec.runtime_image, spec.desired_replicas) == ("runtime:custom", 3)
    # The status writer is not who changed the model; the latest spec writer is.
    assert changed_by(body) == "kubectl-client-side-apply"
    assert changed_by({"metadata": {}}) is None


async def test_operator_create_update_delete_produce_rows(database_url: str) -> None:
    recorder = RolloutEvents.create(
        database_url,
        cache_dir="/nonexistent",
        default_image="runtime:0.1.0",
        registry=CollectorRegistry(),
        linger_seconds=0,
    )
    recorder.start()
    first = mlmodel(1, DIGEST_A)
    recorder.observed(first)
    recorder.observed(first)  # a timer's repeat is not even queued
    assert recorder.writer.pending == 2
    recorder.ready(first)
    recorder.ready(first)
    second = mlmodel(2, DIGEST_B, replicas=4, manager="argocd-controller")
    recorder.observed(second)
    recorder.failed(
        second, reason="ArtifactDigestMismatch", message="sha256 of the artifact differs"
    )
    recorder.status(second, phase="Degraded", ready=False)
    assert await recorder.writer.flush(timeout=30)
    database = Database(database_url)
    try:
        with database.session(write=False) as session:
            [deployment] = queries.get_deployments(session, "ml", "sentiment")
            history = queries.rollout_history(session, "ml", "sentiment")
        assert (deployment.generation, deployment.sha256, deployment.phase, deployment.ready) == (
            2,
            DIGEST_B,
            "Degraded",
            False,
        )
        assert [rollout.generation for rollout in history] == [2, 1]
        assert history[0].changes == {
            "digest": {"from": "a" * 64, "to": DIGEST_B},
            "replicas": {"from": 2, "to": 4},
        }
        assert (history[0].changed_by, history[0].reason) == (
            "argocd-controller",
            "ArtifactDigestMismatch",
        )
        assert history[1].ready_at is not None and history[1].changes == {"created": True}

        recorder.deleted(second)
        assert await recorder.close(timeout=30) == 0
        with database.session(write=False) as session:
            [deployment] = queries.get_deployments(session, "ml", "sentiment")
        assert deployment.phase == "Deleted" and deployment.deleted_at is not None
    finally:
        database.close()


async def test_runtime_registers_heartbeats_samples_and_stops(
    database_url: str, monkeypatch
) -> None:
    monkeypatch.setenv("MLMODEL_DATABASE_URL", database_url)
    settings = RuntimeSettings(
        model_name="sentiment",
        namespace="ml",
        pod_name="sentiment-7d9f",
        prediction_log_sample_rate=0.5,
    )
    draws = iter([0.1, 0.9, 0.4, 0.7])
    recorder = RuntimeRecorder.from_settings(
        settings, registry=CollectorRegistry(), linger_seconds=0
    )
    recorder.heartbeat_seconds = 0.05
    recorder._sample = lambda: next(draws)
    recorder.start()
    recorder.model_loaded(digest=DIGEST_B, version="1.0.0", load_duration_seconds=0.31)
    logged = [
        recorder.log_prediction(
            request_id=f"r{n}", latency_seconds=0.001, inputs={"text": [f"t{n}"]}, outputs=[n]
        )
        for n in range(4)
    ]
    assert logged == [True, False, True, False]
    assert await recorder.writer.flush(timeout=30)
    database = Database(database_url)
    try:
        with database.session(write=False) as session:
            [registered] = queries.list_instances(session, "ml", "sentiment")
        assert (registered.pod_name, registered.model_digest, registered.stopped_at) == (
            "sentiment-7d9f",
            DIGEST_B,
            None,
        )
        await asyncio.sleep(0.3)  # a few heartbeats
        await recorder.writer.flush(timeout=30)
        with database.session(write=False) as session:
            [beating] = queries.list_instances(session, "ml", "sentiment")
        assert beating.last_seen_at > registered.last_seen_at

        assert await recorder.close(timeout=30) == 0
        with database.session(write=False) as session:
            [stopped] = queries.list_instances(session, "ml", "sentiment")
            predictions = session.fetch_all(
                "SELECT request_id, inputs, model_digest FROM predictions ORDER BY request_id"
            )
        assert stopped.stopped_at is not None and stopped.stopped_at >= beating.last_seen_at
        assert [
            (row["request_id"], json.loads(row["inputs"]), row["model_digest"])
            for row in predictions
        ] == [
            ("r0", {"text": ["t0"]}, DIGEST_B),
            ("r2", {"text": ["t2"]}, DIGEST_B),
        ]
    finally:
        database.close()


async def test_without_a_url_the_runtime_writes_sqlite_in_the_cache_dir(tmp_path) -> None:
    settings = RuntimeSettings(cache_dir=tmp_path, model_name="sentiment")
    recorder = RuntimeRecorder.from_settings(settings, registry=CollectorRegistry())
    recorder.start()
    # Prediction logging is off by default: nothing is even queued.
    assert not recorder.log_prediction(request_id="r", latency_seconds=0.1, inputs=[1], outputs=[2])
    recorder.model_loaded(digest=DIGEST_B)
    assert recorder.writer.pending == 1
    assert await recorder.close() == 0
    assert recorder.writer.database.backend == "sqlite"
    database = Database(f"sqlite:///{tmp_path / 'metadata.sqlite3'}")
    try:
        with database.session(write=False, create=False) as session:
            [instance] = queries.list_instances(session, "default", "sentiment")
            assert queries.count_rows(session, "predictions") == 0
        assert instance.stopped_at is not None
    finally:
        database.close()
