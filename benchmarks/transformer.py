#!/usr/bin/env python3
"""The MiniLM transformer example (examples/sentiment-minilm) served by our runtime and by MLServer
running the same ONNX graph, loaded with wrk, beside the model's own rate in-process (the ceiling);
then our runtime with adaptive batching off, and with several maxWaitMs. Prints Markdown tables.

    .venv/bin/python benchmarks/transformer.py            # about 15 minutes
    .venv/bin/python benchmarks/transformer.py --quick    # short runs: proves the harness

Needs wrk and the built artifact (make examples/sentiment-minilm/model.onnx); creates
benchmarks/.venv-mlserver-minilm from requirements-mlserver-minilm.txt on first use.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import datetime
import json
import multiprocessing
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchkit import payloads, venvs
from benchkit.manifests import example_manifest
from benchkit.procs import ServerProcess, free_port
from benchkit.servers import MLSERVER, REPO_ROOT, ServerSpec, server_environment
from benchkit.wrk import LoadResult, run_wrk, write_bodies

EXAMPLE = REPO_ROOT / "examples" / "sentiment-minilm"
ARTIFACT = EXAMPLE / "model.onnx"
NAME = "sentiment-minilm"
INFER_PATH = f"/v2/models/{NAME}/infer"
LOADS = [(1, 1), (1, 8), (1, 32), (16, 1), (16, 8), (16, 32)]  # (texts per request, connections)
TARGET_LOAD = (1, 32)
WAITS_MS = [0.0, 2.0, 5.0, 10.0, 20.0]
CEILING_BATCHES = [1, 16, 32]
TEXT_POOL = 1024
MLSERVER_FOLDER = HERE / "baselines" / "mlserver-minilm"


@dataclasses.dataclass(frozen=True)
class Ours:
    workers: int
    max_batch_size: int
    max_wait_ms: float

    @property
    def name(self) -> str:
        batching = "off" if self.max_batch_size == 1 else f"{self.max_batch_size}/{self.max_wait_ms:g}ms"
        return f"ours-w{self.workers} batching {batching}"


def our_spec(config: Ours, folder: Path) -> ServerSpec:
    """`mlmodel serve` on a copy of the example's manifest with these workers and batching."""
    manifest = example_manifest(
        EXAMPLE, folder, f"mlmodel-{config.workers}-{config.max_batch_size}-{config.max_wait_ms:g}",
        batching={"maxBatchSize": config.max_batch_size, "maxWaitMs": config.max_wait_ms},
    )  # fmt: skip
    return ServerSpec(
        name=config.name,
        description=f"`mlmodel serve`, {config.workers} worker(s), maxBatchSize "
        f"{config.max_batch_size}, maxWaitMs {config.max_wait_ms:g}",
        venv=None,
        requirements=None,
        command=lambda bin_dir, port: [
            *(str(bin_dir / "mlmodel"), "serve", str(manifest), "--host", "127.0.0.1"),
            *("--port", str(port), "--workers", str(config.workers), "--cache-dir", "cache"),
        ],
        env=lambda port: {},
        ready_path=f"/v2/models/{NAME}/ready",
        is_ours=True,
    )


def mlserver_spec(workers: int, batching: bool) -> ServerSpec:
    """The serving benchmark's MLServer, on baselines/mlserver-minilm (our graph, onnxruntime)."""
    extra = {"MLSERVER_PARALLEL_WORKERS": str(workers)}
    if batching:  # MLServer's adaptive batching, read from MLSERVER_MODEL_* like model-settings.json
        extra |= {"MLSERVER_MODEL_MAX_BATCH_SIZE": "32", "MLSERVER_MODEL_MAX_BATCH_TIME": "0.005"}
    return dataclasses.replace(
        MLSERVER,
        name=f"mlserver-w{workers}" + (" batching 32/5ms" if batching else ""),
        description=f"MLServer 1.7.1, baselines/mlserver-minilm (onnxruntime, 1 thread), "
        f"{workers} parallel worker(s), adaptive batching {'32 / 5 ms' if batching else 'off (default)'}",
        venv=".venv-mlserver-minilm",
        requirements="requirements-mlserver-minilm.txt",
        command=lambda bin_dir, port: [*MLSERVER.command(bin_dir, port)[:-1], str(MLSERVER_FOLDER)],
        env=lambda port: {**MLSERVER.env(port), **extra},
        ready_path=f"/v2/models/{NAME}/ready",
        startup_timeout=180.0,
    )


# --- the ceiling: the model called in this machine's processes, no server ----------------------


def _ceiling_worker(batch_size: int, texts: list[str], start_at: float, seconds: float) -> float:
    """Texts/s of the runtime's own model class, calls made for `seconds` from `start_at`."""
    from mlmodel_runtime.onnx_model import OnnxModel

    model = OnnxModel(NAME)
    asyncio.run(model.load(ARTIFACT))
    batches = [texts[i : i + batch_size] for i in range(0, len(texts) - batch_size + 1, batch_size)]
    model.predict_sync(batches[0])
    time.sleep(max(0.0, start_at - time.time()))
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        model.predict_sync(batches[calls % len(batches)])
        calls += 1
    return calls * batch_size / elapsed


def ceiling(texts: list[str], batch_size: int, processes: int, seconds: float) -> float:
    """Texts/s of `processes` model copies running side by side (one intra-op thread each)."""
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 15  # after every process has loaded the model
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
        futures = [
            pool.submit(_ceiling_worker, batch_size, texts, start_at, seconds) for _ in range(processes)
        ]
        return sum(future.result() for future in futures)


# --- load ------------------------------------------------------------------------------------


def smoke(url: str, body: str, timeout: float = 120.0) -> None:
    """One request that must answer label and probabilities. Workers load the model each on its
    own and the kernel spreads connections over them: one may say 503 (loading) a while longer."""
    request = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.loads(response.read())
            break
        except urllib.error.HTTPError as error:
            if error.code != 503 or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    names = [output["name"] for output in answer.get("outputs", [])]
    if names != ["label", "probabilities"]:
        raise RuntimeError(f"unexpected answer: {answer}")


def bench(
    spec: ServerSpec, loads: list[tuple[int, int]], bodies: dict[int, Path], workdir: Path, args
) -> dict[tuple[int, int], LoadResult]:
    if spec.venv is not None and spec.requirements is not None:
        venvs.ensure_venv(HERE / spec.venv, HERE / spec.requirements, workdir / f"{spec.venv}.log")
    bin_dir = (Path(sys.prefix) if spec.venv is None else HERE / spec.venv) / "bin"
    port = free_port()
    server_dir = Path(tempfile.mkdtemp(dir=workdir))
    server = ServerProcess.start(
        spec.name, spec.command(bin_dir, port), env=server_environment(spec, port),
        cwd=server_dir, log_path=server_dir / "server.log",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    results = {}
    try:
        server.wait_ready(url + spec.ready_path, spec.startup_timeout)
        smoke(url + INFER_PATH, bodies[1].read_text(encoding="utf-8").splitlines()[0])
        run_wrk(url + INFER_PATH, bodies[1], concurrency=8, seconds=args.warmup)
        for per_request, connections in loads:
            results[(per_request, connections)] = run_wrk(
                url + INFER_PATH, bodies[per_request], concurrency=connections, seconds=args.duration,
                timeout_seconds=60,
            )  # fmt: skip
    finally:
        server.stop()
    return results


def row(name: str, load: tuple[int, int], result: LoadResult, best_ceiling: float) -> str:
    per_request, connections = load
    texts_per_second = result.requests_per_second * per_request
    return (
        f"| {name} | {per_request} x {connections} | {texts_per_second:,.1f} | "
        f"{100 * texts_per_second / best_ceiling:.0f}% | {result.p50_ms:.0f} | {result.p99_ms:.0f} | "
        f"{result.errors} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=None, help="seconds per measurement (default 10, quick 3)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per server (default 3, quick 1)")
    parser.add_argument("--quick", action="store_true", help="short runs; figures are rough")
    parser.add_argument("--skip-mlserver", action="store_true", help="only our runtime and the ceiling")
    args = parser.parse_args(argv)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0)
    if not ARTIFACT.exists():
        raise SystemExit(f"{ARTIFACT} is missing: make examples/sentiment-minilm/model.onnx")

    texts = payloads.review_sentences(TEXT_POOL)
    import onnxruntime
    from mlmodel_runtime.tokenization import TOKENIZER_METADATA, WordPiece

    metadata = onnxruntime.InferenceSession(str(ARTIFACT)).get_modelmeta().custom_metadata_map
    tokenizer = WordPiece.from_json(metadata[TOKENIZER_METADATA])
    lengths = [len(tokenizer.encode(text)) for text in texts]
    print(f"# MiniLM sentiment serving benchmark, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"\n`benchmarks/transformer.py {' '.join(argv if argv is not None else sys.argv[1:])}`: "
          f"{os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.2f}; "
          f"{TEXT_POOL} one-sentence reviews, {sum(lengths) / len(lengths):.1f} tokens on average "
          f"(longest {max(lengths)}); {args.duration:g} s per measurement with wrk.\n")

    seconds = 2.0 if args.quick else 8.0
    print("## The model in-process (the ceiling)\n")
    print("| batch | 1 process, texts/s | 2 processes, texts/s |\n|---|---|---|")
    best_ceiling = 0.0
    for batch_size in CEILING_BATCHES:
        one, two = ceiling(texts, batch_size, 1, seconds), ceiling(texts, batch_size, 2, seconds)
        best_ceiling = max(best_ceiling, one, two)
        print(f"| {batch_size} | {one:,.1f} | {two:,.1f} |", flush=True)

    with tempfile.TemporaryDirectory() as folder_name:
        workdir = Path(folder_name)
        bodies = {
            n: write_bodies(workdir / f"bodies-{n}.txt", payloads.v2_bodies(texts, n, 256)) for n in (1, 16)
        }
        servers = [
            our_spec(Ours(2, 32, 0.0), workdir),
            our_spec(Ours(2, 1, 0.0), workdir),
            our_spec(Ours(1, 32, 0.0), workdir),
        ]
        if not args.skip_mlserver:
            servers += [mlserver_spec(1, batching=False), mlserver_spec(2, batching=True)]
        print(f"\n## Servers (texts/s as a share of the best ceiling, {best_ceiling:,.1f} texts/s)\n")
        print("| server | texts/request x connections | texts/s | of ceiling | p50 ms | p99 ms | errors |")
        print("|---|---|---|---|---|---|---|")
        target: dict[str, LoadResult] = {}
        for spec in servers:
            try:
                results = bench(spec, LOADS, bodies, workdir, args)
            except (RuntimeError, OSError) as exc:
                print(f"| {spec.name} | failed: {str(exc).splitlines()[0][:150]} | | | | | |", flush=True)
                continue
            for load, result in results.items():
                print(row(spec.name, load, result, best_ceiling), flush=True)
            target[spec.name] = results[TARGET_LOAD]

        print(f"\n## maxWaitMs, ours with 2 workers and maxBatchSize 32, {TARGET_LOAD[0]} text x "
              f"{TARGET_LOAD[1]} connections\n")
        print("| maxWaitMs | texts/s | of ceiling | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|")
        for wait_ms in WAITS_MS:
            spec = our_spec(Ours(2, 32, wait_ms), workdir)
            try:
                result = bench(spec, [TARGET_LOAD], bodies, workdir, args)[TARGET_LOAD]
            except (RuntimeError, OSError) as exc:
                print(f"| {wait_ms:g} | failed: {str(exc).splitlines()[0][:150]} | | | | |", flush=True)
                continue
            target[f"{spec.name} (maxWaitMs run)"] = result
            print(row(f"{wait_ms:g}", TARGET_LOAD, result, best_ceiling).replace(" | 1 x 32", "", 1), flush=True)

    print(f"\n## Targets at {TARGET_LOAD[0]} text x {TARGET_LOAD[1]} connections\n")
    ours = {name: r for name, r in target.items() if name.startswith("ours")}
    best_name = max(ours, key=lambda name: ours[name].requests_per_second)
    best = ours[best_name]
    print(f"- best of ours: {best_name}, {best.requests_per_second:,.1f} texts/s, p99 {best.p99_ms:.0f} ms")
    share = best.requests_per_second / best_ceiling
    print(f"- of the in-process batched ceiling: {100 * share:.0f}% (target 70%): {'met' if share >= 0.7 else 'NOT met'}")
    print(f"- p99 under 250 ms: {'met' if best.p99_ms < 250 else 'NOT met'}")
    mlservers = {name: r for name, r in target.items() if name.startswith("mlserver")}
    if mlservers:
        best_ml = max(mlservers.values(), key=lambda r: r.requests_per_second)
        ratio = best.requests_per_second / best_ml.requests_per_second if best_ml.requests_per_second else 0.0
        print(f"- against the best MLServer setting: {ratio:.2f}x (target 2x): {'met' if ratio >= 2 else 'NOT met'}")
    print(
        "- prediction cache on repeated texts: measured apart, per request in CPU time, by "
        "`benchmarks/cache.py` (`make bench-cache`; docs/cache.md)"
    )
    print(f"\nLoad average at the end: {os.getloadavg()[0]:.2f} (other jobs on this machine count in it).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
