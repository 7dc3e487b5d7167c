"""The asynchronous metadata writer: callers enqueue events and never wait for the database.

A bounded asyncio queue is flushed in batches by one background task; the SQL runs in a
dedicated thread so the event loop never blocks. When the database is down, the batch in hand is
retried with exponential backoff while new events queue up; once the queue is full, new events
are dropped and counted (``mlmodel_metadata_writes_dropped_total``), never silently.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Self

from prometheus_client import CollectorRegistry

from .database import Database
from .metrics import store_metrics

logger = logging.getLogger(__name__)


@dataclass
class WriterStats:
    """Counts for tests and debugging; the metrics are the operational view."""

    batches: int = 0
    written: int = 0
    failed_attempts: int = 0
    errors: int = 0
    dropped: int = 0


class AsyncWriter:
    """Owns ``database`` (no one else may use it) and writes every submitted event, in order."""

    def __init__(
        self,
        database: Database,
        *,
        component: str,
        registry: CollectorRegistry | None = None,
        max_queue: int = 10_000,
        batch_size: int = 200,
        linger_seconds: float = 0.05,
        retry_initial_seconds: float = 0.5,
        retry_max_seconds: float = 30.0,
        migrate: bool = True,
    ) -> None:
        if max_queue < 1 or batch_size < 1:
            raise ValueError("max_queue and batch_size must be at least 1")
        self.database = database
        self.component = component
        self.batch_size = batch_size
        self.linger_seconds = linger_seconds
        self.retry_initial_seconds = retry_initial_seconds
        self.retry_max_seconds = retry_max_seconds
        self.stats = WriterStats()
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max_queue)
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"metadata-{component}"
        )
        self._needs_migration = migrate
        self._task: asyncio.Task | None = None
        self._in_flight: list[Any] = []
        self._wake = asyncio.Event()
        self._closed_event = asyncio.Event()
        self._closing = False
        self._closed = False
        self._unavailable_since: float | None = None

        metrics = store_metrics(registry)
        self._written_ok = metrics.writes.labels(component, "ok")
        self._written_retried = metrics.writes.labels(component, "retried")
        self._written_error = metrics.writes.labels(component, "error")
        self._dropped = metrics.dropped.labels(component)
        self._queued = metrics.queued.labels(component)

    # --- the caller's side (event loop thread) ---------------------------------------------
    def submit(self, event: Any) -> bool:
        """Queue one write event; False (counted as dropped) when the queue is full or closed."""
        if self._closing:
            self._drop(1, "writer closed")
            return False
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._drop(1, "queue full")
            return False
        self._queued.set(self.pending)
        return True

    @property
    def pending(self) -> int:
        """Events not written yet: queued plus the batch in hand."""
        return self._queue.qsize() + len(self._in_flight)

    @property
    def available(self) -> bool:
        """False from a failed write until the next successful one."""
        return self._unavailable_since is None

    def start(self) -> None:
        """Start the background flusher (needs a running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"metadata-writer-{self.component}"
            )

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is written (or discarded); False on timeout."""
        self.start()
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 10.0) -> int:
        """Flush for up to ``timeout`` seconds, then stop; returns how many events were lost."""
        if self._closed:
            return 0
        self._closing = True
        self._closed_event.set()
        self._wake.set()  # cut a backoff wait short: one more attempt right now
        self.start()
        await self.flush(timeout)
        in_flight = list(self._in_flight)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        lost = len(in_flight)
        while not self._queue.empty():
            self._queue.get_nowait()
            lost += 1
        if lost:
            self._dropped.inc(lost)
            self.stats.dropped += lost
            logger.error(
                "metadata writes lost at shutdown",
                extra={"component": self.component, "lost": lost, "timeout_seconds": timeout},
            )
        self._queued.set(0)
        # The worker thread may be stuck in a connect; do not wait for it.
        self._executor.submit(self.database.close)
        self._executor.shutdown(wait=False)
        self._closed = True
        return lost

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- the background side -------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if (
                self.linger_seconds > 0
                and not self._closing
                and self._queue.qsize() < self.batch_size - 1
            ):
                # Let a burst coalesce into one transaction; close() cuts the wait short.
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._closed_event.wait(), self.linger_seconds)
            while len(batch) < self.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._in_flight = batch
            try:
                await self._write_with_retry(batch, split_on_error=True)
            finally:
                self._in_flight = []
                for _ in batch:
                    self._queue.task_done()
                self._queued.set(self.pending)

    async def _write_with_retry(self, batch: list[Any], *, split_on_error: bool) -> None:
        loop = asyncio.get_running_loop()
        delay = self.retry_initial_seconds
        while True:
            try:
                await loop.run_in_executor(self._executor, self._write_blocking, batch)
            except Exception as error:  # noqa: BLE001 - classified below, never lost silently
                if self.database.is_transient(error):
                    self._written_retried.inc(len(batch))
                    self.stats.failed_attempts += 1
                    self._note_unavailable(error, delay)
                    await self._backoff(delay)
                    delay = min(delay * 2, self.retry_max_seconds)
                    continue
                if split_on_error and len(batch) > 1:
                    # One bad event must not sink its neighbours: write them one by one.
                    for event in batch:
                        await self._write_with_retry([event], split_on_error=False)
                    return
                self._written_error.inc(len(batch))
                self.stats.errors += len(batch)
                logger.error(
                    "metadata write rejected by the database",
                    extra={
                        "component": self.component,
                        "event": type(batch[0]).__name__,
                        "error": self.database.scrub(str(error)),
                    },
                )
                return
            self._written_ok.inc(len(batch))
            self.stats.batches += 1
            self.stats.written += len(batch)
            self._note_available()
            return

    def _write_blocking(self, batch: list[Any]) -> None:
        if self._needs_migration:
            self.database.migrate()
            self._needs_migration = False
        self.database.write(batch)

    async def _backoff(self, delay: float) -> None:
        jittered = delay * random.uniform(0.8, 1.2)
        try:
            await asyncio.wait_for(self._wake.wait(), jittered)
        except TimeoutError:
            pass
        self._wake.clear()

    def _note_unavailable(self, error: BaseException, delay: float) -> None:
        context = {
            "component": self.component,
            "database": self.database.redacted_url,
            "error": self.database.scrub(str(error)).strip(),
            "retry_in_seconds": round(delay, 3),
            "pending": self.pending,
        }
        if self._unavailable_since is None:
            self._unavailable_since = time.monotonic()
            logger.warning("metadata store unavailable; writes queued", extra=context)
        else:
            logger.debug("metadata store still unavailable", extra=context)

    def _note_available(self) -> None:
        if self._unavailable_since is not None:
            logger.info(
                "metadata store available again",
                extra={
                    "component": self.component,
                    "outage_seconds": round(time.monotonic() - self._unavailable_since, 3),
                    "pending": self.pending,
                },
            )
            self._unavailable_since = None

    def _drop(self, count: int, reason: str) -> None:
        self._dropped.inc(count)
        self.stats.dropped += count
        # 1st, 10th, 100th... drop: visible in the log without one line per lost event.
        if _is_power_of_ten(self.stats.dropped):
            logger.warning(
                "metadata writes dropped",
                extra={
                    "component": self.component,
                    "reason": reason,
                    "dropped_total": self.stats.dropped,
                },
            )


def _is_power_of_ten(number: int) -> bool:
    while number >= 10 and number % 10 == 0:
        number //= 10
    return number == 1
