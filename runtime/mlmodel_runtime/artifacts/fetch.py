"""Fetch the model artifact named in the settings into the cache, verified, once or until it works.

Retry policy, per reason: ArtifactUnreachable, ArtifactTimeout, ArtifactNotFound and CacheUnwritable
are retried (the world may fix them: a server comes back, an object is uploaded, a disk frees up);
ChecksumMismatch is retried for remote sources (a stale proxy or a half-finished upload can serve
the wrong bytes) and files in a PersistentVolumeClaim (another pod may be rewriting it) but not for
local files or an image volume (same file, same digest); UnsupportedScheme,
UnverifiedArtifact and ArtifactTooLarge, and a missing S3 credential, need a new spec or
environment and are raised at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

from mlmodel_runtime.artifacts import errors
from mlmodel_runtime.artifacts.errors import ArtifactError
from mlmodel_runtime.artifacts.sink import ArtifactSink, cached_path, file_sha256, run_blocking
from mlmodel_runtime.artifacts.uris import (
    HttpSource,
    LocalSource,
    MountedSource,
    Source,
    parse_source,
    redact_uri,
)
from mlmodel_runtime.settings import RuntimeSettings

logger = logging.getLogger("mlmodel_runtime.artifact")

# Formats whose loading executes code from the file, so they must be pinned by digest.
CODE_EXECUTING_FORMATS = frozenset({"sklearn"})
BACKOFF_BASE_SECONDS = 0.5


def backoff_delay(attempt: int, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with equal jitter: between half and all of min(cap, base * 2**attempt),
    never zero so a broken store is never hammered, and spread so replicas do not retry in step."""
    ceiling = min(cap, BACKOFF_BASE_SECONDS * 2 ** min(attempt, 32))
    return ceiling / 2 + rand() * ceiling / 2


def check_verification_policy(settings: RuntimeSettings) -> None:
    if (
        settings.model_format in CODE_EXECUTING_FORMATS
        and not settings.model_sha256
        and not settings.allow_unverified_artifact
    ):
        raise errors.unverified(settings.model_format)


async def fetch_artifact(settings: RuntimeSettings) -> Path:
    """One attempt: return the path of a verified copy of the artifact in the cache dir."""
    shown_uri = redact_uri(settings.model_uri)
    check_verification_policy(settings)
    source = parse_source(settings.model_uri, settings.model_mount_dir, settings.model_format)
    started = time.monotonic()
    expected = settings.model_sha256
    if expected:
        reused = await _reuse_cached(settings.cache_dir, expected, shown_uri)
        if reused is not None:
            return reused
    try:
        async with asyncio.timeout(settings.artifact_download_timeout_seconds):
            path, size = await _download(source, settings, shown_uri)
    except TimeoutError as exc:
        raise errors.timed_out(
            shown_uri,
            f"the download took over {settings.artifact_download_timeout_seconds}s; "
            "raise MLMODEL_ARTIFACT_DOWNLOAD_TIMEOUT_SECONDS for very large artifacts or slow links",
        ) from exc
    logger.info(
        "artifact fetched",
        extra={
            "uri": shown_uri,
            "path": str(path),
            "bytes": size,
            "verified": bool(expected),
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    return path


async def fetch_artifact_with_retry(
    settings: RuntimeSettings, on_error: Callable[[ArtifactError], None]
) -> Path:
    """Fetch until it works, backing off between attempts; every failure goes to ``on_error`` first,
    and a failure no retry can fix is raised."""
    attempt = 0
    while True:
        try:
            return await fetch_artifact(settings)
        except ArtifactError as error:
            on_error(error)
            if not error.retryable:
                logger.error(
                    "artifact fetch failed permanently",
                    extra={
                        "uri": redact_uri(settings.model_uri),
                        "reason": error.reason,
                        "error": error.message,
                    },
                )
                raise
            delay = backoff_delay(attempt, settings.artifact_retry_max_seconds)
            logger.warning(
                "artifact fetch failed, retrying",
                extra={
                    "uri": redact_uri(settings.model_uri),
                    "reason": error.reason,
                    "error": error.message,
                    "attempt": attempt + 1,
                    "retry_in_seconds": round(delay, 3),
                },
            )
        await asyncio.sleep(delay)
        attempt += 1


async def _reuse_cached(cache_dir: Path, expected: str, shown_uri: str) -> Path | None:
    path = cached_path(cache_dir, expected)
    try:
        actual = await asyncio.to_thread(file_sha256, path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise errors.cache_unwritable(str(cache_dir), exc.strerror or str(exc)) from exc
    if actual == expected:
        logger.info("artifact reused from cache", extra={"uri": shown_uri, "path": str(path)})
        return path
    # Someone changed the cached file under us: drop it and fetch a fresh copy.
    logger.warning(
        "cached artifact corrupt, fetching again", extra={"uri": shown_uri, "path": str(path)}
    )
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return None


async def _download(source: Source, settings: RuntimeSettings, shown_uri: str) -> tuple[Path, int]:
    with ArtifactSink(settings.cache_dir, settings.artifact_max_bytes, shown_uri) as sink:
        await _download_into(source, sink, settings, shown_uri)
        digest = await run_blocking(sink, sink.finish)
        expected = settings.model_sha256
        if expected and digest != expected:
            raise errors.checksum_mismatch(
                shown_uri, expected, digest, retryable=_may_change(source)
            )
        return await run_blocking(sink, lambda: sink.publish(digest)), sink.size


def _may_change(source: Source) -> bool:
    """Whether the same source may serve other bytes on the next attempt."""
    if isinstance(source, MountedSource):
        return source.rewritable
    return not isinstance(source, LocalSource)


async def _download_into(
    source: Source, sink: ArtifactSink, settings: RuntimeSettings, shown_uri: str
) -> None:
    # Each scheme's module is imported on use: a runtime reading a local file never loads boto3.
    if isinstance(source, LocalSource | MountedSource):
        from mlmodel_runtime.artifacts.local import download_local

        await download_local(source, sink, settings, shown_uri)
    elif isinstance(source, HttpSource):
        from mlmodel_runtime.artifacts.http import download_http

        await download_http(source, sink, settings, shown_uri)
    else:
        from mlmodel_runtime.artifacts.s3 import download_s3

        await download_s3(source, sink, settings, shown_uri)
