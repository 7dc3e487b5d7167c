"""``mlmodel history``: the rollout table, newest first, from either backend."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mlmodel_store import history
from mlmodel_store.database import Database
from mlmodel_store.events import (
    ModelSpec,
    RolloutFailed,
    RolloutReady,
    RolloutRolledBack,
    RolloutStarted,
)
from support.ports import free_port

T0 = datetime(2025, 3, 1, 14, 0, 0, tzinfo=UTC)
SPEC_1 = ModelSpec("s3://m/1.joblib", "1" * 64, "sklearn", "runtime:0.1.0", 2)
SPEC_2 = ModelSpec("s3://m/2.joblib", "2" * 64, "sklearn", "runtime:0.1.0", 2)
SPEC_3 = ModelSpec("s3://m/2.joblib", "2" * 64, "sklearn", "runtime:0.2.0", 4)


def populate(url: str) -> None:
    database = Database(url)
    database.migrate()
    database.write(
        [
            RolloutStarted("ml", "sentiment", "u1", 1, SPEC_1, changed_by="kubectl", at=T0),
            RolloutReady("ml", "sentiment", "u1", 1, at=T0 + timedelta(seconds=4.2)),
            RolloutStarted(
                "ml", "sentiment", "u1", 2, SPEC_2, changed_by="argocd", at=T0 + timedelta(hours=1)
            ),
            RolloutFailed(
                "ml",
                "sentiment",
                "u1",
                2,
                "ArtifactDigestMismatch",
                "digest differs",
                at=T0 + timedelta(hours=1, seconds=9),
            ),
            RolloutStarted("ml", "sentiment", "u1", 3, SPEC_3, at=T0 + timedelta(hours=2)),
            RolloutStarted("other", "sentiment", "u7", 1, SPEC_1, at=T0 + timedelta(hours=3)),
        ]
    )
    database.close()


def test_history_prints_newest_first(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    populate(database_url)
    assert history.main(["sentiment", "--namespace", "ml", "--database-url", database_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["GENERATION", "STARTED", "STATUS"]
    assert [line.split()[0] for line in lines[1:]] == ["3", "2", "1"]
    newest, failed, first = lines[1:]
    assert "2025-03-01 16:00:00Z" in newest and "Progressing" in newest
    assert "image runtime:0.2.0, replicas 2 -> 4" in newest
    assert "Failed" in failed and "ArtifactDigestMismatch digest differs" in failed
    assert "digest 111111111111 -> 222222222222" in failed and "argocd" in failed
    assert "Ready" in first and "4.2s" in first and "created" in first and "kubectl" in first


def test_history_as_json(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    populate(database_url)
    assert (
        history.main(
            ["sentiment", "-n", "ml", "--database-url", database_url, "-o", "json", "--limit", "2"]
        )
        == 0
    )
    rollouts = json.loads(capsys.readouterr().out)
    assert [rollout["generation"] for rollout in rollouts] == [3, 2]
    assert rollouts[1]["reason"] == "ArtifactDigestMismatch"
    assert rollouts[1]["started_at"] == "2025-03-01T15:00:00+00:00"


def test_a_rolled_back_rollout_names_the_generation_served_again(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(database_url)
    database = Database(database_url)
    database.write(
        [
            RolloutRolledBack(
                "ml", "sentiment", "u1", 3, 1, "CrashLoopBackOff", "back-off restarting",
                at=T0 + timedelta(hours=2, seconds=30),
            )
        ]
    )
    database.close()
    assert history.main(["sentiment", "-n", "ml", "--database-url", database_url]) == 0
    newest = capsys.readouterr().out.splitlines()[1]
    assert "RolledBack to 1" in newest and "CrashLoopBackOff back-off restarting" in newest
    assert history.main(["sentiment", "-n", "ml", "--database-url", database_url, "-o", "json"]) == 0
    rollouts = json.loads(capsys.readouterr().out)
    assert (rollouts[0]["generation"], rollouts[0]["rolled_back_to"]) == (3, 1)
    assert rollouts[1]["rolled_back_to"] is None


def test_superseded_rollouts_are_named_so() -> None:
    def rollout(generation: int) -> history.Rollout:
        return history.Rollout(
            "ml",
            "m",
            "u",
            generation,
            "x",
            None,
            "sklearn",
            "img",
            1,
            {},
            None,
            T0 + timedelta(minutes=generation),
            None,
            None,
            None,
            None,
        )

    rows = history.history_rows([rollout(2), rollout(1)])
    assert [row[2] for row in rows] == ["Progressing", "Superseded"]
    assert rows[0][4] == "unverified" and rows[0][6] == "other spec fields"


def test_unknown_model_exits_non_zero(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(database_url)
    assert history.main(["nothing-here", "--database-url", database_url]) == 1
    assert "no rollouts recorded for default/nothing-here" in capsys.readouterr().err


def test_url_from_the_environment_and_default_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLMODEL_DATABASE_URL", raising=False)
    monkeypatch.setenv("MLMODEL_CACHE_DIR", str(tmp_path))
    # No database yet: a clear error, and no file created by a read-only command.
    assert history.main(["sentiment", "-n", "ml"]) == 2
    assert "no metadata database at" in capsys.readouterr().err
    assert not (tmp_path / "metadata.sqlite3").exists()

    populate(f"sqlite:///{tmp_path / 'metadata.sqlite3'}")
    assert history.main(["sentiment", "-n", "ml"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4

    elsewhere = tmp_path / "elsewhere.sqlite3"
    populate(f"sqlite:///{elsewhere}")
    monkeypatch.setenv("MLMODEL_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("MLMODEL_DATABASE_URL", f"sqlite:///{elsewhere}")
    assert history.main(["sentiment", "-n", "other"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_unreachable_database_error_hides_the_password(
    postgres_server, capsys: pytest.CaptureFixture[str]
) -> None:
    url = postgres_server.url().replace(f":{postgres_server.port}/", f":{_closed_port()}/")
    assert history.main(["sentiment", "--database-url", url]) == 2
    error = capsys.readouterr().err
    assert "cannot read postgresql://postgres:***@127.0.0.1:" in error
    assert postgres_server.password not in error


def _closed_port() -> int:
    return free_port()


def test_history_runs_as_its_own_process(database_url: str) -> None:
    populate(database_url)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlmodel_store.history",
            "sentiment",
            "-n",
            "ml",
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["3", "2", "1"]


def test_console_script(database_url: str) -> None:
    populate(database_url)
    script = Path(sys.executable).parent / "mlmodel"
    result = subprocess.run(
        [str(script), "history", "sentiment", "--namespace", "ml", "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["3", "2", "1"]
