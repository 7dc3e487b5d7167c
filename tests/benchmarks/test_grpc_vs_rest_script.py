"""benchmarks/grpc_vs_rest.py end to end, bounded (one short round of each load), and h2load's report
as the script reads it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from benchkit.h2load import parse_output
from support.markdown import table_rows

# h2load 1.52's report (Debian bookworm's nghttp2-client), trimmed to the lines that are read.
REPORT = """\
finished in 10.00s, 2360.60 req/s, 304.54KB/s
requests: 23606 total, 23638 started, 23606 done, 23600 succeeded, 4 failed, 2 errored, 0 timeout
status codes: 23600 2xx, 0 3xx, 4 4xx, 0 5xx
                     min         max         mean         sd        +/- sd
time for request:   910us     42.36ms     13.47ms      3.72ms    70.25%
"""


def test_h2load_report_is_read_into_calls_failures_and_times() -> None:
    result = parse_output(REPORT)
    assert (result.calls, result.failures, result.seconds) == (23600, 6, 10.0)
    assert result.mean_ms == 13.47 and result.max_ms == 42.36
    assert result.calls_per_second == 2360.0
    short = parse_output(REPORT.replace("finished in 10.00s", "finished in 782.99ms"))
    assert short.seconds == pytest.approx(0.78299)
    with pytest.raises(RuntimeError, match="not as expected"):
        parse_output("connect to 127.0.0.1 failed")


def test_the_loads_are_measured_and_compared(repo_root, tmp_path) -> None:
    completed = subprocess.run(
        [
            sys.executable, str(repo_root / "benchmarks/grpc_vs_rest.py"),
            "--rounds", "1", "--duration", "1", "--concurrency", "4", "--no-save",
        ],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # where its scratch folder goes
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert list(tmp_path.glob("mlmodel-grpc-vs-rest-*")) == []  # removed after a good run
    rows = table_rows(completed.stdout)
    assert rows[0][:2] == ["load", "calls/s (median)"]
    measured = {}
    for load, median, rounds, server_cpu, front_cpu, generator_cpu, per_call, failed in rows[1:]:
        assert rounds == median  # one round: its figure is the median
        measured[load] = [
            float(v.replace(",", ""))
            for v in (median, server_cpu, front_cpu, generator_cpu, per_call, failed)
        ]
    assert set(measured) == {"REST, wrk", "gRPC, h2load", "gRPC, h2load, 1 connection", "gRPC, ghz"}
    for load, (median, server_cpu, front_cpu, generator_cpu, per_call, failed) in measured.items():
        assert (
            median > 0 and server_cpu > 0 and generator_cpu > 0 and per_call >= 1.0 and failed == 0
        )
        # The gRPC front (a Go process of its own) serves gRPC only; it is part of the server.
        assert (front_cpu > 0) == load.startswith("gRPC") and front_cpu < server_cpu
    assert "gRPC, h2load / REST, wrk: **" in completed.stdout
    assert "gRPC, h2load, 1 connection / REST, wrk: **" in completed.stdout
