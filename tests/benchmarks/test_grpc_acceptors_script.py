"""benchmarks/grpc_acceptors.py end to end, bounded: two server counts, one short measurement each."""

from __future__ import annotations

import subprocess
import sys

from support.markdown import table_rows


def test_sweep_prints_calls_and_batch_sizes_for_each_server_count(repo_root):
    completed = subprocess.run(
        [
            sys.executable,
            str(repo_root / "benchmarks/grpc_acceptors.py"),
            "--acceptors", "1,2",
            "--max-wait-ms", "0",
            "--concurrency", "8",
            "--seconds", "1",
        ],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    rows = table_rows(completed.stdout)
    assert rows[0][:2] == ["gRPC servers", "calls/s"]
    measured = {}
    for servers, calls, p99, cpu, per_call, errors in rows[1:]:
        measured[int(servers)] = [float(v.replace(",", "")) for v in (calls, p99, cpu, per_call, errors)]
    assert set(measured) == {1, 2}
    for calls, p99, cpu, per_call, errors in measured.values():
        assert calls > 0 and p99 > 0 and cpu > 0 and per_call >= 1.0 and errors == 0
