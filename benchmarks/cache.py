#!/usr/bin/env python3
"""The prediction cache (spec.cache) against no cache: our runtime with one worker serving the
sentiment example (TF-IDF, fast) and the MiniLM example (a transformer, slow), loaded with wrk.

    .venv/bin/python benchmarks/cache.py                 # about 4 minutes
    .venv/bin/python benchmarks/cache.py --duration 5    # shorter points, rougher figures

Three ways to serve each load: no cache; the cache, every request new (each one a miss: a GET, the
model, then a SET); the cache, requests repeating a pool already stored (each one a hit: a GET, no
model). Redis (Debian's redis-server, started here) runs on the same cores as the runtime and wrk.
The hits and misses each point really had are read back from the runtime's /metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from benchkit.manifests import example_manifest
from benchkit.payloads import review_sentences, v2_infer_body
from benchkit.procs import ServerProcess, cpu_seconds, free_port, process_tree
from benchkit.scrape import scrape, total
from benchkit.wrk import LoadResult, run_wrk, write_bodies
from support.redis import RedisServer

EXAMPLES = HERE.parent / "examples"
MLMODEL = Path(sys.executable).with_name("mlmodel")
HIT_POOL = 256  # distinct requests the hit runs repeat, all stored before the run


@dataclasses.dataclass(frozen=True)
class Model:
    name: str
    folder: str
    artifact: str
    loads: tuple[tuple[int, int], ...]  # (texts per request, connections)


MODELS = (
    Model("sentiment", "sentiment", "model.joblib", ((1, 32), (16, 32), (128, 8))),
    Model("sentiment-minilm", "sentiment-minilm", "model.onnx", ((1, 32), (16, 8))),
)


@dataclasses.dataclass
class Point:
    model: str
    per_request: int
    connections: int
    cache: str
    result: LoadResult
    hits: float
    misses: float
    runtime_cpu_us: float  # CPU time of the runtime's processes per request, in µs
    redis_cpu_us: float  # and of redis-server


def manifest(model: Model, folder: Path, cache: bool) -> Path:
    """The example's MLModel with an absolute artifact path, and spec.cache when asked for."""
    redis = {"redis": {"secretRef": {"name": "redis", "key": "url"}}, "ttlSeconds": 3600}
    return example_manifest(
        EXAMPLES / model.folder, folder, f"{model.name}-{'cache' if cache else 'plain'}",
        spec={"cache": redis} if cache else None,
    )  # fmt: skip


def cache_counts(url: str, model: str) -> tuple[float, float]:
    samples = scrape(url)
    name = "mlmodel_cache_requests_total"
    return total(samples, name, model=model, result="hit"), total(samples, name, model=model, result="miss")


def post(url: str, body: str) -> None:
    request = urllib.request.Request(
        url, data=body.encode(), headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


def unique_bodies(texts: list[str], per_request: int, count: int, start: int) -> list[str]:
    """``count`` requests no earlier one repeats: the first text of each carries a serial number."""
    bodies = []
    for index in range(count):
        chunk = [
            texts[(index * per_request + offset) % len(texts)] for offset in range(per_request)
        ]
        chunk[0] = f"{chunk[0]} (review {start + index})"
        bodies.append(v2_infer_body(chunk))
    return bodies


def pool_bodies(texts: list[str], per_request: int) -> list[str]:
    return unique_bodies(texts, per_request, HIT_POOL, start=-HIT_POOL)


def serve(
    model: Model, manifest_path: Path, folder: Path, env: dict[str, str]
) -> tuple[ServerProcess, str]:
    port = free_port()
    server = ServerProcess.start(
        model.name,
        [str(MLMODEL), "serve", str(manifest_path), "--port", str(port), "--grpc-port", "0",
         "--workers", "1"],
        env={**os.environ, "MLMODEL_CACHE_DIR": str(folder / "artifacts"), **env},
        cwd=folder,
        log_path=folder / f"{manifest_path.stem}.log",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    server.wait_ready(f"{url}/v2/health/ready", timeout=120)
    return server, url


@dataclasses.dataclass(frozen=True)
class Target:
    model: Model
    url: str
    server: ServerProcess
    redis: RedisServer


def measure(
    target: Target,
    cache: str,
    per_request: int,
    bodies: Path,
    connections: int,
    args: argparse.Namespace,
    warmup: Path | None = None,
) -> Point:
    """A warm-up with ``warmup`` (default: the same bodies), then the measured run. CPU time is
    what the processes used, which the machine's other work disturbs far less than throughput."""
    name = target.model.name
    infer = f"{target.url}/v2/models/{name}/infer"
    run_wrk(infer, warmup or bodies, concurrency=connections, seconds=args.warmup)
    runtime = process_tree(target.server.pid)
    redis = [target.redis.process.pid] if target.redis.process else []
    before = cache_counts(target.url, name), cpu_seconds(runtime), cpu_seconds(redis)
    result = run_wrk(infer, bodies, concurrency=connections, seconds=args.duration)
    after = cache_counts(target.url, name), cpu_seconds(runtime), cpu_seconds(redis)
    per = 1e6 / max(result.requests, 1)
    return Point(
        name, per_request, connections, cache, result,
        hits=after[0][0] - before[0][0], misses=after[0][1] - before[0][1],
        runtime_cpu_us=(after[1] - before[1]) * per, redis_cpu_us=(after[2] - before[2]) * per,
    )  # fmt: skip


def bench_model(
    model: Model, args: argparse.Namespace, redis: RedisServer, folder: Path
) -> list[Point]:
    texts = review_sentences(2000)
    points: list[Point] = []
    plain_rate: dict[int, float] = {}
    server, url = serve(model, manifest(model, folder, cache=False), folder, {})
    target = Target(model, url, server, redis)
    try:
        for per_request, connections in model.loads:
            bodies = write_bodies(folder / "pool.jsonl", pool_bodies(texts, per_request))
            point = measure(target, "none", per_request, bodies, connections, args)
            result = point.result
            plain_rate[per_request] = result.requests_per_second
            points.append(point)
            print(
                f"{model.name} {per_request}x{connections} none: {result.requests_per_second:,.0f} req/s",
                file=sys.stderr,
            )
    finally:
        server.stop()
    server, url = serve(
        model, manifest(model, folder, cache=True), folder, {"MLMODEL_CACHE_REDIS_URL": redis.url}
    )
    target = Target(model, url, server, redis)
    serial = 0
    try:
        for per_request, connections in model.loads:
            # Every request of a miss run is new, warm-up included; twice what no cache served is
            # plenty of them.
            count = int(plain_rate[per_request] * (args.duration + args.warmup + 1) * 2) + 1000
            warmup = write_bodies(
                folder / "warmup.jsonl", unique_bodies(texts, per_request, count, serial)
            )
            bodies = write_bodies(
                folder / "unique.jsonl", unique_bodies(texts, per_request, count, serial + count)
            )
            serial += 2 * count
            points.append(
                measure(target, "miss", per_request, bodies, connections, args, warmup=warmup)
            )
            pool = pool_bodies(texts, per_request)
            for body in pool:  # stored before the run: every request of it is a hit
                post(f"{url}/v2/models/{model.name}/infer", body)
            bodies = write_bodies(folder / "pool.jsonl", pool)
            points.append(measure(target, "hit", per_request, bodies, connections, args))
            print(f"{model.name} {per_request}x{connections} done", file=sys.stderr)
    finally:
        server.stop()
    return points


def table(points: list[Point]) -> list[str]:
    lines = [
        (
            "| model | texts/request x connections | cache | req/s | texts/s | p50 ms | p99 ms "
            "| errors | hits / misses in the run | runtime CPU µs/request | Redis CPU µs/request |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for point in points:
        result = point.result
        counted = "" if point.cache == "none" else f"{point.hits:,.0f} / {point.misses:,.0f}"
        lines.append(
            f"| {point.model} | {point.per_request} x {point.connections} | {point.cache} | "
            f"{result.requests_per_second:,.0f} | {result.requests_per_second * point.per_request:,.0f} | "
            f"{result.p50_ms:.1f} | {result.p99_ms:.1f} | {result.errors} | {counted} | "
            f"{point.runtime_cpu_us:,.0f} | {point.redis_cpu_us:,.0f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration", type=float, default=12.0, help="seconds per point (default 12)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per load")
    parser.add_argument(
        "--models", default=",".join(model.name for model in MODELS),
        help="which examples (default: all; MiniLM needs `make examples/sentiment-minilm/model.onnx`)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    chosen = [model for model in MODELS if model.name in args.models.split(",")]
    for model in chosen:
        if not (EXAMPLES / model.folder / model.artifact).exists():
            print(f"{EXAMPLES / model.folder / model.artifact} is missing: run `make examples` "
                  f"(or make {EXAMPLES.name}/{model.folder}/{model.artifact})", file=sys.stderr)  # fmt: skip
            return 2
    print(f"load average at start: {tuple(round(x, 2) for x in os.getloadavg())}", flush=True)
    redis = RedisServer()
    redis.start()
    points: list[Point] = []
    try:
        with tempfile.TemporaryDirectory(prefix="mlmodel-bench-cache-") as name:
            for model in chosen:
                points += bench_model(model, args, redis, Path(name))
    finally:
        redis.remove()
    print("\n".join(table(points)))
    print(f"load average at end: {tuple(round(x, 2) for x in os.getloadavg())}")
    return 1 if any(point.result.errors for point in points) else 0


if __name__ == "__main__":
    raise SystemExit(main())
