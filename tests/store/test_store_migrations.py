"""Schema migrations: from empty, re-run, several processes at once, and the SQL splitter."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from mlmodel_store.database import Database
from mlmodel_store.migrations import (
    Migration,
    MigrationError,
    applied_versions,
    load_migrations,
    migrate,
    split_statements,
)
from mlmodel_store.queries import count_rows

TABLES = ["deployments", "rollouts", "runtime_instances", "predictions", "shadow_disagreements"]


def test_migrates_an_empty_database(database_url: str) -> None:
    database = Database(database_url)
    try:
        expected = [migration.version for migration in load_migrations()]
        assert database.migrate() == expected
        assert applied_versions(database) == expected
        with database.session() as session:
            for table in TABLES:
                assert count_rows(session, table) == 0
    finally:
        database.close()


def test_rerun_is_a_no_op(database_url: str) -> None:
    database = Database(database_url)
    try:
        assert database.migrate() != []
        with database.session(write=False) as session:
            before = session.fetch_all(
                "SELECT version, checksum, applied_at FROM schema_migrations"
            )
        assert database.migrate() == []
        assert Database(database_url).migrate() == []  # a second process-like client as well
        with database.session(write=False) as session:
            after = session.fetch_all("SELECT version, checksum, applied_at FROM schema_migrations")
        assert after == before
    finally:
        database.close()


def test_a_later_migration_is_applied_on_top(database_url: str) -> None:
    database = Database(database_url)
    try:
        migrations = load_migrations()
        versions = [migration.version for migration in migrations]
        assert migrate(database, migrations) == versions
        extra = Migration(versions[-1] + 1, "add_note", "ALTER TABLE deployments ADD COLUMN note TEXT;\n")
        assert migrate(database, [*migrations, extra]) == [extra.version]
        assert applied_versions(database) == [*versions, extra.version]
        with database.session() as session:
            session.execute("UPDATE deployments SET note = :note", {"note": "x"})
    finally:
        database.close()


def test_a_failing_migration_leaves_nothing_behind(database_url: str) -> None:
    database = Database(database_url)
    try:
        migrations = load_migrations()
        versions = [migration.version for migration in migrations]
        broken = Migration(
            versions[-1] + 1,
            "broken",
            "CREATE TABLE half_done (id TEXT);\nSELECT * FROM no_such_table;\n",
        )
        with pytest.raises(Exception, match="no_such_table"):
            migrate(database, [*migrations, broken])
        # The real migrations and the half of the broken one were in one transaction: all
        # rolled back.
        assert migrate(database, migrations) == versions
        with database.session(write=False) as session, pytest.raises(Exception, match="half_done"):
            session.fetch_all("SELECT * FROM half_done")
    finally:
        database.close()


def _migrate_in_child(url: str, barrier, results) -> None:  # runs in a spawned process
    try:
        barrier.wait(timeout=120)
        results.put(Database(url).migrate())
    except BaseException as error:  # noqa: BLE001 - reported to the test, not lost with the process
        results.put(f"{type(error).__name__}: {error}")


def test_processes_migrating_at_once_apply_one_set(database_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    processes_count = 4
    barrier = context.Barrier(processes_count)
    results = context.Queue()
    processes = [
        context.Process(target=_migrate_in_child, args=(database_url, barrier, results))
        for _ in range(processes_count)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=240) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    # Exactly one process applied the migrations; the others waited and found nothing to do.
    versions = [migration.version for migration in load_migrations()]
    assert sorted(outcomes, key=len) == [[], [], [], versions]
    database = Database(database_url)
    try:
        with database.session(write=False) as session:
            assert count_rows(session, "schema_migrations") == len(versions)
            for table in TABLES:
                assert count_rows(session, table) == 0
    finally:
        database.close()


def test_split_statements_ignores_comments_and_semicolons_in_strings() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE a (x TEXT DEFAULT 'a;b');
    -- trailing comment
    INSERT INTO a (x) VALUES ('c');
    """
    assert split_statements(script) == [
        "CREATE TABLE a (x TEXT DEFAULT 'a;b')",
        "INSERT INTO a (x) VALUES ('c')",
    ]


def test_unterminated_statement_is_an_error() -> None:
    with pytest.raises(MigrationError, match="unterminated"):
        split_statements("CREATE TABLE a (x TEXT)")


def test_migration_files_must_be_numbered(tmp_path: Path) -> None:
    (tmp_path / "initial.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="0001_name.sql"):
        load_migrations(tmp_path)


def test_shipped_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [migration.version for migration in load_migrations()]
    assert versions == list(range(1, len(versions) + 1))
