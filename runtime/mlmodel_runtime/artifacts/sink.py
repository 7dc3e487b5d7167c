"""Where downloaded bytes go: a temp file in the cache dir, hashed and size-capped while written,
published under its digest by an atomic rename, deleted on any failure."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self, TypeVar

from mlmodel_runtime.artifacts import errors

PARTIAL_PREFIX = ".partial-"
CACHED_PREFIX = "sha256-"
CHUNK_BYTES = 1024 * 1024
# An active download rewrites its partial file at least once per read timeout, so a partial file
# this old belongs to a process that died mid-download.
STALE_PARTIAL_SECONDS = 3600.0

T = TypeVar("T")


class DownloadCancelled(Exception):
    """Raised inside a download thread once the awaiting coroutine has been cancelled."""


def cached_path(cache_dir: Path, digest: str) -> Path:
    return cache_dir / f"{CACHED_PREFIX}{digest}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def remove_stale_partials(
    cache_dir: Path, now: float, max_age: float = STALE_PARTIAL_SECONDS
) -> None:
    for partial in cache_dir.glob(f"{PARTIAL_PREFIX}*"):
        with contextlib.suppress(OSError):
            if now - partial.stat().st_mtime > max_age:
                partial.unlink()


class ArtifactSink:
    """One download's temp file. Use as a context manager: leaving it without ``publish`` deletes it."""

    def __init__(self, cache_dir: Path, max_bytes: int, shown_uri: str) -> None:
        self._cache_dir = cache_dir
        self._max_bytes = max_bytes
        self._shown_uri = shown_uri
        self._hash = hashlib.sha256()
        self._cancelled = threading.Event()
        self.size = 0
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(cache_dir, time.time())
            fd, name = tempfile.mkstemp(dir=cache_dir, prefix=PARTIAL_PREFIX)
        except OSError as exc:
            raise errors.cache_unwritable(str(cache_dir), exc.strerror or str(exc)) from exc
        self.partial_path = Path(name)
        self._file = os.fdopen(fd, "wb")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()

    def expect_size(self, size: int | None) -> None:
        """Refuse early when the source announces a size over the cap."""
        if size is not None and size > self._max_bytes:
            raise errors.too_large(self._shown_uri, self._max_bytes, size)

    def write(self, chunk: bytes) -> None:
        if self._cancelled.is_set():
            raise DownloadCancelled()
        self.size += len(chunk)
        if self.size > self._max_bytes:
            raise errors.too_large(self._shown_uri, self._max_bytes)
        self._hash.update(chunk)
        try:
            self._file.write(chunk)
        except OSError as exc:
            raise errors.cache_unwritable(str(self._cache_dir), exc.strerror or str(exc)) from exc

    def cancel(self) -> None:
        self._cancelled.set()

    def finish(self) -> str:
        """Flush the bytes to disk and return their sha256; blocking (fsync)."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        except OSError as exc:
            raise errors.cache_unwritable(str(self._cache_dir), exc.strerror or str(exc)) from exc
        return self._hash.hexdigest()

    def publish(self, digest: str) -> Path:
        """Atomically move the finished file to its digest-named place; blocking."""
        final = cached_path(self._cache_dir, digest)
        try:
            os.chmod(self.partial_path, 0o444)  # a cached artifact is never edited in place
            os.replace(self.partial_path, final)
            _fsync_dir(self._cache_dir)
        except OSError as exc:
            raise errors.cache_unwritable(str(self._cache_dir), exc.strerror or str(exc)) from exc
        return final

    def discard(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.partial_path.unlink()


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable, so a crash never leaves a name pointing at nothing.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def run_blocking(sink: ArtifactSink, work: Callable[[], T]) -> T:
    """Run blocking work on the sink in a thread; on cancellation stop it at its next chunk and wait,
    so the caller never deletes a temp file a thread is still writing."""
    future = asyncio.get_running_loop().run_in_executor(None, work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        sink.cancel()
        with contextlib.suppress(BaseException):
            await future
        raise
