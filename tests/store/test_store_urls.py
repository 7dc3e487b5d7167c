"""Database URLs: the SQLite default and password redaction."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlmodel_store.database import Database
from mlmodel_store.urls import redact_url, resolve_database_url, scrub, sqlite_path
from pydantic import SecretStr


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://app:s3cr%40t@db.example:5432/meta",
            "postgresql://app:***@db.example:5432/meta",
        ),
        (
            "postgres://app:pw@10.0.0.1/meta?sslmode=require",
            "postgres://app:***@10.0.0.1/meta?sslmode=require",
        ),
        ("postgresql://app@db/meta", "postgresql://app@db/meta"),
        (
            "host=db user=app password='p w' dbname=meta",
            "host=db user=app password=*** dbname=meta",
        ),
        (
            "sqlite:////var/cache/mlmodel/metadata.sqlite3",
            "sqlite:////var/cache/mlmodel/metadata.sqlite3",
        ),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_scrub_removes_the_password_in_any_form() -> None:
    url = "postgresql://app:s3cr%40t@db/meta"
    assert scrub("failed for s3cr%40t and s3cr@t", url) == "failed for *** and ***"
    assert scrub("nothing to hide", "sqlite:////x.db") == "nothing to hide"


def test_database_repr_hides_the_password() -> None:
    database = Database("postgresql://app:hunter2@127.0.0.1:1/meta")
    assert "hunter2" not in repr(database)
    assert "hunter2" not in database.redacted_url


def test_default_is_sqlite_in_the_cache_dir(tmp_path: Path) -> None:
    url = resolve_database_url(None, tmp_path)
    assert sqlite_path(url) == tmp_path / "metadata.sqlite3"
    assert resolve_database_url(SecretStr(""), tmp_path) == url
    assert (
        resolve_database_url(SecretStr("postgresql://a:b@h/d"), tmp_path) == "postgresql://a:b@h/d"
    )


def test_unsupported_scheme_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="postgresql://... or sqlite:///path"):
        Database("mysql://app:pw@db/meta")
