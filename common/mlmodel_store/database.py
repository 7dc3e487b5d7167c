"""One database behind a URL: a cached connection, transactions, and redacted descriptions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from .dialects import dialect_for
from .migrations import migrate
from .repository import apply_events
from .session import Session
from .urls import redact_url, resolve_database_url, scrub


class Database:
    """A metadata database. Not thread-safe: one instance per thread (the writer has its own)."""

    def __init__(self, url: str, **options: Any) -> None:
        self._url = url
        self.dialect = dialect_for(url, **options)
        self._connection: Any = None

    @classmethod
    def from_settings(
        cls, database_url: SecretStr | str | None, cache_dir: Path, **options: Any
    ) -> Database:
        """The configured URL, or the embedded SQLite file in ``cache_dir``."""
        return cls(resolve_database_url(database_url, cache_dir), **options)

    @property
    def backend(self) -> str:
        return self.dialect.name

    @property
    def redacted_url(self) -> str:
        return redact_url(self._url)

    def __repr__(self) -> str:
        return f"Database({self.redacted_url!r})"

    def scrub(self, text: str) -> str:
        """``text`` without this database's password (for log lines and error messages)."""
        return scrub(text, self._url)

    def is_transient(self, error: BaseException) -> bool:
        return self.dialect.is_transient(error)

    @contextmanager
    def session(self, *, write: bool = True, create: bool = True) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        connection = self._connect(create=create)
        try:
            self.dialect.begin(connection, write=write)
            yield Session(connection, self.dialect)
            connection.commit()
        except BaseException as error:
            self._rollback_or_drop(connection, error)
            raise

    def write(self, events: Sequence[Any]) -> None:
        """Apply write events (see ``events``) in one transaction."""
        with self.session(write=True) as session:
            apply_events(session, events)

    def migrate(self) -> list[int]:
        """Apply pending schema migrations; returns the versions this call applied."""
        return migrate(self)

    def close(self) -> None:
        if self._connection is not None:
            with suppress(Exception):  # a broken connection may refuse to close
                self._connection.close()
            self._connection = None

    def _connect(self, *, create: bool) -> Any:
        if self._connection is None:
            self._connection = self.dialect.connect(create=create)
        return self._connection

    def _rollback_or_drop(self, connection: Any, error: BaseException) -> None:
        if self.is_transient(error):
            # The server may be gone: start from a fresh connection next time.
            self.close()
            return
        try:
            connection.rollback()
        except Exception:  # noqa: BLE001
            self.close()
