"""A real server under sustained overload: far more concurrent clients than it may serve, and a
flood of near-limit bodies. It sheds with 503 + Retry-After before reading bodies, its memory stays
flat, and liveness (and readiness: shedding is per request) keeps answering quickly throughout."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from support.runtime import Models, ServerProcess, write_mlmodel

CLIENTS = 600
MAX_CONCURRENT = 64
LOAD_SECONDS = 2.0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class Observed:
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    shed_without_retry_after: int = 0
    rss: list[int] = field(default_factory=list)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers


async def client(port: int, request: bytes, deadline: float, observed: Observed) -> None:
    """One keep-alive connection sending ``request`` until ``deadline``: raw asyncio streams, so a
    single test process can drive hundreds of clients without being the bottleneck itself."""
    writer = None
    try:
        while time.monotonic() < deadline:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                await writer.drain()
                status, headers = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError) as exc:
                observed.errors[type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                writer = None
                continue
            observed.statuses[status] += 1
            if status == 503:
                if not headers.get("retry-after", "").isdigit():
                    observed.shed_without_retry_after += 1
                await asyncio.sleep(0.05)  # a polite client backs off a little
    finally:
        if writer is not None:
            writer.close()


async def hammer(
    server: ServerProcess, body: bytes, clients: int, seconds: float, observed: Observed
) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    request = (
        f"POST /v1/models/slow:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    deadline = time.monotonic() + seconds

    async def sample_rss() -> None:
        while time.monotonic() < deadline:
            observed.rss.append(rss_bytes(server.process.pid))
            await asyncio.sleep(0.1)

    await asyncio.gather(
        sample_rss(), *(client(port, request, deadline, observed) for _ in range(clients))
    )


# Probes like the kubelet's, from their own process so the load generator cannot delay them:
# a fresh connection each time and a 1 s timeout. Prints "path status seconds" lines.
PROBE = """
import http.client, sys, time
port, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    for path in ("/v2/health/live", "/v2/health/ready"):
        started = time.perf_counter()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
            connection.request("GET", path)
            status = connection.getresponse().status
            connection.close()
        except OSError as exc:
            status = type(exc).__name__
        print(path, status, round(time.perf_counter() - started, 4), flush=True)
    time.sleep(0.1)
"""


def run_with_probes(
    server: ServerProcess, body: bytes, clients: int, seconds: float, observed: Observed
) -> dict[str, list[tuple[str, float]]]:
    port = server.url.rsplit(":", 1)[1]
    probe = subprocess.Popen(
        [sys.executable, "-c", PROBE, port, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    try:
        asyncio.run(hammer(server, body, clients, seconds, observed))
        output, _ = probe.communicate(timeout=30)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
    probes: dict[str, list[tuple[str, float]]] = {"/v2/health/live": [], "/v2/health/ready": []}
    for line in output.splitlines():
        path, status, took = line.split()
        probes[path].append((status, float(took)))
    return probes


def start_slow_server(models: Models, tmp_path: Path, start_server) -> tuple[ServerProcess, int]:
    manifest = write_mlmodel(tmp_path / "model", "slow", models.slow)
    server = start_server(
        [str(manifest)],
        env={
            "MLMODEL_MAX_CONCURRENT_REQUESTS": str(MAX_CONCURRENT),
            "MLMODEL_ACCESS_LOG": "false",  # thousands of lines would only slow the test
        },
    )
    server.wait_ready()
    warm = httpx.post(
        f"{server.url}/v1/models/slow:predict", json={"instances": [[1.0]]}, timeout=10
    )
    assert warm.json() == {"predictions": [2.0]}
    return server, rss_bytes(server.process.pid)


def test_sustained_overload_is_shed_while_liveness_answers(
    models: Models, tmp_path: Path, start_server
) -> None:
    server, baseline = start_slow_server(models, tmp_path, start_server)
    observed = Observed()
    probes = run_with_probes(server, b'{"instances": [[1.0]]}', CLIENTS, LOAD_SECONDS, observed)
    live, ready = probes["/v2/health/live"], probes["/v2/health/ready"]
    print(
        f"statuses {dict(observed.statuses)}, errors {dict(observed.errors)}, liveness max "
        f"{max(took for _, took in live) * 1000:.0f} ms over {len(live)} probes, "
        f"RSS {baseline >> 20} -> {max(observed.rss) >> 20} MiB"
    )
    assert set(observed.statuses) == {200, 503}, observed.statuses  # served and shed, nothing else
    assert not observed.errors, observed.errors
    assert observed.shed_without_retry_after == 0
    assert observed.statuses[503] > observed.statuses[200] > MAX_CONCURRENT
    # Every probe answered 200 within the kubelet's default 1 s timeout: a busy pod is not killed,
    # and shedding is per request, so it stays ready (and keeps its share of the traffic).
    assert len(live) >= 5 and {status for status, _ in live} == {"200"}, live
    assert {status for status, _ in ready} == {"200"}, ready
    assert max(observed.rss) - baseline < 100 * 2**20
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    shed = next(
        line for line in metrics.splitlines() if line.startswith("mlmodel_requests_shed_total")
    )
    assert float(shed.split()[-1]) == observed.statuses[503]


def test_a_flood_of_near_limit_bodies_keeps_memory_bounded(
    models: Models, tmp_path: Path, start_server
) -> None:
    server, baseline = start_slow_server(models, tmp_path, start_server)
    # 9 MiB each (the limit is 10 MiB): 24 at once would hold 216 MiB if all were read.
    body = b'{"instances": [[1.0]], "padding": "' + b"x" * (9 * 2**20) + b'"}'
    observed = Observed()
    probes = run_with_probes(server, body, 24, 1.5, observed)
    print(
        f"statuses {dict(observed.statuses)}, errors {dict(observed.errors)}, "
        f"RSS {baseline >> 20} -> {max(observed.rss) >> 20} MiB"
    )
    assert not observed.errors, observed.errors
    assert observed.statuses[200] > 0 and set(observed.statuses) <= {200, 503}
    assert {status for status, _ in probes["/v2/health/live"]} == {"200"}
    # The default budget (MLMODEL_MAX_REQUEST_BYTES_IN_FLIGHT, 64 MiB) bounds what is held.
    assert max(observed.rss) - baseline < 200 * 2**20  # unbounded, 24 bodies would take ~650 MiB
