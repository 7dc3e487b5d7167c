"""The operator's metadata rules, pure: what a status means for the store, which rows are stale,
and a database URL that is refused without being echoed."""

from __future__ import annotations

import os
import subprocess

import pydantic
import pytest
from mlmodel_operator.metadata import Health, health_of, stale_deployments
from mlmodel_operator.settings import OperatorSettings
from support.operator import operator_command


def status(ready: str, degraded: str = "False", reason: str = "AsExpected") -> dict:
    return {
        "conditions": [
            {"type": "Ready", "status": ready, "reason": "X", "message": ""},
            {"type": "Degraded", "status": degraded, "reason": reason, "message": "why"},
        ]
    }


@pytest.mark.parametrize(
    ("current", "reached_ready", "expected"),
    [
        (status("True"), False, Health("ready", "Ready", True)),
        (status("True"), True, Health("ready", "Ready", True)),
        (status("False"), False, Health("status", "Progressing", False)),
        # Degraded before this generation was ever Ready: the rollout failed.
        (
            status("False", "True", "InvalidSpec"),
            False,
            Health("failed", "Failed", False, "InvalidSpec", "why"),
        ),
        # Degraded after Ready: the rollout succeeded; the deployment's health changed.
        (status("False", "True", "CrashLoopBackOff"), True, Health("status", "Degraded", False)),
        ({}, False, Health("status", "Progressing", False)),
    ],
)
def test_health_of_a_status(current: dict, reached_ready: bool, expected: Health) -> None:
    assert health_of(current, reached_ready=reached_ready) == expected


def test_stale_deployments_are_the_unlisted_ones_in_served_namespaces() -> None:
    recorded = [("ml", "a", "uid-a"), ("ml", "b", "uid-b"), ("other", "c", "uid-c")]
    # b was re-created under a new uid: the old incarnation is gone.
    listed = {"uid-a", "uid-b2"}
    assert stale_deployments(recorded, listed, lambda ns: ns == "ml") == [("ml", "b", "uid-b")]
    assert stale_deployments(recorded, listed, lambda ns: True) == [
        ("ml", "b", "uid-b"),
        ("other", "c", "uid-c"),
    ]
    assert stale_deployments(recorded, {"uid-a", "uid-b", "uid-c"}, lambda ns: True) == []


def test_database_url_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLMODEL_OPERATOR_DATABASE_URL", "mysql://app:hunter2@db/meta")
    with pytest.raises(pydantic.ValidationError) as error:
        OperatorSettings()
    assert "unsupported scheme 'mysql'" in str(error.value)
    assert "hunter2" not in str(error.value)

    monkeypatch.setenv("MLMODEL_OPERATOR_DATABASE_URL", "postgresql://app:hunter2@db/meta")
    settings = OperatorSettings()
    assert settings.database_url is not None
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())

    monkeypatch.setenv("MLMODEL_OPERATOR_DATABASE_URL", "")  # an empty optional Secret key
    assert OperatorSettings().database_url is None


def test_the_operator_refuses_an_unsupported_database_at_start_up() -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLMODEL_")}
    environment["MLMODEL_OPERATOR_DATABASE_URL"] = "mysql://app:hunter2@db/meta"
    result = subprocess.run(
        [*operator_command(), "--standalone"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "unsupported scheme 'mysql'" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr
