"""Local artifacts (plain absolute paths and file://), the verification policy and URI checks."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from mlmodel_runtime.artifacts import ArtifactError, fetch_artifact
from support.artifacts import (
    ARTIFACT,
    ARTIFACT_SHA256,
    OTHER_ARTIFACT,
    cache_listing,
    make_settings,
)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def artifact_file(tmp_path: Path) -> Path:
    path = tmp_path / "models dir" / "model.joblib"
    path.parent.mkdir()
    path.write_bytes(ARTIFACT)
    return path


async def test_plain_path_is_copied_into_the_cache_under_its_digest(
    artifact_file: Path, cache_dir: Path
) -> None:
    path = await fetch_artifact(make_settings(cache_dir, str(artifact_file)))

    assert path == cache_dir / f"sha256-{ARTIFACT_SHA256}"
    assert path.read_bytes() == ARTIFACT
    assert cache_listing(cache_dir) == [path.name]


async def test_file_uri_with_percent_encoding_is_read(artifact_file: Path, cache_dir: Path) -> None:
    uri = artifact_file.as_uri()
    assert "%20" in uri

    path = await fetch_artifact(make_settings(cache_dir, uri))

    assert path.read_bytes() == ARTIFACT


async def test_local_checksum_mismatch_is_permanent_and_leaves_nothing(
    artifact_file: Path, cache_dir: Path
) -> None:
    artifact_file.write_bytes(OTHER_ARTIFACT)

    with pytest.raises(ArtifactError) as caught:
        await fetch_artifact(make_settings(cache_dir, str(artifact_file)))

    error = caught.value
    assert error.reason == "ChecksumMismatch"
    assert error.retryable is False
    assert hashlib.sha256(OTHER_ARTIFACT).hexdigest() in error.message
    assert ARTIFACT_SHA256 in error.message
    assert "spec.model.sha256" in error.message
    assert cache_listing(cache_dir) == []


async def test_missing_local_file_is_not_found(tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(ArtifactError) as caught:
        await fetch_artifact(make_settings(cache_dir, str(tmp_path / "absent.joblib")))

    assert caught.value.reason == "ArtifactNotFound"
    assert caught.value.retryable is True
    assert "absent.joblib" in caught.value.message
    assert cache_listing(cache_dir) == []


async def test_local_file_over_the_size_cap_is_refused(
    artifact_file: Path, cache_dir: Path
) -> None:
    settings = make_settings(cache_dir, str(artifact_file), artifact_max_bytes=len(ARTIFACT) - 1)

    with pytest.raises(ArtifactError) as caught:
        await fetch_artifact(settings)

    assert caught.value.reason == "ArtifactTooLarge"
    assert caught.value.retryable is False
    assert str(len(ARTIFACT) - 1) in caught.value.message
    assert "MLMODEL_ARTIFACT_MAX_BYTES" in caught.value.message
    assert cache_listing(cache_dir) == []


async def test_a_file_exactly_at_the_cap_is_accepted(artifact_file: Path, cache_dir: Path) -> None:
    path = await fetch_artifact(
        make_settings(cache_dir, str(artifact_file), artifact_max_bytes=len(ARTIFACT))
    )

    assert path.read_bytes() == ARTIFACT


async def test_cached_copy_is_reused_without_reading_the_source(
    artifact_file: Path, cache_dir: Path
) -> None:
    settings = make_settings(cache_dir, str(artifact_file))
    first = await fetch_artifact(settings)
    artifact_file.unlink()

    second = await fetch_artifact(settings)

    assert second == first
    assert second.read_bytes() == ARTIFACT


async def test_a_corrupted_cached_copy_is_replaced(artifact_file: Path, cache_dir: Path) -> None:
    settings = make_settings(cache_dir, str(artifact_file))
    cached = await fetch_artifact(settings)
    os.chmod(cached, 0o644)
    cached.write_bytes(b"tampered")

    again = await fetch_artifact(settings)

    assert again == cached
    assert again.read_bytes() == ARTIFACT


@pytest.mark.parametrize(
    ("uri", "detail"),
    [
        ("ftp://example.com/model.joblib", "scheme 'ftp' is not supported"),
        ("models/model.joblib", "relative path"),
        ("", "empty"),
        ("s3://bucket-only", "bucket and a key"),
        ("file://otherhost/model.joblib", "local file"),
        ("http:///model.joblib", "no host"),
    ],
)
async def test_unusable_uri_is_refused_permanently(uri: str, detail: str, cache_dir: Path) -> None:
    with pytest.raises(ArtifactError) as caught:
        await fetch_artifact(make_settings(cache_dir, uri))

    assert caught.value.reason == "UnsupportedScheme"
    assert caught.value.retryable is False
    assert detail in caught.value.message
    assert "s3://bucket/key" in caught.value.message


async def test_pickle_artifact_without_sha256_is_refused(
    artifact_file: Path, cache_dir: Path
) -> None:
    settings = make_settings(cache_dir, str(artifact_file), model_sha256=None)

    with pytest.raises(ArtifactError) as caught:
        await fetch_artifact(settings)

    assert caught.value.reason == "UnverifiedArtifact"
    assert caught.value.retryable is False
    assert "spec.model.sha256" in caught.value.message
    assert "allowUnverified" in caught.value.message
    assert cache_listing(cache_dir) == []


async def test_allow_unverified_fetches_a_pickle_without_sha256(
    artifact_file: Path, cache_dir: Path
) -> None:
    settings = make_settings(
        cache_dir, str(artifact_file), model_sha256=None, allow_unverified_artifact=True
    )

    path = await fetch_artifact(settings)

    assert path.read_bytes() == ARTIFACT


async def test_onnx_without_sha256_is_fetched_again_each_time(
    artifact_file: Path, cache_dir: Path
) -> None:
    settings = make_settings(cache_dir, str(artifact_file), model_sha256=None, model_format="onnx")
    first = await fetch_artifact(settings)
    artifact_file.write_bytes(OTHER_ARTIFACT)

    second = await fetch_artifact(settings)

    assert first.read_bytes() == ARTIFACT
    assert second.read_bytes() == OTHER_ARTIFACT


async def test_unwritable_cache_is_reported(artifact_file: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache dir should be")

    with pytest.raises(ArtifactError) as caught:
        await fetch_artifact(make_settings(blocker / "cache", str(artifact_file)))

    assert caught.value.reason == "CacheUnwritable"
    assert "MLMODEL_CACHE_DIR" in caught.value.message


async def test_partial_files_left_by_a_dead_process_are_swept(
    artifact_file: Path, cache_dir: Path
) -> None:
    cache_dir.mkdir()
    stale = cache_dir / ".partial-dead-process"
    stale.write_bytes(b"half a model")
    os.utime(stale, (1_000_000, 1_000_000))
    fresh = cache_dir / ".partial-another-worker-downloading"
    fresh.write_bytes(b"in progress")

    path = await fetch_artifact(make_settings(cache_dir, str(artifact_file)))

    assert cache_listing(cache_dir) == sorted([fresh.name, path.name])
