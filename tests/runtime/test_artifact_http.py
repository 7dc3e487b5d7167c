"""http(s):// artifacts from a real server on 127.0.0.1 that is slow, drops connections, truncates
or swaps the file: no partial or unverified file is ever published."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlmodel_runtime.artifacts import ArtifactError, fetch_artifact
from support.artifacts import (
    ARTIFACT,
    ARTIFACT_SHA256,
    OTHER_ARTIFACT,
    ArtifactServer,
    Route,
    cache_listing,
    make_settings,
    partial_files,
    running_artifact_server,
)
from support.ports import free_port, wait_until_async


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    with running_artifact_server() as running:
        yield running


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


async def fetch_error(settings) -> ArtifactError:
    with pytest.raises(ArtifactError) as caught:
        await fetch_artifact(settings)
    return caught.value


async def test_verified_download_lands_in_the_cache(
    server: ArtifactServer, cache_dir: Path
) -> None:
    server.routes["/model.joblib"] = Route()

    path = await fetch_artifact(make_settings(cache_dir, server.url("/model.joblib")))

    assert path == cache_dir / f"sha256-{ARTIFACT_SHA256}"
    assert path.read_bytes() == ARTIFACT
    assert cache_listing(cache_dir) == [path.name]


async def test_second_fetch_with_sha256_does_not_hit_the_server(
    server: ArtifactServer, cache_dir: Path
) -> None:
    server.routes["/model.joblib"] = Route()
    settings = make_settings(cache_dir, server.url("/model.joblib"))

    first = await fetch_artifact(settings)
    second = await fetch_artifact(settings)

    assert second == first
    assert server.hits("/model.joblib") == 1


async def test_without_sha256_every_fetch_downloads_again(
    server: ArtifactServer, cache_dir: Path
) -> None:
    server.routes["/model.onnx"] = Route()
    settings = make_settings(
        cache_dir, server.url("/model.onnx"), model_sha256=None, model_format="onnx"
    )

    await fetch_artifact(settings)
    server.routes["/model.onnx"] = Route(body=OTHER_ARTIFACT)
    second = await fetch_artifact(settings)

    assert server.hits("/model.onnx") == 2
    assert second.read_bytes() == OTHER_ARTIFACT


async def test_redirects_are_followed(server: ArtifactServer, cache_dir: Path) -> None:
    server.routes["/stable/model.joblib"] = Route(
        mode="redirect", location=server.url("/blobs/abc")
    )
    server.routes["/blobs/abc"] = Route()

    path = await fetch_artifact(make_settings(cache_dir, server.url("/stable/model.joblib")))

    assert path.read_bytes() == ARTIFACT
    assert server.hits("/blobs/abc") == 1


async def test_slow_server_times_out_and_leaves_no_file(
    server: ArtifactServer, cache_dir: Path
) -> None:
    server.routes["/model.joblib"] = Route(mode="slow", pause_seconds=5)
    settings = make_settings(
        cache_dir, server.url("/model.joblib"), artifact_read_timeout_seconds=0.3
    )

    error = await fetch_error(settings)

    assert error.reason == "ArtifactTimeout"
    assert error.retryable is True
    assert "0.3s" in error.message
    assert "MLMODEL_ARTIFACT_READ_TIMEOUT_SECONDS" in error.message
    assert cache_listing(cache_dir) == []


async def test_total_download_deadline_stops_a_trickling_server(
    server: ArtifactServer, cache_dir: Path
) -> None:
    # Each pause is under the read timeout, so only the overall deadline can end this download.
    server.routes["/model.joblib"] = Route(mode="slow", pause_seconds=5)
    settings = make_settings(
        cache_dir,
        server.url("/model.joblib"),
        artifact_read_timeout_seconds=10,
        artifact_download_timeout_seconds=0.5,
    )

    error = await fetch_error(settings)

    assert error.reason == "ArtifactTimeout"
    assert "MLMODEL_ARTIFACT_DOWNLOAD_TIMEOUT_SECONDS" in error.message
    assert cache_listing(cache_dir) == []


async def test_connection_dropped_mid_body_is_retryable_and_leaves_no_file(
    server: ArtifactServer, cache_dir: Path
) -> None:
    server.routes["/model.joblib"] = Route(mode="drop")

    error = await fetch_error(make_settings(cache_dir, server.url("/model.joblib")))

    assert error.reason == "ArtifactUnreachable"
    assert error.retryable is True
    assert f"after {len(ARTIFACT) // 2} bytes" in error.message
    assert cache_listing(cache_dir) == []


async def test_dropped_connection_without_sha256_is_still_refused(
    server: ArtifactServer, cache_dir: Path
) -> None:
    # With no digest to check, Content-Length is what catches the short body.
    server.routes["/model.onnx"] = Route(mode="drop")
    settings = make_settings(
        cache_dir, server.url("/model.onnx"), model_sha256=None, model_format="onnx"
    )

    error = await fetch_error(settings)

    assert error.reason == "ArtifactUnreachable"
    assert cache_listing(cache_dir) == []


async def test_truncated_file_fails_the_checksum(server: ArtifactServer, cache_dir: Path) -> None:
    truncated = ARTIFACT[: len(ARTIFACT) - 1000]
    server.routes["/model.joblib"] = Route(body=truncated)

    error = await fetch_error(make_settings(cache_dir, server.url("/model.joblib")))

    assert error.reason == "ChecksumMismatch"
    assert error.retryable is True  # a remote store may still be mid-upload
    assert hashlib.sha256(truncated).hexdigest() in error.message
    assert cache_listing(cache_dir) == []


async def test_different_file_fails_the_checksum_and_is_not_cached(
    server: ArtifactServer, cache_dir: Path
) -> None:
    server.routes["/model.joblib"] = Route(body=OTHER_ARTIFACT)
    settings = make_settings(cache_dir, server.url("/model.joblib"))

    error = await fetch_error(settings)

    assert error.reason == "ChecksumMismatch"
    assert f"sha256 {hashlib.sha256(OTHER_ARTIFACT).hexdigest()}" in error.message
    assert f"spec.model.sha256 is {ARTIFACT_SHA256}" in error.message
    assert cache_listing(cache_dir) == []

    server.routes["/model.joblib"] = Route()
    assert (await fetch_artifact(settings)).read_bytes() == ARTIFACT


async def test_size_cap_from_content_length(server: ArtifactServer, cache_dir: Path) -> None:
    server.routes["/model.joblib"] = Route()
    settings = make_settings(cache_dir, server.url("/model.joblib"), artifact_max_bytes=1000)

    error = await fetch_error(settings)

    assert error.reason == "ArtifactTooLarge"
    assert error.retryable is False
    assert f"is {len(ARTIFACT)} bytes" in error.message
    assert cache_listing(cache_dir) == []


async def test_size_cap_while_streaming_a_body_of_unknown_length(
    server: ArtifactServer, cache_dir: Path
) -> None:
    server.routes["/model.joblib"] = Route(mode="unsized")
    settings = make_settings(
        cache_dir, server.url("/model.joblib"), artifact_max_bytes=len(ARTIFACT) // 4
    )

    error = await fetch_error(settings)

    assert error.reason == "ArtifactTooLarge"
    assert "grew past the limit" in error.message
    assert cache_listing(cache_dir) == []


async def test_body_of_unknown_length_within_the_cap_is_accepted(
    server: ArtifactServer, cache_dir: Path
) -> None:
    server.routes["/model.joblib"] = Route(mode="unsized")

    path = await fetch_artifact(make_settings(cache_dir, server.url("/model.joblib")))

    assert path.read_bytes() == ARTIFACT


@pytest.mark.parametrize(
    ("status", "reason", "text"),
    [
        (404, "ArtifactNotFound", "HTTP 404"),
        (410, "ArtifactNotFound", "HTTP 410"),
        (403, "ArtifactUnreachable", "access denied"),
        (500, "ArtifactUnreachable", "HTTP 500"),
        (503, "ArtifactUnreachable", "HTTP 503"),
    ],
)
async def test_http_error_statuses(
    server: ArtifactServer, cache_dir: Path, status: int, reason: str, text: str
) -> None:
    server.routes["/model.joblib"] = Route(status=status)

    error = await fetch_error(make_settings(cache_dir, server.url("/model.joblib")))

    assert error.reason == reason
    assert error.retryable is True
    assert text in error.message
    assert cache_listing(cache_dir) == []


async def test_closed_port_is_unreachable(cache_dir: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}/model.joblib"

    error = await fetch_error(make_settings(cache_dir, uri))

    assert error.reason == "ArtifactUnreachable"
    assert error.retryable is True
    assert "ConnectError" in error.message


async def test_partial_download_is_never_visible_under_the_final_name(
    server: ArtifactServer, cache_dir: Path
) -> None:
    route = Route(mode="hold")
    server.routes["/model.joblib"] = route
    final = cache_dir / f"sha256-{ARTIFACT_SHA256}"
    download = asyncio.create_task(
        fetch_artifact(make_settings(cache_dir, server.url("/model.joblib")))
    )
    try:
        await wait_until_async(
            lambda: partial_files(cache_dir), timeout=10, what="the download to start writing"
        )
        assert not final.exists()
    finally:
        route.release.set()
    path = await download

    assert path == final
    assert path.read_bytes() == ARTIFACT
    assert cache_listing(cache_dir) == [final.name]


async def test_cancelled_download_leaves_no_file(server: ArtifactServer, cache_dir: Path) -> None:
    server.routes["/model.joblib"] = Route(mode="hold")
    download = asyncio.create_task(
        fetch_artifact(make_settings(cache_dir, server.url("/model.joblib")))
    )
    # Cancelled once half the body is on disk, so there is a partial file to clean up.
    await wait_until_async(
        lambda: partial_files(cache_dir), timeout=10, what="the download to start writing"
    )

    download.cancel()
    with pytest.raises(asyncio.CancelledError):
        await download

    assert cache_listing(cache_dir) == []


async def test_credentials_and_signed_query_never_reach_messages_or_logs(
    server: ArtifactServer, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret_uri = (
        server.url("/private/model.joblib").replace("http://", "http://alice:hunter2-password@")
        + "?X-Amz-Signature=topsecret-signature&X-Amz-Credential=AKIAEXAMPLE"
    )
    server.routes["/private/model.joblib"] = Route(status=404)
    caplog.set_level(logging.DEBUG)

    error = await fetch_error(make_settings(cache_dir, secret_uri))

    assert error.reason == "ArtifactNotFound"
    assert "/private/model.joblib" in error.message
    logged = " ".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    for secret in ("hunter2-password", "topsecret-signature", "AKIAEXAMPLE", "alice"):
        assert secret not in error.message
        assert secret not in str(error)
        assert secret not in logged
    assert server.hits("/private/model.joblib") == 1
