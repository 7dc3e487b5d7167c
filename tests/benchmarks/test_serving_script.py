"""benchmarks/serving.py end to end, bounded: our runtime only, one short measurement."""

from __future__ import annotations

import json
import subprocess
import sys


def test_quick_run_against_our_runtime_writes_the_tables(repo_root, tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            str(repo_root / "benchmarks/serving.py"),
            "--quick",
            "--servers",
            "ours-w1",
            "--concurrency",
            "4",
            "--batch-sizes",
            "16",
            "--batch-concurrency",
            "4",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    (markdown,) = tmp_path.glob("*-quick.md")
    (results,) = tmp_path.glob("*-quick.json")
    assert markdown.read_text() in completed.stdout  # what is printed is what is saved

    data = json.loads(results.read_text())
    (server,) = data["servers"]
    assert server["name"] == "ours-w1" and server["failure"] is None
    assert server["ready_seconds"] > 0 and server["idle_rss_mb"] > 10
    cells = {(cell["concurrency"], cell["texts_per_request"]): cell for cell in server["cells"]}
    assert set(cells) == {(4, 1), (4, 16)}
    for cell in cells.values():
        assert cell["requests"] > 0 and cell["errors"] == 0
        assert 0 < cell["p50_ms"] <= cell["p99_ms"]
        assert cell["rss_total_mb"] >= cell["rss_single_mb"] > 10
        assert cell["server_cpu_us_per_request"] > 0
        assert cell["generator_cpu_us_per_request"] > 0  # wrk's or ghz's, reaped after each load
    assert cells[(4, 16)]["texts_per_second"] == cells[(4, 16)]["requests_per_second"] * 16
    assert {c["batch_size"] for c in data["ceilings"]} == {1, 16, 128}
    assert "| c=4, 16 texts/req | ours-w1 |" in markdown.read_text()
    assert {cell["protocol"] for cell in server["cells"]} == {"rest", "grpc"}
    # gRPC beside REST, with what each generator spent per call.
    (protocol_row,) = [line for line in markdown.read_text().splitlines() if line.startswith("| c=4 | ours-w1 |")]
    wrk_us, ghz_us = (float(cell) for cell in protocol_row.strip("| ").split(" | ")[-2:])
    assert wrk_us > 0 and ghz_us > 0
    # The transports alone, with no model: what each costs the server per request.
    transports = {t["transport"]: t for t in data["transports"]}
    assert set(transports) == {
        "REST (uvicorn, uvloop, httptools)", "gRPC (the gRPC front, uvloop)", "gRPC (grpc.aio, uvloop)"
    }
    for empty in transports.values():
        assert empty["requests"] > 0 and empty["errors"] == 0
        assert empty["server_cpu_us_per_request"] > 0
    assert "## The transports alone" in markdown.read_text()
