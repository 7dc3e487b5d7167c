"""fetch_artifact_with_retry: backs off, reports every failure, converges once the server recovers,
and gives up at once on failures no retry can fix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mlmodel_runtime.artifacts import ArtifactError, fetch_artifact_with_retry
from mlmodel_runtime.artifacts.fetch import backoff_delay
from support.artifacts import (
    ARTIFACT,
    OTHER_ARTIFACT,
    ArtifactServer,
    Route,
    cache_listing,
    make_settings,
    running_artifact_server,
)


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    with running_artifact_server() as running:
        yield running


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    lowest = [backoff_delay(attempt, cap=8.0, rand=lambda: 0.0) for attempt in range(8)]
    highest = [backoff_delay(attempt, cap=8.0, rand=lambda: 1.0) for attempt in range(8)]

    assert lowest == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert highest == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]


def test_backoff_is_jittered_and_never_zero() -> None:
    delays = {backoff_delay(3, cap=60.0) for _ in range(50)}

    assert len(delays) > 1
    assert all(2.0 <= delay <= 4.0 for delay in delays)
    assert backoff_delay(10_000, cap=0.05, rand=lambda: 0.0) == 0.025


async def test_retry_converges_once_the_server_recovers(
    server: ArtifactServer, cache_dir: Path
) -> None:
    server.routes["/model.joblib"] = Route(fail_first=3, fail_status=503)
    failures: list[ArtifactError] = []

    path = await fetch_artifact_with_retry(
        make_settings(cache_dir, server.url("/model.joblib")), failures.append
    )

    assert path.read_bytes() == ARTIFACT
    assert [error.reason for error in failures] == ["ArtifactUnreachable"] * 3
    assert all("HTTP 503" in error.message for error in failures)
    assert server.hits("/model.joblib") == 4


async def test_retry_survives_dropped_connections_and_a_swapped_file(
    server: ArtifactServer, cache_dir: Path
) -> None:
    route = Route(mode="drop")
    server.routes["/model.joblib"] = route
    failures: list[ArtifactError] = []

    def heal_step_by_step(error: ArtifactError) -> None:
        # The store misbehaves differently on each attempt, then serves the right file.
        failures.append(error)
        if len(failures) == 1:
            route.mode, route.body = "ok", OTHER_ARTIFACT
        elif len(failures) == 2:
            route.body = ARTIFACT
        assert cache_listing(cache_dir) == [], "a failed attempt left a file behind"

    path = await fetch_artifact_with_retry(
        make_settings(cache_dir, server.url("/model.joblib")), heal_step_by_step
    )

    assert [error.reason for error in failures] == ["ArtifactUnreachable", "ChecksumMismatch"]
    assert path.read_bytes() == ARTIFACT
    assert cache_listing(cache_dir) == [path.name]


async def test_retry_waits_for_a_slow_server_to_become_fast(
    server: ArtifactServer, cache_dir: Path
) -> None:
    route = Route(mode="slow", pause_seconds=5)
    server.routes["/model.joblib"] = route
    failures: list[ArtifactError] = []

    def speed_up_after_two(error: ArtifactError) -> None:
        failures.append(error)
        if len(failures) == 2:
            route.mode = "ok"

    settings = make_settings(
        cache_dir, server.url("/model.joblib"), artifact_read_timeout_seconds=0.2
    )
    path = await fetch_artifact_with_retry(settings, speed_up_after_two)

    assert [error.reason for error in failures] == ["ArtifactTimeout", "ArtifactTimeout"]
    assert path.read_bytes() == ARTIFACT


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"model_uri": "ftp://example.com/model.joblib"}, "UnsupportedScheme"),
        ({"model_sha256": None}, "UnverifiedArtifact"),
        ({"artifact_max_bytes": 10}, "ArtifactTooLarge"),
    ],
)
async def test_permanent_failures_are_raised_after_one_report(
    server: ArtifactServer, cache_dir: Path, overrides: dict, reason: str
) -> None:
    server.routes["/model.joblib"] = Route()
    settings = make_settings(cache_dir, server.url("/model.joblib"), **overrides)
    failures: list[ArtifactError] = []

    with pytest.raises(ArtifactError) as caught:
        await fetch_artifact_with_retry(settings, failures.append)

    assert caught.value.reason == reason
    assert caught.value.retryable is False
    assert failures == [caught.value]
    assert server.hits("/model.joblib") <= 1


async def test_local_checksum_mismatch_is_not_retried(tmp_path: Path, cache_dir: Path) -> None:
    local = tmp_path / "model.joblib"
    local.write_bytes(OTHER_ARTIFACT)
    failures: list[ArtifactError] = []

    with pytest.raises(ArtifactError) as caught:
        await fetch_artifact_with_retry(make_settings(cache_dir, str(local)), failures.append)

    assert caught.value.reason == "ChecksumMismatch"
    assert len(failures) == 1


async def test_missing_local_file_is_retried_until_it_appears(
    tmp_path: Path, cache_dir: Path
) -> None:
    # A volume or sidecar may populate the path after the runtime starts.
    local = tmp_path / "model.joblib"
    failures: list[ArtifactError] = []

    def publish_after_two(error: ArtifactError) -> None:
        failures.append(error)
        if len(failures) == 2:
            local.write_bytes(ARTIFACT)

    path = await fetch_artifact_with_retry(make_settings(cache_dir, str(local)), publish_after_two)

    assert [error.reason for error in failures] == ["ArtifactNotFound", "ArtifactNotFound"]
    assert path.read_bytes() == ARTIFACT
