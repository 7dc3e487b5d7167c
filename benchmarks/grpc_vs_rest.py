#!/usr/bin/env python3
"""Our gRPC against our REST with load generators of the same weight: one `mlmodel serve` of the
sentiment example, the same review sentence in every call, loaded in turn by wrk (REST, C), h2load
(gRPC, nghttp2's C client; once with a connection per caller, as wrk, and once with every call on
one connection, as one gRPC channel sends them) and ghz (gRPC, Go, what `benchmarks/serving.py`
uses), for several rounds. On a 2-core machine the load generator shares the cores with the
server, so its own CPU per call matters: ghz spends several times what wrk does on a call. Prints
calls/s, the server's CPU per call (and the gRPC front's part of it) and the generator's, and the
server's rows per model call. Failed calls are what wrk
and ghz report, and for h2load (which sees HTTP 200 only: a gRPC status travels in the trailers)
the server's own count of gRPC answers other than OK.

    .venv/bin/python benchmarks/grpc_vs_rest.py                    # 3 rounds of 10 s, c=32, 1 worker
    .venv/bin/python benchmarks/grpc_vs_rest.py --rounds 1 --duration 2 --concurrency 4
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from benchkit.ghz import run_ghz, write_messages
from benchkit.h2load import run_h2load, write_message
from benchkit.payloads import grpc_messages, review_sentences, v2_infer_body
from benchkit.procs import (
    ServerProcess,
    children_cpu_seconds,
    cpu_seconds,
    free_port,
    process_name,
    process_tree,
)
from benchkit.report import table as markdown_table
from benchkit.scrape import batch_totals, scrape, total
from benchkit.servers import MODEL_NAME, ours, server_environment
from benchkit.wrk import run_wrk, write_bodies
from google.protobuf import json_format
from mlmodel_runtime.protocol import open_inference_pb2 as pb
from mlmodel_runtime.shared_front import BINARY as FRONT_BINARY

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FRONT_NAME = FRONT_BINARY[:15]  # the front's command name, as the kernel cuts it (15 bytes)
LOADS = ("REST, wrk", "gRPC, h2load", "gRPC, h2load, 1 connection", "gRPC, ghz")


@dataclasses.dataclass(frozen=True)
class Run:
    load: str
    calls_per_second: float
    server_cpu_us: float
    front_cpu_us: float  # the part of server_cpu_us spent in the gRPC fronts (Go)
    generator_cpu_us: float
    rows_per_model_call: float
    failed: int


def failed_grpc_calls(url: str) -> float:
    """ModelInfer calls answered other than OK so far, from the runtime's own counter."""
    samples = scrape(url)
    return total(samples, "mlmodel_requests_total", endpoint="grpc_model_infer") - total(
        samples, "mlmodel_requests_total", endpoint="grpc_model_infer", code="200"
    )


def check_grpc_body(target: str, message: bytes, workers: int, timeout: float = 120) -> None:
    """The message h2load posts, sent by a real gRPC client until it is answered ten times per
    worker in a row, each on a fresh connection (the kernel hashes connections over the workers;
    each loads the model on its own, and one still loading answers UNAVAILABLE)."""
    deadline, answered = time.monotonic() + timeout, 0
    while answered < 10 * workers:
        with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            try:
                answer = pb.ModelInferResponse.FromString(infer(message, timeout=10))
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:  # type: ignore[attr-defined]
                    raise
                answered = 0
                time.sleep(0.5)
                continue
        if not answer.outputs:
            raise RuntimeError(f"the gRPC message got an answer without outputs: {answer}")
        answered += 1


def measure(
    load: str,
    fire: Callable[[float], tuple[int, int, float]],
    server: ServerProcess,
    metrics: str,
    seconds: float,
) -> Run:
    """``fire`` loads the server for about ``seconds``: (calls answered, calls failed, seconds of
    load as its generator timed it)."""
    time.sleep(0.5)  # calls the last ghz run cut off at its end are counted (cancelled) by now
    pids = process_tree(server.pid)
    fronts = [pid for pid in pids if process_name(pid).startswith(FRONT_NAME)]
    server_before, generator_before = cpu_seconds(pids), children_cpu_seconds()
    front_before = cpu_seconds(fronts)
    calls_before, rows_before = batch_totals(metrics)
    answered, failed, elapsed = fire(seconds)
    server_cpu = cpu_seconds(pids) - server_before
    front_cpu = cpu_seconds(fronts) - front_before
    generator_cpu = children_cpu_seconds() - generator_before
    calls, rows = batch_totals(metrics)
    return Run(
        load=load,
        calls_per_second=answered / elapsed,
        server_cpu_us=1e6 * server_cpu / max(answered, 1),
        front_cpu_us=1e6 * front_cpu / max(answered, 1),
        generator_cpu_us=1e6 * generator_cpu / max(answered, 1),
        rows_per_model_call=(rows - rows_before) / max(calls - calls_before, 1),
        failed=failed,
    )


def table(runs: list[Run]) -> list[str]:
    rows = []
    for load in LOADS:
        mine = [run for run in runs if run.load == load]
        rows.append([
            load,
            f"{statistics.median(r.calls_per_second for r in mine):,.0f}",
            ", ".join(f"{r.calls_per_second:,.0f}" for r in mine),
            f"{statistics.median(r.server_cpu_us for r in mine):,.0f}",
            f"{statistics.median(r.front_cpu_us for r in mine):,.0f}",
            f"{statistics.median(r.generator_cpu_us for r in mine):,.0f}",
            f"{statistics.median(r.rows_per_model_call for r in mine):.1f}",
            str(sum(r.failed for r in mine)),
        ])  # fmt: skip
    lines = markdown_table(
        ["load", "calls/s (median)", "each round", "server CPU µs/call", "of which gRPC front",
         "generator CPU µs/call",
         "rows per model call", "failed"],
        rows,
    )  # fmt: skip
    rest = statistics.median(r.calls_per_second for r in runs if r.load == LOADS[0])
    for load in LOADS[1:]:
        grpc_rate = statistics.median(r.calls_per_second for r in runs if r.load == load)
        lines.append(f"\n{load} / REST, wrk: **{grpc_rate / rest:.2f}x**")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load and round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-save", action="store_true", help="print only; write nothing to results/")
    args = parser.parse_args(argv)

    text = review_sentences(1)[0]
    folder = Path(tempfile.mkdtemp(prefix="mlmodel-grpc-vs-rest-"))
    bodies = write_bodies(folder / "bodies.txt", [v2_infer_body([text])])
    (as_json,) = grpc_messages([text], 1, MODEL_NAME)
    messages = write_messages(folder / "messages.json", [as_json])
    message = json_format.ParseDict(as_json, pb.ModelInferRequest()).SerializeToString()
    grpc_body = write_message(folder / "message.bin", message)

    port, grpc_port = free_port(), free_port()
    spec = ours(args.workers)  # as benchmarks/serving.py starts it
    assert spec.grpc_args is not None
    server = ServerProcess.start(
        spec.name,
        spec.command(Path(sys.executable).parent, port) + spec.grpc_args(grpc_port),
        env=server_environment(spec, port), cwd=folder, log_path=folder / "server.log",
    )  # fmt: skip
    runs: list[Run] = []
    try:
        metrics = f"http://127.0.0.1:{port}"
        server.wait_ready(f"{metrics}/v2/models/{MODEL_NAME}/ready", timeout=120)
        target = f"127.0.0.1:{grpc_port}"
        check_grpc_body(target, message, args.workers)
        infer_url = f"{metrics}/v2/models/{MODEL_NAME}/infer"
        grpc_url = f"http://{target}/inference.GRPCInferenceService/ModelInfer"
        c = args.concurrency
        rate = [0.0]  # calls/s of the last REST run: h2load's call count for about as long

        def rest(seconds: float) -> tuple[int, int, float]:
            result = run_wrk(infer_url, bodies, concurrency=c, seconds=seconds)
            rate[0] = result.requests_per_second
            return result.requests - result.errors, result.errors, result.seconds

        def h2load(seconds: float, one_connection: bool = False) -> tuple[int, int, float]:
            before = failed_grpc_calls(metrics)
            calls = max(c, int(rate[0] * seconds))
            result = run_h2load(
                grpc_url, grpc_body, concurrency=c, calls=calls, one_connection=one_connection
            )
            failed = int(failed_grpc_calls(metrics) - before) + result.failures
            if failed:  # which: the HTTP/2 failures and the server's gRPC answers by code
                codes = {
                    item.labels["code"]: item.value
                    for item in scrape(metrics)
                    if item.name == "mlmodel_requests_total"
                    and item.labels.get("endpoint") == "grpc_model_infer"
                }
                print(f"  h2load: {result.failures} failed in HTTP/2; codes: {codes}", file=sys.stderr)
            return result.calls - failed, failed, result.seconds

        def ghz(seconds: float) -> tuple[int, int, float]:
            result = run_ghz(target, messages, concurrency=c, seconds=seconds)
            return result.requests, result.errors, result.seconds

        def h2load_one_connection(seconds: float) -> tuple[int, int, float]:
            return h2load(seconds, one_connection=True)

        fires = dict(zip(LOADS, (rest, h2load, h2load_one_connection, ghz), strict=True))
        for fire in fires.values():  # warm-up, and REST's rate for h2load's first count
            fire(min(2.0, args.duration))
        for round_number in range(1, args.rounds + 1):
            for load, fire in fires.items():
                run = measure(load, fire, server, metrics, args.duration)
                runs.append(run)
                print(
                    f"  round {round_number} {load:26} {run.calls_per_second:8,.0f} calls/s  server "
                    f"{run.server_cpu_us:5,.0f} µs (front {run.front_cpu_us:4,.0f})  generator "
                    f"{run.generator_cpu_us:5,.0f} µs/call  "
                    f"{run.rows_per_model_call:4.1f} rows/model call  failed {run.failed}",
                    file=sys.stderr,
                )
    finally:
        server.stop()
    shutil.rmtree(folder, ignore_errors=True)  # kept when the run failed: its server.log says why

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"# gRPC against REST, same server, same text: {stamp}",
        "",
        (
            f"`benchmarks/grpc_vs_rest.py {' '.join(sys.argv[1:] if argv is None else argv)}`: "
            f"{args.workers} worker(s), {c} connections with one call in flight on each (and "
            f"{c} calls in flight on one connection for h2load's second load), "
            f"{args.rounds} round(s) of {args.duration:g} s per load, the loads in turn; load "
            f"average at the end {os.getloadavg()[0]:.2f}. Text: {text!r}."
        ),
        "",
        *table(runs),
    ]
    print("\n".join(lines))
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{time.strftime('%Y-%m-%d', time.gmtime())}-vm-grpc-vs-rest-w{args.workers}.md"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"written: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
