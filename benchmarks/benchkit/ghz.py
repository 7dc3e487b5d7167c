"""gRPC load with `ghz` (github.com/bojand/ghz, Go): ModelInfer calls at a fixed concurrency for a
fixed time, parsed into the same LoadResult as wrk's. ghz is built from the Go module proxy into a
cache folder on first use (never committed); it needs only the .proto, no generated code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchkit.wrk import LoadResult

GHZ_MODULE = "github.com/bojand/ghz/cmd/ghz@v0.93.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlmodel-bench" / "ghz"
PROTO = (
    Path(__file__).resolve().parents[2]
    / "runtime" / "mlmodel_runtime" / "protocol" / "open_inference.proto"
)  # fmt: skip
CALL = "inference.GRPCInferenceService/ModelInfer"
BUILD_TIMEOUT_SECONDS = 1200


def ensure_ghz() -> Path:
    """The ghz binary: on PATH, in the cache, or built there with `go install` (needs Go)."""
    found = shutil.which("ghz")
    if found:
        return Path(found)
    binary = CACHE / "bin" / "ghz"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("ghz is not installed and Go is not there to build it (see benchmarks/README.md)")
    print(f"building ghz into {binary.parent} (once)", file=sys.stderr)
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [go, "install", GHZ_MODULE],
        env={**os.environ, "GOBIN": str(binary.parent), "GOFLAGS": "-mod=mod"},
        cwd=CACHE,
        check=True,
        timeout=BUILD_TIMEOUT_SECONDS,
    )
    return binary


def write_messages(path: Path, messages: list[dict]) -> Path:
    """ModelInferRequests in protobuf's JSON form (bytes fields base64); ghz sends them in turn."""
    path.write_text(json.dumps(messages), encoding="utf-8")
    return path


def ghz_command(
    ghz: Path, target: str, messages: Path, *, concurrency: int, seconds: float
) -> list[str]:
    return [
        str(ghz),
        "--insecure",
        f"--proto={PROTO}",
        f"--import-paths={PROTO.parent}",
        f"--call={CALL}",
        f"--data-file={messages}",
        f"--concurrency={concurrency}",
        # One connection per concurrent caller, as wrk opens one per connection-level client:
        # with several workers each connection lands on one of them (SO_REUSEPORT).
        f"--connections={concurrency}",
        f"--duration={max(1, round(seconds))}s",
        "--timeout=10s",
        "--cpus=1",  # like wrk's one thread: the cores are left to the server
        "--format=json",
        target,
    ]


# What ghz reports for the calls it cuts off itself when --duration is up: not server errors.
STOPPED_BY_GHZ = ("transport is closing", "context canceled", "grpc: the client connection is closing")


def parse_report(report: dict) -> LoadResult:
    percentiles = {item["percentage"]: item["latency"] for item in report.get("latencyDistribution") or ()}
    statuses = report.get("statusCodeDistribution") or {}
    ok = statuses.get("OK", 0)
    errors = sum(
        count
        for message, count in (report.get("errorDistribution") or {}).items()
        if not any(cut in message for cut in STOPPED_BY_GHZ)
    )
    return LoadResult(
        requests=ok,
        seconds=report["total"] / 1e9,
        status_errors=errors,
        socket_errors=0,
        p50_ms=percentiles.get(50, 0) / 1e6,
        p90_ms=percentiles.get(90, 0) / 1e6,
        p99_ms=percentiles.get(99, 0) / 1e6,
        max_ms=report.get("slowest", 0) / 1e6,
    )


def run_ghz(target: str, messages: Path, *, concurrency: int, seconds: float) -> LoadResult:
    command = ghz_command(ensure_ghz(), target, messages, concurrency=concurrency, seconds=seconds)
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if completed.returncode != 0 and not completed.stdout.startswith("{"):
        raise RuntimeError(f"ghz failed ({completed.returncode}): {completed.stderr[-2000:]}")
    report = json.loads(completed.stdout)
    result = parse_report(report)
    if result.requests == 0:
        errors = sorted((report.get("errorDistribution") or {}).items(), key=lambda item: -item[1])
        raise RuntimeError(f"ghz: no call succeeded; most frequent errors: {errors[:3]}")
    return result
