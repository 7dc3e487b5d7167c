"""Load generation with `wrk`: POST a file of request bodies at a fixed concurrency, parse the result."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

LUA_SCRIPT = Path(__file__).with_name("post_bodies.lua")
RESULT_MARK = "WRK_RESULT "


@dataclasses.dataclass(frozen=True)
class LoadResult:
    """What one wrk run measured (latencies in milliseconds)."""

    requests: int
    seconds: float
    status_errors: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def errors(self) -> int:
        return self.status_errors + self.socket_errors

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def write_bodies(path: Path, bodies: Sequence[str]) -> Path:
    """One JSON body per line, as post_bodies.lua reads them."""
    if any("\n" in body for body in bodies):
        raise ValueError("request bodies must be single-line JSON")
    path.write_text("\n".join(bodies) + "\n", encoding="utf-8")
    return path


def wrk_command(
    url: str,
    bodies_file: Path,
    *,
    concurrency: int,
    seconds: float,
    threads: int = 1,
    timeout_seconds: float = 10.0,
    json_header_length: int | None = None,
) -> list[str]:
    # One thread is enough for these request rates and leaves the cores to the server.
    return [
        "wrk",
        f"--threads={min(threads, concurrency)}",
        f"--connections={concurrency}",
        f"--duration={max(1, round(seconds))}s",
        f"--timeout={timeout_seconds:g}s",
        "--latency",
        f"--script={LUA_SCRIPT}",
        url,
        "--",
        str(bodies_file),
        *([str(json_header_length)] if json_header_length is not None else []),
    ]


def parse_output(output: str) -> LoadResult:
    """The JSON line post_bodies.lua prints at the end of a run."""
    for line in output.splitlines():
        if line.startswith(RESULT_MARK):
            data = json.loads(line[len(RESULT_MARK) :])
            break
    else:
        raise ValueError(f"no {RESULT_MARK.strip()} line in the wrk output:\n{output[-2000:]}")
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        status_errors=data["status_errors"],
        socket_errors=(
            data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"]
        ),
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )


def run_wrk(
    url: str,
    bodies_file: Path,
    *,
    concurrency: int,
    seconds: float,
    timeout_seconds: float = 10.0,
    json_header_length: int | None = None,
) -> LoadResult:
    """Run wrk to completion (it stops itself after `seconds`; a hang is cut off well after).
    ``json_header_length``: ``bodies_file`` is one binary-extension body with a header that long."""
    command = wrk_command(
        url,
        bodies_file,
        concurrency=concurrency,
        seconds=seconds,
        timeout_seconds=timeout_seconds,
        json_header_length=json_header_length,
    )
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + timeout_seconds + 30, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"wrk failed ({completed.returncode}): {completed.stderr or completed.stdout}"
        )
    return parse_output(completed.stdout)
