"""A transaction's statements with ``:name`` placeholders, translated for the backend in use."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class Session:
    """Statements inside one transaction, with ``:name`` placeholders on every backend."""

    def __init__(self, connection: Any, dialect: Any) -> None:
        self._connection = connection
        self._dialect = dialect

    def execute(self, query: str, params: Mapping[str, Any] | None = None) -> int:
        """Run one statement; returns the number of rows it changed."""
        cursor = self._connection.cursor()
        try:
            cursor.execute(self._dialect.sql(query), self._encode(params or {}))
            return cursor.rowcount
        finally:
            cursor.close()

    def execute_many(self, query: str, rows: Iterable[Mapping[str, Any]]) -> None:
        cursor = self._connection.cursor()
        try:
            cursor.executemany(self._dialect.sql(query), [self._encode(row) for row in rows])
        finally:
            cursor.close()

    def fetch_all(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict]:
        cursor = self._connection.cursor()
        try:
            cursor.execute(self._dialect.sql(query), self._encode(params or {}))
            columns = [column[0] for column in cursor.description]
            return [dict(zip(columns, row)) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def fetch_one(self, query: str, params: Mapping[str, Any] | None = None) -> dict | None:
        rows = self.fetch_all(query, params)
        return rows[0] if rows else None

    def _encode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {key: self._dialect.encode(value) for key, value in params.items()}
