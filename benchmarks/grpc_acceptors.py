#!/usr/bin/env python3
"""How many calls reach the model together over gRPC, by the number of grpc.aio servers a worker
runs without the gRPC front (MLMODEL_GRPC_FRONT=off, MLMODEL_GRPC_ACCEPTORS) and by maxWaitMs:
one worker serving the sentiment example, loaded by ghz with one text per call and one connection
per concurrent caller. Prints calls/s, p99, the server's CPU per call and the rows per model call
(from the runtime's mlmodel_batch_size histogram). No other process of the benchmark runs during a
measurement.

    .venv/bin/python benchmarks/grpc_acceptors.py                        # 1,4,8,16,32 x maxWaitMs 0,2
    .venv/bin/python benchmarks/grpc_acceptors.py --acceptors 1,16 --max-wait-ms 0
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchkit.ghz import run_ghz, write_messages
from benchkit.manifests import example_manifest
from benchkit.payloads import grpc_messages, review_sentences
from benchkit.procs import ServerProcess, cpu_seconds, free_port, http_status, process_tree
from benchkit.scrape import batch_totals
from benchkit.servers import MANIFEST


def measure(
    manifest: Path, acceptors: int, messages: Path, folder: Path, *, concurrency: int, seconds: float
) -> str:
    port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMODEL_")}
    env["MLMODEL_GRPC_FRONT"] = "off"  # the acceptors are grpc.aio's
    env["MLMODEL_GRPC_ACCEPTORS"] = str(acceptors)
    server = ServerProcess.start(
        f"ours-grpc{acceptors}",
        [
            str(Path(sys.executable).parent / "mlmodel"), "serve", str(manifest),
            "--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc_port),
            "--cache-dir", str(folder / "cache"),
        ],
        env=env, cwd=folder, log_path=folder / f"server-{acceptors}.log",
    )  # fmt: skip
    try:
        server.wait_ready(f"http://127.0.0.1:{port}/v2/models/sentiment/ready", timeout=60)
        target = f"127.0.0.1:{grpc_port}"
        run_ghz(target, messages, concurrency=concurrency, seconds=3)  # warm-up
        metrics = f"http://127.0.0.1:{port}"
        calls_before, rows_before = batch_totals(metrics)
        pids = process_tree(server.pid)
        cpu_before = cpu_seconds(pids)
        result = run_ghz(target, messages, concurrency=concurrency, seconds=seconds)
        cpu = cpu_seconds(pids) - cpu_before
        calls, rows = batch_totals(metrics)
        per_call = (rows - rows_before) / max(calls - calls_before, 1)
        assert http_status(f"http://127.0.0.1:{port}/v2/health/live") == 200
    finally:
        server.stop()
    cpu_us = 1e6 * cpu / max(result.requests, 1)
    return (
        f"| {acceptors} | {result.requests_per_second:,.0f} | {result.p99_ms:.1f} | {cpu_us:,.0f} "
        f"| {per_call:.1f} | {result.status_errors + result.socket_errors} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--acceptors", default="1,4,8,16,32", help="MLMODEL_GRPC_ACCEPTORS values")
    parser.add_argument("--max-wait-ms", default="0,2", help="maxWaitMs values")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    args = parser.parse_args(argv)
    acceptors = [int(item) for item in args.acceptors.split(",")]
    waits = [int(item) for item in args.max_wait_ms.split(",")]
    print("# gRPC acceptors: one worker, sentiment example, one text per call\n")
    print(
        f"`benchmarks/grpc_acceptors.py {' '.join(sys.argv[1:] if argv is None else argv)}`: "
        f"{os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.2f}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; ghz with {args.concurrency} "
        f"connections, {args.seconds:g} s per measurement after 3 s of warm-up.\n"
    )
    with tempfile.TemporaryDirectory(prefix="mlmodel-grpc-acceptors-") as tmp:
        folder = Path(tmp)
        messages = write_messages(folder / "messages.json", grpc_messages(review_sentences(1024), 1024))
        for wait in waits:
            manifest = example_manifest(
                MANIFEST.parent, folder, f"mlmodel-wait{wait}", batching={"maxWaitMs": wait}
            )
            print(f"## maxWaitMs {wait}\n")
            print("| gRPC servers | calls/s | p99 ms | server CPU µs/call | rows per model call | errors |")
            print("|---|---|---|---|---|---|")
            for count in acceptors:
                print(measure(manifest, count, messages, folder, concurrency=args.concurrency, seconds=args.seconds), flush=True)
            print()
    print(f"Load average at the end: {os.getloadavg()[0]:.2f}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
