"""The serving benchmark's harness: wrk and its Lua script, process-tree memory, payloads, the report."""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from benchkit import payloads, report
from benchkit.procs import RssSampler, ServerProcess, process_tree
from benchkit.wrk import LoadResult, parse_output, run_wrk, write_bodies


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers 500 to bodies that contain "fail", 200 to the others; remembers what it got."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the servers under test do
    wbufsize = -1  # headers and body leave in one write (handle_one_request flushes)
    disable_nagle_algorithm = True
    bodies: ClassVar[list[bytes]] = []
    failures: ClassVar[int] = 0
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        failed = b"fail" in body
        with self.lock:
            Recorder.bodies.append(body)
            Recorder.failures += failed
        answer = b'{"ok": true}'
        self.send_response(500 if failed else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def recorder() -> Iterator[str]:
    Recorder.bodies, Recorder.failures = [], 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v2/models/m/infer"
    finally:
        server.shutdown()
        server.server_close()


def test_wrk_posts_every_body_in_turn_and_counts_error_answers(recorder, tmp_path):
    bodies = [
        '{"inputs":[{"data":["a"]}]}',
        '{"inputs":[{"data":["b"]}]}',
        '{"inputs":[{"data":["fail"]}]}',
    ]
    result = run_wrk(
        recorder, write_bodies(tmp_path / "bodies.jsonl", bodies), concurrency=2, seconds=1
    )

    assert result.requests > 10
    assert {body.decode() for body in Recorder.bodies} == set(bodies)
    # wrk counts the answers it got; up to one request per connection is cut off by the end of the run.
    assert result.requests <= len(Recorder.bodies) <= result.requests + 2
    assert 0 < result.status_errors <= Recorder.failures <= result.status_errors + 2
    assert result.socket_errors == 0
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
    assert result.requests_per_second == pytest.approx(result.requests / result.seconds)


def test_parse_output_needs_the_result_line():
    with pytest.raises(ValueError, match="WRK_RESULT"):
        parse_output("Running 1s test @ http://127.0.0.1:1/\n  1 threads and 1 connections\n")


def test_bodies_must_be_single_line(tmp_path):
    with pytest.raises(ValueError):
        write_bodies(tmp_path / "b.jsonl", ['{"a":\n1}'])


def test_v2_bodies_hold_the_requested_number_of_texts():
    texts = payloads.review_sentences(20)
    assert len(texts) == 20 and all(isinstance(text, str) and text for text in texts)
    assert payloads.review_sentences(20) == texts  # the same bodies every run
    bodies = [json.loads(body) for body in payloads.v2_bodies(texts, per_request=16, count=3)]
    for body in bodies:
        (tensor,) = body["inputs"]
        assert (
            tensor["datatype"] == "BYTES" and tensor["shape"] == [16] and len(tensor["data"]) == 16
        )
    assert bodies[0]["inputs"][0]["data"][:16] == texts[:16]


ALLOCATING_CHILD = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', "
    "'import time; block = bytearray(64 * 1024 * 1024); block[::4096] = b\"x\" * len(block[::4096]); time.sleep(60)'])\n"
    "time.sleep(60)\n"
)


def test_rss_sampler_follows_the_whole_tree_and_stop_ends_it(tmp_path):
    server = ServerProcess.start(
        "tree",
        [sys.executable, "-c", ALLOCATING_CHILD],
        env=dict(os.environ),
        cwd=tmp_path,
        log_path=tmp_path / "tree.log",
    )
    try:
        deadline = time.monotonic() + 20
        with RssSampler(server.pid, interval=0.05) as sampler:
            while sampler.peak_single_kib < 64 * 1024 and time.monotonic() < deadline:
                time.sleep(0.05)
        tree = process_tree(server.pid)
        assert len(tree) == 2 and tree[0] == server.pid
        assert sampler.processes == 2
        assert sampler.peak_single_mb >= 64
        assert sampler.peak_total_mb > sampler.peak_single_mb  # the parent counts too
    finally:
        server.stop(grace=5)
    assert server.process.returncode is not None
    # Signals are delivered asynchronously: give a loaded machine a moment to finish the child off.
    deadline = time.monotonic() + 5
    while any(running(pid) for pid in tree[1:]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(running(pid) for pid in tree[1:]), "the child outlived the stop"


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan killed with its group waits for init to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def load(rps: float, p99: float) -> LoadResult:
    return LoadResult(
        requests=int(rps * 10),
        seconds=10.0,
        status_errors=0,
        socket_errors=0,
        p50_ms=p99 / 4,
        p90_ms=p99 / 2,
        p99_ms=p99,
        max_ms=p99 * 2,
    )


def test_report_ratios_compare_ours_with_each_alternative():
    scenario = report.Scenario(concurrency=32, batch=1)
    ours = report.ServerRun(
        "ours-w1", "ours", True, cells=[report.Cell(scenario, load(2000, 20), 180, 180, 410)]
    )
    theirs = report.ServerRun(
        "fastapi", "tutorial", False, cells=[report.Cell(scenario, load(800, 80), 150, 150)]
    )
    lines = report.ratio_table([ours, theirs], [scenario])
    assert lines[0] == "| scenario | ours | vs fastapi |"
    assert lines[2] == "| c=32, 1 text/req | ours-w1 | 2.50x req/s, 0.25x p99 |"

    results = "\n".join(report.results_table([ours, theirs], [scenario]))
    assert (
        "| c=32, 1 text/req | ours-w1 | 2,000 | 2,000 | 5.00 | 20.0 | 0 | 410 | 180 | 180 |" in results
    )


def test_report_ceiling_gives_ours_as_a_fraction_of_the_model_alone():
    from benchkit.ceiling import Ceiling

    scenario = report.Scenario(concurrency=8, batch=16)
    ours = report.ServerRun(
        "ours-w2", "ours", True, cells=[report.Cell(scenario, load(500, 20), 300, 160)]
    )
    lines = report.ceiling_table(
        [Ceiling(1, 1000.0, 10), Ceiling(128, 16000.0, 10)], [ours], [scenario]
    )
    assert "| batches of 128 | 16,000 |" in lines
    assert lines[-1] == "| c=8, 16 texts/req | ours-w2 | 8,000 | 50% |"


def test_paste_results_replaces_only_the_marked_section():
    import paste_results

    readme = "intro\n<!-- results:serving -->\nold\n<!-- /results:serving -->\nafter\n"
    spliced = paste_results.splice(readme, "serving", "# Title\n\n| a | b |\n")
    assert spliced == (
        "intro\n<!-- results:serving -->\n### Title\n\n| a | b |\n<!-- /results:serving -->\nafter\n"
    )
    with pytest.raises(ValueError, match="results:operator"):
        paste_results.splice(readme, "operator", "x")
