"""Versioned SQL migrations (``migrations/NNNN_name.sql``), applied once each at start-up.

Safe when several replicas start together: the whole check-and-apply runs in one transaction
that first takes a lock (PostgreSQL: an advisory lock; SQLite: BEGIN IMMEDIATE), so the second
process waits, then finds nothing left to do.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .events import utcnow

if TYPE_CHECKING:
    from .database import Database

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
)
"""


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        return split_statements(self.sql)


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file name must look like 0001_name.sql: {path.name}")
        migrations.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    versions = [migration.version for migration in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version in {directory}")
    return migrations


def split_statements(sql: str) -> list[str]:
    """Split a script into statements (the drivers run one at a time inside our transaction).

    sqlite3.complete_statement understands quotes and comments, which is all our portable
    scripts use; comment-only chunks are dropped.
    """
    statements, pending = [], ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statement = _strip_comments(pending).strip().rstrip(";").strip()
            if statement:
                statements.append(statement)
            pending = ""
    if _strip_comments(pending).strip():
        raise MigrationError(f"unterminated SQL statement: {pending.strip()[:80]!r}")
    return statements


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


def migrate(database: Database, migrations: list[Migration] | None = None) -> list[int]:
    """Apply the pending migrations in one locked transaction; returns the versions applied."""
    migrations = load_migrations() if migrations is None else migrations
    with database.session(write=True) as session:
        database.dialect.lock_for_migration(session)
        session.execute(CREATE_MIGRATIONS_TABLE)
        applied = {
            row["version"]: row["checksum"]
            for row in session.fetch_all("SELECT version, checksum FROM schema_migrations")
        }
        newly_applied = []
        for migration in sorted(migrations, key=lambda m: m.version):
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    # Edited after release: the schema may not be what the file now says.
                    logger.warning(
                        "applied migration differs from its file",
                        extra={"version": migration.version, "migration": migration.name},
                    )
                continue
            for statement in migration.statements():
                session.execute(statement)
            session.execute(
                """INSERT INTO schema_migrations (version, name, checksum, applied_at)
                   VALUES (:version, :name, :checksum, :applied_at)""",
                {
                    "version": migration.version,
                    "name": migration.name,
                    "checksum": migration.checksum,
                    "applied_at": utcnow(),
                },
            )
            newly_applied.append(migration.version)
        unknown = sorted(set(applied) - {m.version for m in migrations})
    if newly_applied:
        logger.info(
            "metadata schema migrated",
            extra={"database": database.redacted_url, "versions": newly_applied},
        )
    if unknown:
        # A newer release migrated this database; older replicas keep using the tables they know.
        logger.warning("metadata schema is newer than this release", extra={"versions": unknown})
    return newly_applied


def applied_versions(database: Database) -> list[int]:
    with database.session(write=False) as session:
        return [
            row["version"]
            for row in session.fetch_all("SELECT version FROM schema_migrations ORDER BY version")
        ]
