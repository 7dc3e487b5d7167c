"""Compare batching settings of our runtime on the sentiment example: maxWaitMs and maxBatchSize,
with 1 and 2 workers, at 16 texts x 8 connections and 1 text x 32 connections.

    .venv/bin/python benchmarks/batch_wait.py            # about 3 minutes

Each setting is served from a copy of examples/sentiment/mlmodel.yaml in a temporary folder and
loaded with wrk (the same bodies and load generator as benchmarks/serving.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchkit.manifests import example_manifest
from benchkit.payloads import review_sentences, v2_bodies
from benchkit.procs import free_port
from benchkit.wrk import run_wrk, write_bodies

EXAMPLE = HERE.parent / "examples" / "sentiment"
MLMODEL = Path(sys.executable).with_name("mlmodel")
SETTINGS = [(1.0, 64), (0.0, 64), (0.0, 128)]  # (maxWaitMs, maxBatchSize)
LOADS = [(16, 8), (1, 32)]  # (texts per request, connections)


def manifest_with(folder: Path, wait_ms: float, batch_size: int) -> Path:
    return example_manifest(
        EXAMPLE, folder, f"mlmodel-{wait_ms:g}-{batch_size}",
        batching={"maxWaitMs": wait_ms, "maxBatchSize": batch_size},
    )  # fmt: skip


def serve(manifest: Path, workers: int, port: int, cache: Path) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [str(MLMODEL), "serve", str(manifest), "--port", str(port), "--workers", str(workers)],
        env={**os.environ, "MLMODEL_CACHE_DIR": str(cache), "MLMODEL_ACCESS_LOG": "true"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/sentiment/ready", timeout=1)
            return server
        except OSError:
            time.sleep(0.2)
    os.killpg(server.pid, signal.SIGKILL)
    raise SystemExit("the runtime did not become ready within 60 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    args = parser.parse_args(argv)
    texts = review_sentences(2000)
    print(f"load average at start: {os.getloadavg()}")
    print("| texts/request x connections | workers | maxWaitMs | maxBatchSize | texts/s | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        for per_request, connections in LOADS:
            bodies = write_bodies(folder / f"bodies-{per_request}.txt", v2_bodies(texts, per_request, 500))
            for workers in (1, 2):
                for wait_ms, batch_size in SETTINGS:
                    port = free_port()
                    server = serve(manifest_with(folder, wait_ms, batch_size), workers, port, folder / "cache")
                    try:
                        url = f"http://127.0.0.1:{port}/v2/models/sentiment/infer"
                        run_wrk(url, bodies, concurrency=connections, seconds=3)  # warm-up
                        result = run_wrk(url, bodies, concurrency=connections, seconds=args.duration)
                    finally:
                        os.killpg(server.pid, signal.SIGTERM)
                        server.wait(timeout=30)
                    print(
                        f"| {per_request} x {connections} | {workers} | {wait_ms:g} | {batch_size} | "
                        f"{result.requests_per_second * per_request:,.0f} | {result.p99_ms:.1f} | {result.errors} |",
                        flush=True,
                    )
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
