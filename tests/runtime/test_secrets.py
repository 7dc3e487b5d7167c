"""Secrets never leak: a real `mlmodel serve` with a database password, an S3 secret key (its artifact
really comes from an S3-compatible server) and bearer tokens, driven through auth failures and a
database outage; then its logs, /metrics, health and metadata bodies and every table of the store
are searched for the secret values."""

from __future__ import annotations

import logging
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import psycopg2
import pytest
from moto.server import ThreadedMotoServer
from support.ports import wait_until
from support.runtime import Models, running_app, settings_for

TEXT_REQUEST = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["great"]}]}
TABLES = ["deployments", "rollouts", "runtime_instances", "predictions", "schema_migrations"]


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def dump_tables(url: str) -> str:
    connection = psycopg2.connect(url, connect_timeout=10)
    try:
        with connection.cursor() as cursor:
            rows = []
            for table in TABLES:
                cursor.execute(f"SELECT * FROM {table}")
                rows += [repr(row) for row in cursor.fetchall()]
    finally:
        connection.close()
    assert rows, "the store should hold rows by now"
    return "\n".join(rows)


def count_predictions(url: str) -> int:
    connection = psycopg2.connect(url, connect_timeout=10)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM predictions")
            return int(cursor.fetchone()[0])
    except psycopg2.errors.UndefinedTable:
        return 0  # the runtime has not migrated the schema yet
    finally:
        connection.close()


def test_no_secret_reaches_logs_metrics_bodies_or_the_store(
    models: Models, tmp_path: Path, start_server, postgres_server, s3_endpoint: str
) -> None:
    aws_secret = "aws-secret-" + secrets.token_hex(16)
    token = "token-" + secrets.token_hex(16)
    postgres_server.start()
    database_url = postgres_server.create_database()
    database_password = postgres_server.password
    assert database_password in database_url

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="AKIDSECRETSTEST",
        aws_secret_access_key=aws_secret,
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="reviews/model.joblib", Body=models.text.path.read_bytes())
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# bearer tokens\n{token}\n")

    server = start_server(
        [],
        env={
            "MLMODEL_MODEL_NAME": "reviews",
            "MLMODEL_MODEL_URI": "s3://models/reviews/model.joblib",
            "MLMODEL_MODEL_SHA256": models.text.sha256,
            "MLMODEL_S3_ENDPOINT_URL": s3_endpoint,
            "MLMODEL_DATABASE_URL": database_url,
            "MLMODEL_AUTH_TOKEN_FILE": str(token_file),
            "MLMODEL_PREDICTION_LOG_SAMPLE_RATE": "1.0",
            "MLMODEL_METADATA_HEARTBEAT_SECONDS": "0.2",
            "MLMODEL_SHUTDOWN_DRAIN_SECONDS": "0",
            "MLMODEL_LOG_LEVEL": "debug",  # the most a log can say
            "AWS_ACCESS_KEY_ID": "AKIDSECRETSTEST",
            "AWS_SECRET_ACCESS_KEY": aws_secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
            "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
            "AWS_EC2_METADATA_DISABLED": "true",
        },
    )
    server.wait_ready()
    seen: list[str] = []
    authorized = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        refused = [
            client.post("/v2/models/reviews/infer", json=TEXT_REQUEST),
            client.post(
                "/v2/models/reviews/infer",
                json=TEXT_REQUEST,
                headers={"Authorization": f"Bearer {token}x"},
            ),
            client.post(
                "/v1/models/reviews:predict",
                json={"instances": ["a"]},
                headers={"Authorization": f"Basic {token}"},
            ),
        ]
        assert [response.status_code for response in refused] == [401, 401, 401]
        seen += [response.text + str(response.headers) for response in refused]
        ok = client.post("/v2/models/reviews/infer", json=TEXT_REQUEST, headers=authorized)
        assert ok.status_code == 200, ok.text
        with postgres_server.stopped():
            for _ in range(5):
                response = client.post(
                    "/v1/models/reviews:predict", json={"instances": ["dull"]}, headers=authorized
                )
                assert response.status_code == 200
            wait_until(
                lambda: "metadata store unavailable; writes queued" in server.logs(),
                what="a failed write and its log line",
            )
            seen.append(client.get("/v2/health/ready").text)
        for path in ("/metrics", "/v2/health/ready", "/v2/models/reviews", "/v2", "/openapi.json"):
            seen.append(client.get(path).text)
    # What was queued during the outage reaches the store, so the search below covers it too.
    wait_until(
        lambda: count_predictions(database_url) >= 6,
        what="the predictions queued during the outage",
    )
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
    store = dump_tables(database_url)
    logs = server.logs()
    assert "metadata store unavailable; writes queued" in logs  # the outage was seen and logged
    assert "AKIDSECRETSTEST" not in store
    for name, secret in (
        ("database password", database_password),
        ("S3 secret key", aws_secret),
        ("bearer token", token),
    ):
        for where, text in (
            ("logs", logs),
            ("HTTP bodies", "\n".join(seen)),
            ("metadata store", store),
        ):
            assert secret not in text, f"the {name} appears in the {where}"


async def test_an_unusable_database_url_disables_the_store_without_leaking_it(
    models: Models, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password = "pw-" + secrets.token_hex(12)
    # A libpq key=value DSN: not a URL this runtime takes, and the password sits in the middle.
    settings = settings_for(
        models.text, tmp_path, "reviews", database_url=f"host=db password={password} dbname=meta"
    )
    with caplog.at_level(logging.INFO):
        async with running_app(settings) as rt:
            assert rt.dataplane.recorder is None  # serving goes on without a store
            response = await rt.client.post(
                "/v1/models/reviews:predict", json={"instances": ["great"]}
            )
            assert response.json() == {"predictions": ["positive"]}
    [disabled] = [
        record for record in caplog.records if record.getMessage() == "metadata store disabled"
    ]
    assert "unsupported database URL scheme" in disabled.error
    everything = (
        caplog.text
        + "".join(repr(record.__dict__) for record in caplog.records)
        + rt.log.getvalue()
    )
    assert password not in everything
