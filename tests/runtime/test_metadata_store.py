"""A real `mlmodel serve` process writing its metadata: registered on load with the digest it
loaded, heartbeating, sampling predictions, marked stopped on SIGTERM; PostgreSQL going away while
it serves costs no request, and what was queued arrives once the database is back. Same on SQLite."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx
from mlmodel_store import queries
from mlmodel_store.database import Database
from support.ports import wait_until
from support.runtime import Models, write_mlmodel

FAST_STORE = {
    "MLMODEL_METADATA_HEARTBEAT_SECONDS": "0.2",
    "MLMODEL_SHUTDOWN_DRAIN_SECONDS": "0",
    "MLMODEL_POD_NAME": "reviews-7d9f-abc",
    "MLMODEL_NAMESPACE": "ml-team",
}
TEXT_REQUEST = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["great"]}]}


def instances(url: str) -> list[queries.RuntimeInstance]:
    database = Database(url)
    try:
        with database.session(write=False, create=False) as session:
            return queries.list_instances(session, "ml-team", "reviews")
    except Exception:  # noqa: BLE001 - not created yet / server down: poll again
        return []
    finally:
        database.close()


def prediction_count(url: str) -> int:
    database = Database(url)
    try:
        with database.session(write=False, create=False) as session:
            return queries.count_rows(session, "predictions")
    finally:
        database.close()


def check_registration(url: str, models: Models) -> queries.RuntimeInstance:
    [instance] = wait_until(lambda: instances(url), what="the instance row")
    assert instance.pod_name == "reviews-7d9f-abc"
    assert instance.model_digest == models.text.sha256  # what was loaded, not just configured
    assert instance.model_version == "2.0.0"
    assert instance.load_duration_seconds is not None and 0 < instance.load_duration_seconds < 60
    assert instance.stopped_at is None
    # Heartbeats move last_seen_at on.
    wait_until(
        lambda: [i for i in instances(url) if i.last_seen_at > instance.last_seen_at],
        what="a heartbeat",
    )
    return instance


def stop_and_check(server: Any, url: str) -> None:
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0, server.logs()
    [instance] = instances(url)
    assert instance.stopped_at is not None and instance.stopped_at >= instance.started_at


def test_registers_heartbeats_survives_a_postgres_outage_and_stops(
    models: Models, tmp_path: Path, start_server, postgres_server
) -> None:
    postgres_server.start()
    url = postgres_server.create_database()
    manifest = write_mlmodel(tmp_path / "model", "reviews", models.text)
    server = start_server(
        [str(manifest)],
        env={
            **FAST_STORE,
            "MLMODEL_DATABASE_URL": url,
            "MLMODEL_PREDICTION_LOG_SAMPLE_RATE": "1.0",
        },
    )
    server.wait_ready()
    check_registration(url, models)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/v2/models/reviews").json()["versions"] == ["2.0.0"]
        for _ in range(5):
            assert client.post("/v2/models/reviews/infer", json=TEXT_REQUEST).status_code == 200
        wait_until(lambda: prediction_count(url) == 5, what="the first 5 sampled predictions")

        during_outage = 30
        slowest = 0.0
        with postgres_server.stopped():
            for index in range(during_outage):
                started = time.perf_counter()
                response = client.post(
                    "/v1/models/reviews:predict", json={"instances": [f"review {index}"]}
                )
                slowest = max(slowest, time.perf_counter() - started)
                assert response.status_code == 200, response.text
                time.sleep(0.02)
            assert (
                client.get("/v2/health/ready").status_code == 200
            )  # the store is not a dependency
            metrics = client.get("/metrics").text
            assert 'mlmodel_metadata_writes_total{component="runtime",result="retried"}' in metrics
        assert slowest < 1.0, f"a request took {slowest:.2f}s while the database was down"
        # Back up: everything queued during the outage arrives, nothing dropped.
        wait_until(
            lambda: prediction_count(url) == 5 + during_outage,
            what="the predictions queued during the outage",
        )
        metrics = client.get("/metrics").text
    assert 'mlmodel_metadata_writes_dropped_total{component="runtime"} 0.0' in metrics
    assert "_created" not in metrics  # disable_created_metrics() took effect
    assert "metadata store unavailable; writes queued" in server.logs()
    assert postgres_server.password not in server.logs()
    stop_and_check(server, url)


def test_without_a_database_url_it_records_in_sqlite_in_the_cache_dir(
    models: Models, tmp_path: Path, start_server
) -> None:
    manifest = write_mlmodel(tmp_path / "model", "reviews", models.text)
    server = start_server([str(manifest)], env=FAST_STORE)
    server.wait_ready()
    url = f"sqlite:///{tmp_path / 'cache' / 'metadata.sqlite3'}"  # start_server's cache dir
    check_registration(url, models)
    response = httpx.post(f"{server.url}/v2/models/reviews/infer", json=TEXT_REQUEST, timeout=10)
    assert response.status_code == 200
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'mlmodel_metadata_writes_total{component="runtime",result="ok"}' in metrics
    assert prediction_count(url) == 0  # prediction logging is off by default
    stop_and_check(server, url)
