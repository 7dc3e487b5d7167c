"""s3:// artifacts from a real S3-compatible server (moto in server mode on 127.0.0.1), reached
through settings.s3_endpoint_url with credentials from the AWS_* environment variables."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from mlmodel_runtime.artifacts import ArtifactError, fetch_artifact, fetch_artifact_with_retry
from moto.server import ThreadedMotoServer
from support.artifacts import (
    ARTIFACT,
    ARTIFACT_SHA256,
    OTHER_ARTIFACT,
    cache_listing,
    make_settings,
)
from support.ports import free_port

_bucket_numbers = itertools.count()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Only the environment may supply credentials: no shared files, no instance metadata lookups.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def bucket(s3_endpoint: str, aws_env: None) -> Any:
    name = f"models-{next(_bucket_numbers)}"
    s3 = boto3.resource("s3", endpoint_url=s3_endpoint)
    created = s3.create_bucket(Bucket=name)
    created.put_object(Key="sentiment/v1/model.joblib", Body=ARTIFACT)
    return created


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def s3_settings(cache_dir: Path, uri: str, endpoint: str, **overrides: Any):
    return make_settings(cache_dir, uri, s3_endpoint_url=endpoint, **overrides)


async def test_object_is_fetched_and_verified(
    bucket: Any, s3_endpoint: str, cache_dir: Path
) -> None:
    uri = f"s3://{bucket.name}/sentiment/v1/model.joblib"

    path = await fetch_artifact(s3_settings(cache_dir, uri, s3_endpoint))

    assert path == cache_dir / f"sha256-{ARTIFACT_SHA256}"
    assert path.read_bytes() == ARTIFACT
    assert cache_listing(cache_dir) == [path.name]


async def test_cached_copy_is_reused_even_once_the_object_is_gone(
    bucket: Any, s3_endpoint: str, cache_dir: Path
) -> None:
    settings = s3_settings(cache_dir, f"s3://{bucket.name}/sentiment/v1/model.joblib", s3_endpoint)
    first = await fetch_artifact(settings)
    bucket.Object("sentiment/v1/model.joblib").delete()

    second = await fetch_artifact(settings)

    assert second == first
    assert second.read_bytes() == ARTIFACT


async def test_keys_with_special_characters(bucket: Any, s3_endpoint: str, cache_dir: Path) -> None:
    bucket.put_object(Key="odd names/model v2+final.joblib", Body=ARTIFACT)

    path = await fetch_artifact(
        s3_settings(cache_dir, f"s3://{bucket.name}/odd names/model v2+final.joblib", s3_endpoint)
    )

    assert path.read_bytes() == ARTIFACT


async def test_different_object_fails_the_checksum(
    bucket: Any, s3_endpoint: str, cache_dir: Path
) -> None:
    bucket.put_object(Key="sentiment/v1/model.joblib", Body=OTHER_ARTIFACT)

    with pytest.raises(ArtifactError) as caught:
        await fetch_artifact(
            s3_settings(cache_dir, f"s3://{bucket.name}/sentiment/v1/model.joblib", s3_endpoint)
        )

    assert caught.value.reason == "ChecksumMismatch"
    assert caught.value.retryable is True
    assert hashlib.sha256(OTHER_ARTIFACT).hexdigest() in caught.value.message
    assert cache_listing(cache_dir) == []


@pytest.mark.parametrize(
    ("uri_template", "code"),
    [
        ("s3://{bucket}/sentiment/v9/model.joblib", "NoSuchKey"),
        ("s3://no-such-bucket-{bucket}/model.joblib", "NoSuchBucket"),
    ],
)
async def test_missing_object_or_bucket_is_not_found(
    bucket: Any, s3_endpoint: str, cache_dir: Path, uri_template: str, code: str
) -> None:
    uri = uri_template.format(bucket=bucket.name)

    with pytest.raises(ArtifactError) as caught:
        await fetch_artifact(s3_settings(cache_dir, uri, s3_endpoint))

    assert caught.value.reason == "ArtifactNotFound"
    assert caught.value.retryable is True
    assert code in caught.value.message
    assert "spec.model.uri" in caught.value.message


async def test_object_over_the_size_cap_is_refused(
    bucket: Any, s3_endpoint: str, cache_dir: Path
) -> None:
    settings = s3_settings(
        cache_dir,
        f"s3://{bucket.name}/sentiment/v1/model.joblib",
        s3_endpoint,
        artifact_max_bytes=4096,
    )

    with pytest.raises(ArtifactError) as caught:
        await fetch_artifact(settings)

    assert caught.value.reason == "ArtifactTooLarge"
    assert f"is {len(ARTIFACT)} bytes" in caught.value.message
    assert cache_listing(cache_dir) == []


async def test_unreachable_endpoint(aws_env: None, cache_dir: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(ArtifactError) as caught:
        await fetch_artifact(s3_settings(cache_dir, "s3://models/model.joblib", endpoint))

    assert caught.value.reason == "ArtifactUnreachable"
    assert caught.value.retryable is True
    assert "s3EndpointUrl" in caught.value.message


async def test_missing_credentials_are_reported_and_not_retried(
    bucket: Any, s3_endpoint: str, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    with pytest.raises(ArtifactError) as caught:
        await fetch_artifact(
            s3_settings(cache_dir, f"s3://{bucket.name}/sentiment/v1/model.joblib", s3_endpoint)
        )

    assert caught.value.reason == "ArtifactUnreachable"
    assert caught.value.retryable is False
    assert "AWS_ACCESS_KEY_ID" in caught.value.message
    assert "testing-secret-key" not in caught.value.message


async def test_retry_converges_once_the_object_is_uploaded(
    bucket: Any, s3_endpoint: str, cache_dir: Path
) -> None:
    failures: list[ArtifactError] = []

    def upload_after_first_failure(error: ArtifactError) -> None:
        failures.append(error)
        bucket.put_object(Key="late/model.joblib", Body=ARTIFACT)

    path = await fetch_artifact_with_retry(
        s3_settings(cache_dir, f"s3://{bucket.name}/late/model.joblib", s3_endpoint),
        upload_after_first_failure,
    )

    assert [error.reason for error in failures] == ["ArtifactNotFound"]
    assert path.read_bytes() == ARTIFACT
