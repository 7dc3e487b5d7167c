"""The few places where PostgreSQL and SQLite differ, kept together: connecting, placeholders,
value encoding, the migration lock and which errors are worth retrying."""

from __future__ import annotations

import functools
import re
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

from .urls import sqlite_path, url_scheme

# Queries are written once with :name placeholders (sqlite3's named style).
_NAMED_PLACEHOLDER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
# Any constant 64-bit key works; this one spells "mlmodel" so it is recognisable in pg_locks.
MIGRATION_LOCK_KEY = 0x6D6C6D6F64656C


class SQLiteDialect:
    name = "sqlite"

    def __init__(self, url: str, *, busy_timeout_seconds: float = 30.0) -> None:
        self.path = sqlite_path(url)
        self.busy_timeout_seconds = busy_timeout_seconds

    def connect(self, *, create: bool = True) -> sqlite3.Connection:
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise FileNotFoundError(f"no metadata database at {self.path}")
        # isolation_level=None: we issue BEGIN ourselves, so BEGIN IMMEDIATE can take the write
        # lock up front (no lock upgrade deadlocks between processes).
        connection = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_seconds,
            isolation_level=None,
            check_same_thread=False,
        )
        self._enable_wal(connection)
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    def _enable_wal(self, connection: sqlite3.Connection) -> None:
        """WAL lets readers (mlmodel history) run while a runtime worker writes.

        Switching a new file to WAL can fail at once with "database is locked" while another
        process holds a lock (SQLite skips the busy handler there), so retry up to the timeout.
        """
        deadline = time.monotonic() + self.busy_timeout_seconds
        delay = 0.005
        while True:
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError:
                if time.monotonic() + delay > deadline:
                    connection.close()
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def begin(self, connection: sqlite3.Connection, *, write: bool) -> None:
        connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def lock_for_migration(self, session: Any) -> None:
        """Nothing to do: the write session's BEGIN IMMEDIATE already serialises migrators."""

    def sql(self, query: str) -> str:
        return query

    def encode(self, value: Any) -> Any:
        if isinstance(value, datetime):
            return encode_timestamp(value)
        return value

    def is_transient(self, error: BaseException) -> bool:
        # Locked/busy databases, unreadable files, full disks, a volume not mounted yet: all may
        # go away by themselves.
        return isinstance(error, (sqlite3.OperationalError, OSError))


class PostgresDialect:
    name = "postgresql"

    def __init__(
        self, url: str, *, connect_timeout_seconds: float = 5.0, application_name: str = "mlmodel"
    ) -> None:
        import psycopg2  # imported here so SQLite-only processes never load libpq

        self._psycopg2 = psycopg2
        self.url = url
        self.connect_timeout_seconds = connect_timeout_seconds
        self.application_name = application_name

    def connect(self, *, create: bool = True) -> Any:
        return self._psycopg2.connect(
            self.url,
            connect_timeout=max(1, int(self.connect_timeout_seconds)),
            application_name=self.application_name,
            options="-c timezone=UTC",
        )

    def begin(self, connection: Any, *, write: bool) -> None:
        """psycopg2 opens the transaction itself at the first statement."""

    def lock_for_migration(self, session: Any) -> None:
        # Transaction-scoped: released by the COMMIT/ROLLBACK that ends the migration.
        session.execute("SELECT pg_advisory_xact_lock(:key)", {"key": MIGRATION_LOCK_KEY})

    def sql(self, query: str) -> str:
        return _to_pyformat(query)

    def encode(self, value: Any) -> Any:
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value

    def is_transient(self, error: BaseException) -> bool:
        # OperationalError covers refused connections, restarts (AdminShutdown), timeouts and
        # serialization failures; InterfaceError is a connection already closed under us.
        return isinstance(error, (self._psycopg2.OperationalError, self._psycopg2.InterfaceError))


@functools.lru_cache(maxsize=256)
def _to_pyformat(query: str) -> str:
    return _NAMED_PLACEHOLDER.sub(r"%(\1)s", query.replace("%", "%%"))


def dialect_for(url: str, **options: Any) -> SQLiteDialect | PostgresDialect:
    scheme = url_scheme(url)
    if scheme == "sqlite":
        return SQLiteDialect(url)
    if scheme in ("postgresql", "postgres"):
        return PostgresDialect(url, **options)
    raise ValueError(
        f"unsupported database URL scheme {scheme!r}: use postgresql://... or sqlite:///path"
    )


def encode_timestamp(value: datetime) -> str:
    """UTC with a fixed width, so that text comparison in SQLite is time order."""
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def decode_timestamp(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC)
