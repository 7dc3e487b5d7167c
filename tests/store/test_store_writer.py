"""The asynchronous writer: batching, overflow accounting, shutdown flush, database outages."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest
from mlmodel_store.database import Database
from mlmodel_store.events import InstanceRegistered, ModelSpec, RolloutStarted
from mlmodel_store.queries import count_rows
from mlmodel_store.writer import AsyncWriter
from prometheus_client import CollectorRegistry
from support.ports import wait_until_async

SPEC = ModelSpec("model.joblib", "c" * 64, "sklearn", "runtime:0.1.0", 1)


def instance(number: int) -> InstanceRegistered:
    return InstanceRegistered(f"i-{number}", "ml", "sentiment", f"pod-{number}", "c" * 64)


def rows_in(url: str, table: str = "runtime_instances") -> int:
    database = Database(url)
    try:
        with database.session(write=False) as session:
            return count_rows(session, table)
    finally:
        database.close()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_events_are_written_in_batches(
    database_url: str, registry: CollectorRegistry
) -> None:
    writer = AsyncWriter(
        Database(database_url),
        component="test",
        registry=registry,
        batch_size=100,
        linger_seconds=0,
    )
    for number in range(250):
        assert writer.submit(instance(number))
    assert writer.pending == 250
    writer.start()
    assert await writer.flush(timeout=30)
    assert (writer.stats.batches, writer.stats.written) == (3, 250)
    assert rows_in(database_url) == 250
    assert sample(registry, "mlmodel_metadata_writes_total", component="test", result="ok") == 250
    assert sample(registry, "mlmodel_metadata_writes_queued", component="test") == 0
    assert await writer.close() == 0


async def test_a_trickle_coalesces_during_the_linger(
    database_url: str, registry: CollectorRegistry
) -> None:
    writer = AsyncWriter(
        Database(database_url), component="test", registry=registry, linger_seconds=0.5
    )
    writer.start()
    for number in range(10):
        writer.submit(instance(number))
        await asyncio.sleep(0.01)
    assert await writer.flush(timeout=30)
    assert (writer.stats.batches, writer.stats.written) == (1, 10)
    await writer.close()


async def test_overflow_is_counted_not_silent(
    database_url: str, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    writer = AsyncWriter(Database(database_url), component="test", registry=registry, max_queue=5)
    accepted = [writer.submit(instance(number)) for number in range(8)]
    assert accepted == [True] * 5 + [False] * 3
    assert sample(registry, "mlmodel_metadata_writes_dropped_total", component="test") == 3
    assert "metadata writes dropped" in caplog.messages
    assert await writer.close(timeout=30) == 0
    assert rows_in(database_url) == 5


async def test_close_flushes_everything_queued(
    database_url: str, registry: CollectorRegistry
) -> None:
    writer = AsyncWriter(
        Database(database_url), component="test", registry=registry, linger_seconds=5
    )
    writer.start()
    for number in range(20):
        writer.submit(instance(number))
    await asyncio.sleep(0)  # the flusher is now lingering
    assert await writer.close(timeout=30) == 0
    assert rows_in(database_url) == 20
    # After close, events are refused and counted.
    assert writer.submit(instance(99)) is False
    assert sample(registry, "mlmodel_metadata_writes_dropped_total", component="test") == 1


async def test_a_rejected_event_does_not_sink_its_batch(
    database_url: str, registry: CollectorRegistry
) -> None:
    writer = AsyncWriter(Database(database_url), component="test", registry=registry)
    writer.submit(instance(1))
    writer.submit(RolloutStarted("ml", "m", "u", 1, SPEC, changed_by="x" * 10))
    writer.submit("not an event")
    writer.submit(instance(2))
    assert await writer.close(timeout=30) == 0
    assert rows_in(database_url) == 2
    assert rows_in(database_url, "rollouts") == 1
    assert sample(registry, "mlmodel_metadata_writes_total", component="test", result="error") == 1
    assert sample(registry, "mlmodel_metadata_writes_total", component="test", result="ok") == 3


def assert_password_never_logged(records: list[logging.LogRecord], password: str) -> None:
    assert records, "expected log records to inspect"
    for record in records:
        assert password not in record.getMessage()
        assert password not in repr(record.__dict__)


async def test_postgres_outage_queues_then_delivers_everything(
    postgres_server,
    postgres_url: str,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="mlmodel_store")
    writer = AsyncWriter(
        Database(postgres_url),
        component="runtime",
        registry=registry,
        max_queue=1000,
        batch_size=50,
        linger_seconds=0,
        retry_initial_seconds=0.05,
        retry_max_seconds=0.5,
    )
    writer.start()
    for number in range(10):
        writer.submit(instance(number))
    assert await writer.flush(timeout=30)

    with postgres_server.stopped():
        # The caller keeps going while the database is down: submit never waits.
        for number in range(10, 310):
            assert writer.submit(instance(number))
            if number % 50 == 0:
                await asyncio.sleep(0.05)
        await wait_until_async(lambda: writer.stats.failed_attempts >= 3, what="3 failed writes")
        assert not writer.available
        assert writer.pending == 300
        assert sample(registry, "mlmodel_metadata_writes_queued", component="runtime") == 300
        assert (
            sample(registry, "mlmodel_metadata_writes_total", component="runtime", result="retried")
            > 0
        )
        assert "metadata store unavailable; writes queued" in caplog.messages

    assert await writer.flush(timeout=60)
    assert writer.available
    assert "metadata store available again" in caplog.messages
    assert rows_in(postgres_url) == 310
    assert sample(registry, "mlmodel_metadata_writes_dropped_total", component="runtime") == 0
    assert (
        sample(registry, "mlmodel_metadata_writes_total", component="runtime", result="ok") == 310
    )
    assert await writer.close() == 0
    assert_password_never_logged(caplog.records, postgres_server.password)


async def test_postgres_outage_beyond_the_queue_bound_drops_and_counts(
    postgres_server, postgres_url: str, registry: CollectorRegistry
) -> None:
    writer = AsyncWriter(
        Database(postgres_url),
        component="operator",
        registry=registry,
        max_queue=50,
        batch_size=10,
        linger_seconds=0,
        retry_initial_seconds=0.05,
        retry_max_seconds=0.2,
    )
    writer.start()
    with postgres_server.stopped():
        writer.submit(instance(0))
        # The flusher now holds that one event and retries it; the queue itself is empty.
        await wait_until_async(lambda: writer.stats.failed_attempts >= 1, what="a failed write")
        accepted = sum(writer.submit(instance(number)) for number in range(1, 101))
        assert accepted == 50
        assert sample(registry, "mlmodel_metadata_writes_dropped_total", component="operator") == 50
    assert await writer.flush(timeout=60)
    # Nothing below the bound was lost: the one in hand plus a full queue.
    assert rows_in(postgres_url) == 51
    assert await writer.close() == 0


async def test_close_with_the_database_down_counts_what_is_lost(
    postgres_server,
    postgres_url: str,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    migrated = Database(postgres_url)
    migrated.migrate()
    migrated.close()
    writer = AsyncWriter(
        Database(postgres_url), component="runtime", registry=registry, retry_initial_seconds=0.05
    )
    writer.start()
    with postgres_server.stopped():
        for number in range(5):
            writer.submit(instance(number))
        assert await writer.close(timeout=0.5) == 5
    assert sample(registry, "mlmodel_metadata_writes_dropped_total", component="runtime") == 5
    assert "metadata writes lost at shutdown" in caplog.messages
    assert rows_in(postgres_url) == 0
    assert_password_never_logged(caplog.records, postgres_server.password)


async def test_sqlite_unavailable_then_recovers(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    # A regular file where the database folder should be: like a volume that is not mounted yet.
    folder = tmp_path / "cache"
    folder.write_text("not a folder")
    url = f"sqlite:///{folder / 'metadata.sqlite3'}"
    writer = AsyncWriter(
        Database(url),
        component="runtime",
        registry=registry,
        linger_seconds=0,
        retry_initial_seconds=0.05,
        retry_max_seconds=0.2,
    )
    writer.start()
    for number in range(7):
        writer.submit(instance(number))
    await wait_until_async(lambda: writer.stats.failed_attempts >= 2, what="2 failed writes")
    assert writer.pending == 7
    folder.unlink()
    folder.mkdir()
    assert await writer.flush(timeout=30)
    assert rows_in(url) == 7
    assert await writer.close() == 0
    shutil.rmtree(folder)
