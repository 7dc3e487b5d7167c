"""The user-facing k6 script, run by a real k6 (built from tests/tools/modules/k6) against a real
local runtime for a few seconds, and its thresholds made to fail on cue.

The thresholds asserted are about correctness: no failed request, every check passed, each
protocol really exercised. The latency bound passed to the passing run (MAX_P99_MS=5000) is only
a sanity bound: this machine is shared with builds and other test runs, so no latency figure is
asserted; the run that must fail on latency uses a bound no HTTP round trip can meet.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

# The first test may build k6 (4-7 min cold on the 2-core machine; `make test` builds it before
# pytest); every k6 run has its own timeout below.
pytestmark = pytest.mark.timeout(1200)

THRESHOLDS_FAILED = 99  # k6's exit code when a threshold is crossed
SCRIPT_EXCEPTION = 107  # k6's exit code when the script fails (here: setup's readiness check)
CHECKS = (
    "v2 status is 200",
    "v2 one prediction per row",
    "v1 status is 200",
    "v1 one prediction per row",
)


@dataclass
class K6Run:
    code: int
    log: str
    summary: dict[str, Any]  # k6's --summary-export; empty when the run ended before its summary

    def crossed(self) -> set[str]:
        """The thresholds k6 reports as crossed, as 'metric: expression'."""
        return {
            f"{metric}: {expression}"
            for metric, values in self.summary["metrics"].items()
            for expression, failed in values.get("thresholds", {}).items()
            if failed
        }


@pytest.fixture(scope="module")
def k6(repo_root: Path) -> Path:
    built = subprocess.run(
        ["bash", str(repo_root / "tests/tools/build.sh"), "k6"],
        capture_output=True,
        text=True,
        timeout=1100,  # inside the module's pytest timeout, so a stuck build says so here
        check=False,
    )
    assert built.returncode == 0, f"k6 did not build:\n{built.stderr}"
    return Path(built.stdout.split()[-1])


def run_k6(k6: Path, repo_root: Path, out: Path, url: str, seconds: int, **env: str) -> K6Run:
    summary = out / "summary.json"
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": str(out),  # no K6_* option or user config of the machine leaks in
        "BASE_URL": url,
        "VUS": "4",
        "DURATION": f"{seconds}s",
        **env,
    }
    completed = subprocess.run(
        [
            str(k6),
            "run",
            "--quiet",
            "--no-color",
            "--no-usage-report",
            "--summary-export",
            str(summary),
            str(repo_root / "examples/loadtest/k6.js"),
        ],
        env=environment,
        cwd=out,
        capture_output=True,
        text=True,
        timeout=seconds + 90,
        check=False,
    )
    exported = json.loads(summary.read_text()) if summary.exists() else {}
    return K6Run(completed.returncode, completed.stdout + completed.stderr, exported)


def served_requests(url: str) -> dict[tuple[str, str], float]:
    """The runtime's own request counters, by (endpoint, status code); its scrapes left out."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.labels["endpoint"], sample.labels["code"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "mlmodel_requests"
        for sample in family.samples
        if sample.name == "mlmodel_requests_total" and sample.labels["endpoint"] != "metrics"
    }


def served_between(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    """The requests served between two readings of served_requests, zeros left out."""
    return {key: n - before.get(key, 0) for key, n in after.items() if n != before.get(key, 0)}


def test_k6_run_against_the_runtime_meets_its_thresholds(k6, repo_root, runtime_url, tmp_path):
    before = served_requests(runtime_url)
    run = run_k6(
        k6, repo_root, tmp_path, runtime_url, seconds=6, MAX_FAILURE_RATIO="0", MAX_P99_MS="5000"
    )
    after = served_requests(runtime_url)

    assert run.code == 0, run.log
    metrics = run.summary["metrics"]
    assert run.crossed() == set()
    assert set(metrics) >= {
        "http_req_duration{protocol:v2}",
        "http_req_duration{protocol:v1}",
        "http_reqs{protocol:v2}",
        "http_reqs{protocol:v1}",
    }
    v2 = metrics["http_reqs{protocol:v2}"]["count"]
    v1 = metrics["http_reqs{protocol:v1}"]["count"]
    assert v2 > 0 and v1 > 0
    assert metrics["http_req_failed"]["value"] == 0
    checks = run.summary["root_group"]["checks"]
    assert set(checks) == set(CHECKS)
    assert all(check["fails"] == 0 and check["passes"] > 0 for check in checks.values()), checks
    assert metrics["checks"]["fails"] == 0
    # The server answered what k6 counted: every request it sent was a 200 of that protocol.
    assert served_between(before, after) == {
        ("v2_model_ready", "200"): 1,  # setup's readiness check
        ("v2_infer", "200"): v2,
        ("v1_predict", "200"): v1,
    }


def test_k6_fails_the_run_when_requests_fail(k6, repo_root, runtime_url, tmp_path):
    # A V2 input the model does not have: every infer request is a 400.
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps(
            {"inputs": [{"name": "review", "shape": [1], "datatype": "BYTES", "data": ["fine"]}]}
        )
    )
    run = run_k6(
        k6, repo_root, tmp_path, runtime_url, seconds=3, REQUEST=str(request), PROTOCOLS="v2"
    )
    assert run.code == THRESHOLDS_FAILED, run.log
    assert run.crossed() == {"http_req_failed: rate<=0.01", "checks: rate>=0.99"}
    # Every infer request failed (in k6's export a Rate's "passes" are its non-zero samples); the
    # one request that did not is setup's readiness check.
    failed = run.summary["metrics"]["http_req_failed"]
    assert failed["passes"] == run.summary["metrics"]["http_reqs{protocol:v2}"]["count"] > 0
    assert failed["fails"] == 1
    checks = run.summary["root_group"]["checks"]
    assert checks["v2 status is 200"]["passes"] == 0 and checks["v2 status is 200"]["fails"] > 0


def test_k6_fails_the_run_on_a_slow_p99(k6, repo_root, runtime_url, tmp_path):
    # A tenth of a millisecond: below any HTTP round trip through the runtime, whatever the machine.
    run = run_k6(k6, repo_root, tmp_path, runtime_url, seconds=3, MAX_P99_MS="0.1")
    assert run.code == THRESHOLDS_FAILED, run.log
    assert run.crossed() == {
        "http_req_duration{protocol:v2}: p(99)<=0.1",
        "http_req_duration{protocol:v1}: p(99)<=0.1",
    }
    assert run.summary["metrics"]["http_req_failed"]["value"] == 0


def test_k6_stops_before_the_load_when_the_model_is_not_served(
    k6, repo_root, runtime_url, tmp_path
):
    before = served_requests(runtime_url)
    run = run_k6(k6, repo_root, tmp_path, runtime_url, seconds=3, MODEL="no-such-model")
    after = served_requests(runtime_url)
    assert run.code == SCRIPT_EXCEPTION, run.log
    assert "/v2/models/no-such-model/ready answered 404" in run.log
    assert served_between(before, after) == {("v2_model_ready", "404"): 1}
