"""gRPC load with `h2load` (nghttp2's HTTP/2 benchmarking client, C, Debian's nghttp2-client): one
gRPC message posted over and over at a fixed concurrency, one connection per caller and one call
in flight on each, as wrk loads REST (or all the calls on one connection, as one gRPC channel). A
gRPC error still travels as HTTP 200 with grpc-status in the trailers, which h2load does not
read: callers count failed calls from the server's metrics."""

from __future__ import annotations

import dataclasses
import re
import shutil
import struct
import subprocess
from pathlib import Path

FINISHED = re.compile(r"finished in ([\d.]+)(us|ms|s),")
REQUESTS = re.compile(
    r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, "
    r"(\d+) timeout"
)
TIMES = re.compile(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)")
UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclasses.dataclass(frozen=True)
class H2Result:
    """What one h2load run measured: it reports min, max, mean and sd, no percentiles."""

    calls: int  # answered with HTTP 200
    seconds: float
    failures: int  # other HTTP statuses, stream errors and timeouts
    mean_ms: float
    max_ms: float

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0


def write_message(path: Path, message: bytes) -> Path:
    """``message`` (a serialized protobuf) as a gRPC request body: uncompressed, length-prefixed."""
    path.write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)
    return path


def h2load_command(
    url: str, body: Path, *, concurrency: int, calls: int, one_connection: bool = False
) -> list[str]:
    """``concurrency`` connections with one call in flight on each, or with ``one_connection``
    that many calls in flight on one connection (as one gRPC channel sends them)."""
    h2load = shutil.which("h2load")
    if h2load is None:
        raise RuntimeError("h2load is not installed (Debian: apt-get install nghttp2-client)")
    return [
        h2load,
        f"--clients={1 if one_connection else concurrency}",
        f"--max-concurrent-streams={concurrency if one_connection else 1}",
        "--threads=1",  # like wrk's one thread: the cores are left to the server
        f"--requests={calls}",  # a count, not a duration: no call is cut off at the end
        f"--data={body}",
        "--header=content-type: application/grpc",
        "--header=te: trailers",
        url,
    ]


def parse_output(output: str) -> H2Result:
    finished, requests, times = FINISHED.search(output), REQUESTS.search(output), TIMES.search(output)
    if not (finished and requests and times):
        raise RuntimeError(f"h2load's report is not as expected: {output[-2000:]}")
    succeeded, failed, errored, timeout = (int(value) for value in requests.groups())
    return H2Result(
        calls=succeeded,
        seconds=float(finished.group(1)) * UNIT_MS[finished.group(2)] / 1e3,
        failures=failed + errored + timeout,
        mean_ms=float(times.group(5)) * UNIT_MS[times.group(6)],
        max_ms=float(times.group(3)) * UNIT_MS[times.group(4)],
    )


def run_h2load(
    url: str, body: Path, *, concurrency: int, calls: int, one_connection: bool = False
) -> H2Result:
    command = h2load_command(
        url, body, concurrency=concurrency, calls=calls, one_connection=one_connection
    )
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"h2load failed ({completed.returncode}): {completed.stderr[-2000:]}")
    return parse_output(completed.stdout)
