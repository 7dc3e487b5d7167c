#!/usr/bin/env python3
"""Serve the sentiment example with our runtime, MLServer, a tutorial FastAPI app and a tutorial Flask
app, one after another on this machine, load each with wrk (REST) and ghz (gRPC, for the servers that
have it), and print a Markdown table of the results. Then our runtime with the house-prices example:
a batch of tabular rows as JSON, as binary tensors and over gRPC.

    .venv/bin/python benchmarks/serving.py            # full run, about 12 minutes
    .venv/bin/python benchmarks/serving.py --quick    # the same matrix, short runs (about 4 minutes)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import ceiling, ghz, payloads, report, transport, venvs
from benchkit.procs import (
    RssSampler,
    ServerProcess,
    children_cpu_seconds,
    cpu_seconds,
    free_port,
    process_tree,
)
from benchkit.report import Cell, Scenario, ServerRun
from benchkit.servers import (
    ARTIFACT,
    BENCHMARKS,
    DEFAULT_SERVERS,
    INFER_PATH,
    REPO_ROOT,
    SERVERS,
    Layout,
    ServerSpec,
    server_environment,
)
from benchkit.wrk import LoadResult, run_wrk, write_bodies

TEXT_POOL = 1024  # distinct review sentences the request bodies are cut from
WARMUP_CONCURRENCY = 8
TABULAR_MANIFEST = REPO_ROOT / "examples" / "house-prices" / "mlmodel.yaml"
TABULAR_MODEL = "house-prices"


@dataclasses.dataclass(frozen=True)
class Settings:
    servers: list[str]
    concurrency: list[int]
    grpc_concurrency: list[int]
    batch_sizes: list[int]
    batch_concurrency: int
    tabular_rows: int
    duration: float
    warmup: float
    ceiling_seconds: float
    quick: bool
    setup: bool
    output_dir: Path | None
    project_venv: Path

    @property
    def scenarios(self) -> list[Scenario]:
        wanted = [Scenario(c, 1) for c in self.concurrency]
        wanted += [Scenario(self.batch_concurrency, b) for b in self.batch_sizes]
        wanted += [Scenario(c, 1, "grpc") for c in self.grpc_concurrency]
        return list(dict.fromkeys(wanted))  # (8, 1) may be in both lists


def _int_list(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item.strip()]


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated, from: {', '.join(SERVERS)} (default: {','.join(DEFAULT_SERVERS)})",
    )
    parser.add_argument(
        "--concurrency",
        type=_int_list,
        default=None,
        help="connections for the one-text-per-request runs (default 1,8,32,128)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=_int_list,
        default=None,
        help="texts per request for the batch runs (default 1,16,128)",
    )
    parser.add_argument(
        "--batch-concurrency", type=int, default=8, help="connections for the batch runs"
    )
    parser.add_argument(
        "--grpc-concurrency",
        type=_int_list,
        default=None,
        help="concurrent gRPC calls (and connections) for the one-text gRPC runs, for the servers "
        "that serve gRPC (default: as --concurrency; '' for none)",
    )
    parser.add_argument(
        "--tabular-rows",
        type=int,
        default=128,
        help="rows per request of the tabular JSON/binary/gRPC comparison (0: skip it)",
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per measurement (default 15, quick 3)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of warm-up per server (default 5, quick 1)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs: proves the harness, figures are rough"
    )
    parser.add_argument(
        "--no-setup",
        dest="setup",
        action="store_false",
        help="do not create the MLServer/baseline virtual environments when missing",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=BENCHMARKS / "results",
        help="where to write <date>-<host>.md and .json (default benchmarks/results)",
    )
    parser.add_argument(
        "--no-save",
        dest="output_dir",
        action="store_const",
        const=None,
        help="print only, write no result files",
    )
    parser.add_argument(
        "--project-venv",
        type=Path,
        default=Path(sys.prefix),
        help="environment holding `mlmodel` (default: the one running this script)",
    )
    args = parser.parse_args(argv)
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = sorted(set(servers) - set(SERVERS))
    if unknown:
        parser.error(f"unknown servers: {', '.join(unknown)}")
    return Settings(
        servers=servers,
        concurrency=args.concurrency or [1, 8, 32, 128],
        grpc_concurrency=(
            args.grpc_concurrency
            if args.grpc_concurrency is not None
            else (args.concurrency or [1, 8, 32, 128])
        ),
        batch_sizes=args.batch_sizes or [1, 16, 128],
        batch_concurrency=args.batch_concurrency,
        tabular_rows=args.tabular_rows,
        duration=args.duration or (3.0 if args.quick else 15.0),
        warmup=args.warmup if args.warmup is not None else (1.0 if args.quick else 5.0),
        ceiling_seconds=1.0 if args.quick else 5.0,
        quick=args.quick,
        setup=args.setup,
        output_dir=args.output_dir,
        project_venv=args.project_venv,
    )


def machine_facts(argv: list[str]) -> dict[str, object]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": socket.gethostname(),
        "cores": os.cpu_count(),
        "cpu": cpu_model,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "wrk": (wrk_version.stdout or wrk_version.stderr or "wrk")
        .splitlines()[0]
        .split(" Copyright")[0],
        "command": " ".join(["benchmarks/serving.py", *argv]),
    }


def smoke_test(url: str, body: str) -> None:
    """One request before the load: a server that answers 4xx would make every figure meaningless."""
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    if response.status != 200 or not answer.get("outputs"):
        raise RuntimeError(f"unexpected answer {response.status}: {answer}")


def bench_server(
    spec: ServerSpec,
    settings: Settings,
    layout: Layout,
    bodies: dict[int, Path],
    first_body: str,
    grpc_messages: Path,
) -> ServerRun:
    run = ServerRun(spec.name, spec.description, spec.is_ours)
    if spec.venv is not None and spec.requirements is not None and settings.setup:
        venvs.ensure_venv(
            BENCHMARKS / spec.venv,
            BENCHMARKS / spec.requirements,
            layout.workdir / f"{spec.venv}.log",
        )
    bin_dir = spec.bin_dir(layout)
    port, grpc_port = free_port(), free_port()
    server_dir = layout.workdir / spec.name
    server_dir.mkdir()
    command = spec.command(bin_dir, port) + (spec.grpc_args(grpc_port) if spec.grpc_args else [])
    if not Path(command[0]).exists():
        run.failure = f"{command[0]} not found (run without --no-setup, or install it)"
        return run
    environment = server_environment(spec, port)
    if spec.grpc_env is not None:
        environment.update(spec.grpc_env(grpc_port))
    server = ServerProcess.start(
        spec.name,
        command,
        env=environment,
        cwd=server_dir,
        log_path=layout.workdir / f"{spec.name}.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        run.ready_seconds = server.wait_ready(base + spec.ready_path, spec.startup_timeout)
        time.sleep(0.5)  # let worker processes finish starting before the idle sample
        with RssSampler(server.pid) as idle:
            pass
        run.idle_rss_mb = idle.peak_total_mb
        smoke_test(base + INFER_PATH, first_body)
        if settings.warmup > 0:
            run_wrk(
                base + INFER_PATH,
                bodies[1],
                concurrency=WARMUP_CONCURRENCY,
                seconds=settings.warmup,
            )
        grpc_warmed = False
        for scenario in settings.scenarios:
            if scenario.protocol == "grpc" and not spec.serves_grpc:
                continue
            if scenario.protocol == "grpc" and not grpc_warmed:
                ghz.run_ghz(
                    f"127.0.0.1:{grpc_port}",
                    grpc_messages,
                    concurrency=WARMUP_CONCURRENCY,
                    seconds=max(settings.warmup, 1.0),
                )
                grpc_warmed = True
            cpu_before = cpu_seconds(process_tree(server.pid))
            generator_before = children_cpu_seconds()
            with RssSampler(server.pid) as sampler:
                if scenario.protocol == "grpc":
                    load = ghz.run_ghz(
                        f"127.0.0.1:{grpc_port}",
                        grpc_messages,
                        concurrency=scenario.concurrency,
                        seconds=settings.duration,
                    )
                else:
                    load = run_wrk(
                        base + INFER_PATH,
                        bodies[scenario.batch],
                        concurrency=scenario.concurrency,
                        seconds=settings.duration,
                    )
            requests = max(load.requests, 1)
            cpu_us = 1e6 * (cpu_seconds(process_tree(server.pid)) - cpu_before) / requests
            generator_us = 1e6 * (children_cpu_seconds() - generator_before) / requests
            run.cells.append(
                Cell(scenario, load, sampler.peak_total_mb, sampler.peak_single_mb, cpu_us, generator_us)
            )
            print(
                f"  {spec.name:9} {scenario.label:24} {load.requests_per_second:9.1f} req/s "
                f"p99 {load.p99_ms:8.2f} ms errors {load.errors}",
                file=sys.stderr,
            )
            time.sleep(0.5)  # the closed connections drain before the next level
    except Exception as error:  # noqa: BLE001 - one server failing must not lose the others' figures
        run.failure = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        print(f"{spec.name} failed: {error}", file=sys.stderr)
    finally:
        server.stop()
    return run


@dataclasses.dataclass
class TabularRun:
    """Our runtime (1 worker) serving house-prices: one batch of rows in three encodings."""

    rows: int
    concurrency: int
    loads: dict[str, LoadResult] = dataclasses.field(default_factory=dict)
    body_bytes: dict[str, int] = dataclasses.field(default_factory=dict)
    failure: str | None = None


def bench_tabular(settings: Settings, layout: Layout) -> TabularRun:
    """The same batch of house-prices rows as JSON, as binary tensors (REST) and as gRPC raw
    contents, against `mlmodel serve` of the example with one worker."""
    run = TabularRun(settings.tabular_rows, settings.batch_concurrency)
    request = json.loads((TABULAR_MANIFEST.parent / "request.json").read_text(encoding="utf-8"))
    columns = payloads.tabular_rows(request, settings.tabular_rows)
    folder = layout.workdir / "tabular"
    folder.mkdir()
    json_body = payloads.tabular_json_body(columns)
    json_file = write_bodies(folder / "rows.jsonl", [json_body])
    binary_body, header_length = payloads.tabular_binary_body(columns)
    binary_file = folder / "rows.bin"
    binary_file.write_bytes(binary_body)
    grpc_file = ghz.write_messages(
        folder / "rows-grpc.json", [payloads.tabular_grpc_message(columns, TABULAR_MODEL)]
    )
    run.body_bytes = {"JSON": len(json_body.encode()), "binary": len(binary_body)}
    port, grpc_port = free_port(), free_port()
    mlmodel = settings.project_venv / "bin" / "mlmodel"
    server = ServerProcess.start(
        "tabular",
        [str(mlmodel), "serve", str(TABULAR_MANIFEST), "--host", "127.0.0.1", "--port", str(port),
         "--grpc-port", str(grpc_port), "--workers", "1", "--cache-dir", "cache"],
        env=server_environment(SERVERS["ours-w1"], port),
        cwd=folder,
        log_path=layout.workdir / "tabular.log",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v2/models/{TABULAR_MODEL}/infer"
    try:
        server.wait_ready(f"http://127.0.0.1:{port}/v2/models/{TABULAR_MODEL}/ready", 120)
        smoke_test(url, json_body)
        load = {"concurrency": settings.batch_concurrency, "seconds": settings.duration}
        run_wrk(url, json_file, concurrency=WARMUP_CONCURRENCY, seconds=settings.warmup or 1)
        run.loads["REST, JSON"] = run_wrk(url, json_file, **load)
        run.loads["REST, binary tensors"] = run_wrk(
            url, binary_file, json_header_length=header_length, **load
        )
        run.loads["gRPC, raw contents"] = ghz.run_ghz(
            f"127.0.0.1:{grpc_port}", grpc_file, **load
        )
        for name, result in run.loads.items():
            print(
                f"  tabular   {name:24} {result.requests_per_second:9.1f} req/s "
                f"p99 {result.p99_ms:8.2f} ms errors {result.errors}",
                file=sys.stderr,
            )
    except Exception as error:  # noqa: BLE001 - the serving figures above still count
        run.failure = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        print(f"tabular comparison failed: {error}", file=sys.stderr)
    finally:
        server.stop()
    return run


def tabular_table(run: TabularRun) -> list[str]:
    if run.failure:
        return [f"Not measured: {run.failure}"]
    rows = []
    json_rate = run.loads["REST, JSON"].requests_per_second
    for name, load in run.loads.items():
        rows.append(
            [
                name,
                report.number(load.requests_per_second),
                report.number(load.requests_per_second * run.rows),
                report.number(load.p50_ms),
                report.number(load.p99_ms),
                str(load.errors),
                f"{load.requests_per_second / json_rate:.2f}x" if json_rate else "-",
            ]
        )
    return report.table(
        ["encoding", "req/s", "rows/s", "p50 ms", "p99 ms", "errors", "vs JSON"], rows
    )


def transport_table(runs: list[transport.TransportRun]) -> list[str]:
    rows = [
        [
            run.transport,
            report.number(run.load.requests_per_second),
            report.number(run.load.p50_ms),
            report.number(run.load.p99_ms),
            str(run.load.errors),
            f"{run.cpu_us_per_request:.0f}",
        ]
        for run in runs
    ]
    return report.table(
        ["transport", "req/s", "p50 ms", "p99 ms", "errors", "server CPU µs/req"], rows
    )


def protocol_table(runs: list[ServerRun], scenarios: list[Scenario]) -> list[str]:
    """gRPC throughput over REST throughput, same server, same concurrency, one text per call."""
    rows = []
    for run in runs:
        for scenario in scenarios:
            if scenario.protocol != "grpc":
                continue
            grpc_cell = run.cell(scenario)
            rest_cell = run.cell(Scenario(scenario.concurrency, scenario.batch))
            if grpc_cell is None or rest_cell is None or not rest_cell.load.requests_per_second:
                continue
            ratio = grpc_cell.load.requests_per_second / rest_cell.load.requests_per_second
            rows.append(
                [
                    f"c={scenario.concurrency}",
                    run.name,
                    report.number(rest_cell.load.requests_per_second),
                    report.number(grpc_cell.load.requests_per_second),
                    f"{ratio:.2f}x",
                    f"{rest_cell.generator_cpu_us_per_request:.0f}",
                    f"{grpc_cell.generator_cpu_us_per_request:.0f}",
                ]
            )
    if not rows:
        return []
    return report.table(
        ["concurrency", "server", "REST req/s", "gRPC req/s", "gRPC / REST",
         "wrk CPU µs/req", "ghz CPU µs/call"],
        rows,
    )  # fmt: skip


def render(
    settings: Settings,
    meta: dict[str, object],
    runs: list[ServerRun],
    ceilings: list[ceiling.Ceiling],
    tabular: TabularRun | None = None,
    transports: list[transport.TransportRun] | None = None,
) -> str:
    scenarios = settings.scenarios
    load_start = ", ".join(str(x) for x in meta["load_average_at_start"])  # type: ignore[attr-defined]
    load_end = ", ".join(str(x) for x in meta.get("load_average_at_end", []))  # type: ignore[attr-defined]
    lines = [
        f"# Serving benchmark: sentiment example, {meta['date']}",
        "",
        (
            f"- host `{meta['host']}`: {meta['cores']} cores ({meta['cpu']}), load average {load_start} at "
            f"start and {load_end} at the end; the load generator shares these cores"
        ),
        f"- command: `{meta['command']}`",
        (
            f"- load: {meta['wrk']}, 1 thread, {settings.duration:g} s per measurement after "
            f"{settings.warmup:g} s of warm-up; bodies are V2 infer requests of real one-sentence "
            "reviews (BYTES input, shape [n])"
        ),
        (
            "- RSS: VmRSS of the server and all its children, sampled every 0.2 s (the tree sum counts "
            "pages shared by forked workers once per worker)"
        ),
        (
            f"- gRPC: {meta.get('ghz', 'ghz')}, 1 CPU, one connection per concurrent call; ModelInfer "
            "with one text in raw_input_contents (BYTES), for the servers that serve gRPC"
        ),
    ]
    if settings.quick:
        lines.append(
            "- **quick run**: short measurements that prove the harness; the figures are rough"
        )
    lines += ["", "## Servers", "", *report.startup_table(runs)]
    lines += ["", "## Results", "", *report.results_table(runs, scenarios)]
    ratios = report.ratio_table(runs, scenarios)
    if ratios:
        lines += [
            "",
            "## Ours relative to the alternatives",
            "",
            "Throughput ratio (higher is better for ours) and p99 ratio (lower is better for ours).",
            "",
            *ratios,
        ]
    protocols = protocol_table(runs, scenarios)
    if protocols:
        lines += [
            "",
            "## gRPC relative to REST, same server",
            "",
            ("The load generator shares the server's cores: where ghz spends more CPU per call than "
             "wrk per request, the server has that much less. `make bench` then runs "
             "`benchmarks/grpc_vs_rest.py`, which loads gRPC with h2load, a generator as light as "
             "wrk, beside the same REST load."),
            "",
            *protocols,
        ]
    if transports:
        lines += [
            "",
            f"## The transports alone: an empty handler, c={transports[0].load_concurrency}",
            "",
            ("The stacks our runtime serves on, answering a fixed body with no model, parsing or "
            "metrics (`benchmarks/benchkit/transport.py`), loaded by the same wrk and ghz runs: the "
            "server CPU per request is a floor under everything served on that stack."),
            "",
            *transport_table(transports),
        ]
    if tabular is not None:
        lines += [
            "",
            (f"## Tabular rows: JSON, binary tensors and gRPC ({tabular.rows} rows of house-prices "
            f"per request, c={tabular.concurrency}, ours with 1 worker)"),
            "",
            (
                f"Request body: {tabular.body_bytes.get('JSON', 0):,} bytes as JSON, "
                f"{tabular.body_bytes.get('binary', 0):,} bytes with binary tensors."
            ),
            "",
            *tabular_table(tabular),
        ]
    lines += [
        "",
        "## Ceiling: the model alone",
        "",
        *report.ceiling_table(ceilings, runs, scenarios),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    if not ARTIFACT.exists():
        print(f"{ARTIFACT} is missing: run `make examples` first", file=sys.stderr)
        return 2
    if settings.grpc_concurrency:
        try:
            ghz_binary = ghz.ensure_ghz()
        except (RuntimeError, subprocess.SubprocessError) as error:
            print(f"cannot run the gRPC scenarios: {error}", file=sys.stderr)
            return 2
    meta = machine_facts(argv)
    if settings.grpc_concurrency:
        meta["ghz"] = f"ghz ({ghz_binary})"
    texts = payloads.review_sentences(TEXT_POOL)
    batch_sizes = sorted({s.batch for s in settings.scenarios} | {1})
    with tempfile.TemporaryDirectory(prefix="mlmodel-bench-") as scratch:
        layout = Layout(project_venv=settings.project_venv, workdir=Path(scratch))
        bodies = {
            size: write_bodies(
                layout.workdir / f"bodies-{size}.jsonl",
                payloads.v2_bodies(texts, size, max(8, TEXT_POOL // size)),
            )
            for size in batch_sizes
        }
        first_body = payloads.v2_infer_body(texts[:2])
        grpc_messages = ghz.write_messages(
            layout.workdir / "grpc-messages.json", payloads.grpc_messages(texts, 256)
        )
        print("measuring the model alone", file=sys.stderr)
        ceilings = ceiling.measure_artifact(
            ARTIFACT, texts, sorted({1, 128} | set(settings.batch_sizes)), settings.ceiling_seconds
        )
        runs = []
        for name in settings.servers:
            print(f"benchmarking {name}", file=sys.stderr)
            runs.append(
                bench_server(SERVERS[name], settings, layout, bodies, first_body, grpc_messages)
            )
        transports: list[transport.TransportRun] = []
        if settings.grpc_concurrency:
            print("benchmarking the transports alone (empty handlers)", file=sys.stderr)
            try:
                transports = transport.measure(
                    settings.project_venv / "bin" / "python",
                    layout.workdir,
                    rest_bodies=bodies[1],
                    grpc_messages=grpc_messages,
                    concurrency=max(settings.grpc_concurrency),
                    seconds=settings.duration,
                )
            except Exception as error:  # noqa: BLE001 - the serving figures above still count
                print(f"transport comparison failed: {error}", file=sys.stderr)
        tabular = None
        if settings.tabular_rows > 0:
            print("benchmarking tabular rows: JSON, binary, gRPC", file=sys.stderr)
            tabular = bench_tabular(settings, layout)
    meta["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    markdown = render(settings, meta, runs, ceilings, tabular, transports)
    print(markdown)
    if settings.output_dir is not None:
        settings.output_dir.mkdir(parents=True, exist_ok=True)
        stem = (
            f"{datetime.date.today():%Y-%m-%d}-{meta['host']}{'-quick' if settings.quick else ''}"
        )
        (settings.output_dir / f"{stem}.md").write_text(markdown, encoding="utf-8")
        (settings.output_dir / f"{stem}.json").write_text(
            json.dumps(report.to_json(runs, ceilings, meta, transports), indent=2) + "\n", encoding="utf-8"
        )
        print(f"written: {settings.output_dir / stem}.md and .json", file=sys.stderr)
    failed = any(run.failure for run in runs) or (tabular is not None and tabular.failure)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
