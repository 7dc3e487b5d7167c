"""The user-facing Locust file, run headless for a few seconds against a real local runtime."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path


def run_locust(
    repo_root: Path, url: str, out: Path, seconds: int, **env: str
) -> tuple[int, dict[str, str], str]:
    """Run the locustfile; return its exit code, the Aggregated row of its CSV stats and its log."""
    locust = Path(sys.executable).with_name("locust")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MLMODEL_", "LOCUST_"))}
    environment.update(env)
    completed = subprocess.run(
        [
            str(locust),
            "-f",
            str(repo_root / "examples/loadtest/locustfile.py"),
            "--headless",
            "--users",
            "8",
            "--spawn-rate",
            "8",
            "--run-time",
            f"{seconds}s",
            "--stop-timeout",
            "5",
            "--host",
            url,
            "--csv",
            str(out / "run"),
            "--only-summary",
            "--loglevel",
            "INFO",
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    with open(out / "run_stats.csv", newline="", encoding="utf-8") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    return completed.returncode, rows["Aggregated"], completed.stdout + completed.stderr


def test_locust_run_against_the_runtime_passes_its_thresholds(repo_root, runtime_url, tmp_path):
    code, total, log = run_locust(
        repo_root, runtime_url, tmp_path, seconds=10, MLMODEL_MAX_P99_MS="2000"
    )
    assert code == 0, log
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0, log
    assert "threshold failed" not in log


def test_locust_fails_the_run_when_every_request_fails(repo_root, runtime_url, tmp_path):
    # A model name the runtime does not serve: every answer is a 404.
    code, total, log = run_locust(
        repo_root, runtime_url, tmp_path, seconds=3, MLMODEL_NAME="no-such-model"
    )
    assert code == 1, log
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == int(total["Request Count"])
    assert "threshold failed: failure ratio 100.00%" in log


def test_locust_fails_the_run_on_a_slow_p99(repo_root, runtime_url, tmp_path):
    # Sixteen texts per request take well over a tenth of a millisecond, whatever the machine.
    code, total, log = run_locust(
        repo_root,
        runtime_url,
        tmp_path,
        seconds=3,
        MLMODEL_MAX_P99_MS="0.1",
        MLMODEL_TEXTS_PER_REQUEST="16",
    )
    assert code == 1, log
    assert int(total["Failure Count"]) == 0, log
    assert "threshold failed: p99" in log
