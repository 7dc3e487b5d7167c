"""benchmarks/operator_scale.py end to end, bounded: a handful of MLModels and a short resync interval."""

from __future__ import annotations

import json
import subprocess
import sys


def test_small_run_reports_settling_requests_and_a_write_free_resync(repo_root, tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            str(repo_root / "benchmarks/operator_scale.py"),
            "--count",
            "6",
            "--namespaces",
            "2",
            "--resync",
            "4",
            "--timeout",
            "60",
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    (saved,) = tmp_path.glob("*-operator.json")
    result = json.loads(saved.read_text())["result"]
    assert result["mlmodels"] == 6
    assert 0 < result["seconds_until_all_settled"] <= result["seconds_until_api_quiet"]
    # Each MLModel needs at least its Deployment, Service, PDB and a status write.
    assert result["api_writes_per_mlmodel"] >= 4
    assert result["api_requests_by_kind"]["create deployments"] == 6
    assert result["operator_rss_peak_mb"] >= result["operator_rss_idle_mb"] > 20
    assert result["idle_resync_requests"] >= 6  # the pass really ran: at least one read per MLModel
    assert result["idle_resync_writes"] == 0
    assert "| idle resync pass: writes (must be 0) | 0 |" in completed.stdout
