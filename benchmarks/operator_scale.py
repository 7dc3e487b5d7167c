#!/usr/bin/env python3
"""Run the real operator against the API emulator with 500 MLModels and print what it cost: time until
every MLModel has its children and a Ready-or-Progressing status, peak operator memory, API requests
per MLModel, and API writes during an idle resync (which must be zero).

    .venv/bin/python benchmarks/operator_scale.py              # 500 MLModels
    .venv/bin/python benchmarks/operator_scale.py --count 50   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import datetime
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))
# The emulator the operator tests use: kmock plus the API semantics the operator relies on.
sys.path.insert(0, str(REPO_ROOT / "tests" / "operator"))

import kmock
import yaml
from benchkit.procs import RssSampler, ServerProcess, free_port
from emulator import ClusterEmulator, load_documents

MLMODELS = "serving.mlmodel.io/v1alpha1/mlmodels"
CHILDREN = ("apps/v1/deployments", "v1/services", "policy/v1/poddisruptionbudgets")
SHA256 = "5e" * 32


@dataclasses.dataclass(frozen=True)
class Settings:
    count: int
    namespaces: int
    resync_seconds: float
    timeout: float
    output_dir: Path | None
    project_venv: Path


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=500, help="MLModels to create (default 500)")
    parser.add_argument(
        "--namespaces", type=int, default=5, help="spread over this many namespaces"
    )
    parser.add_argument(
        "--resync",
        type=float,
        default=120.0,
        help="the operator's resync interval in seconds (MLMODEL_OPERATOR_RESYNC_INTERVAL_SECONDS)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="give up after this many seconds"
    )
    parser.add_argument("--output-dir", type=Path, default=HERE / "results")
    parser.add_argument("--no-save", dest="output_dir", action="store_const", const=None)
    parser.add_argument("--project-venv", type=Path, default=Path(sys.prefix))
    args = parser.parse_args(argv)
    return Settings(
        args.count, args.namespaces, args.resync, args.timeout, args.output_dir, args.project_venv
    )


def mlmodel(name: str, namespace: str, index: int) -> dict[str, Any]:
    return {
        "apiVersion": "serving.mlmodel.io/v1alpha1",
        "kind": "MLModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {
                "uri": f"s3://models/{name}/model.joblib",
                "sha256": SHA256,
                "version": f"1.0.{index}",
            },
            # Half fixed replicas, half autoscaled: both paths of the operator get exercised.
            **(
                {"replicas": 2}
                if index % 2
                else {"autoscaling": {"minReplicas": 1, "maxReplicas": 4}}
            ),
        },
    }


def kubeconfig(path: Path, host: str, port: int) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": f"http://{host}:{port}"}}],
                "users": [{"name": "operator", "user": {"token": "benchmark-token"}}],
                "contexts": [
                    {"name": "emulator", "context": {"cluster": "emulator", "user": "operator"}}
                ],
                "current-context": "emulator",
            }
        )
    )
    return path


def operator_command(venv: Path) -> list[str]:
    script = venv / "bin" / "mlmodel"
    cli = REPO_ROOT / "runtime" / "mlmodel_runtime" / "cli.py"
    if script.exists() and cli.exists():
        return [str(script), "operator", "--all-namespaces", "--standalone"]
    return [
        str(venv / "bin" / "python"),
        "-m",
        "mlmodel_operator",
        "--all-namespaces",
        "--standalone",
    ]


def settled(cluster: ClusterEmulator, namespace: str, name: str) -> bool:
    """Children exist and the status says Ready or Progressing (no Deployment controller: Progressing)."""
    if any(cluster.get(kind, namespace, name) is None for kind in CHILDREN):
        return False
    stored = cluster.get(MLMODELS, namespace, name) or {}
    conditions = (stored.get("status") or {}).get("conditions") or []
    return any(
        c.get("type") in ("Ready", "Progressing") and c.get("status") == "True" for c in conditions
    )


async def wait_quiet(cluster: ClusterEmulator, quiet_for: float, timeout: float) -> None:
    """Until the operator has made no request (watch streams aside) for `quiet_for` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        calls = [c for c in cluster.operator_calls() if c.verb != "watch"]
        if not calls or loop.time() - calls[-1].at >= quiet_for:
            return
        await asyncio.sleep(0.2)


def summarise(calls: list[Any]) -> dict[str, int]:
    return dict(
        collections.Counter(
            f"{c.verb} {c.resource or c.path}{'/' + c.subresource if c.subresource else ''}"
            for c in calls
        ).most_common()
    )


async def run(settings: Settings, workdir: Path) -> dict[str, Any]:
    crd = next(
        d
        for d in load_documents([str(REPO_ROOT / "crds" / "mlmodel.yaml")])
        if d.get("kind") == "CustomResourceDefinition"
    )
    async with ClusterEmulator() as cluster, kmock.Server(cluster, host="127.0.0.1") as server:
        cluster.install_crd(crd)
        namespaces = [f"bench-{i}" for i in range(settings.namespaces)]
        for namespace in namespaces:
            cluster.create(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
            )
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MLMODEL_", "KUBERNETES_", "KOPF_"))
        }
        env.update(
            KUBECONFIG=str(kubeconfig(workdir / "kubeconfig", server.host, server.port)),
            MLMODEL_OPERATOR_RESYNC_INTERVAL_SECONDS=str(settings.resync_seconds),
            MLMODEL_OPERATOR_METRICS_PORT=str(free_port()),
            MLMODEL_OPERATOR_LOG_FORMAT="text",
            MLMODEL_OPERATOR_RUNTIME_IMAGE="registry.example.com/mlmodel/runtime:bench",
            PYTHONUNBUFFERED="1",
        )
        operator = ServerProcess.start(
            "operator",
            operator_command(settings.project_venv),
            env=env,
            cwd=workdir,
            log_path=workdir / "operator.log",
        )
        loop = asyncio.get_running_loop()
        # Quiet means no request for this long: shorter than a resync interval, or it never comes.
        quiet = min(2.0, settings.resync_seconds / 4)
        try:
            started = loop.time()
            while {"mlmodels", "deployments"} - {
                c.resource for c in cluster.operator_calls() if c.verb == "watch"
            }:
                if operator.process.poll() is not None:
                    raise RuntimeError(f"the operator exited early:\n{operator.log_tail()}")
                if loop.time() - started > 60:
                    raise RuntimeError(
                        f"the operator did not start watching:\n{operator.log_tail()}"
                    )
                await asyncio.sleep(0.1)
            await wait_quiet(cluster, quiet_for=quiet, timeout=30)
            idle_before = RssSampler(operator.pid)
            idle_before.sample()

            with RssSampler(operator.pid, interval=0.25) as memory:
                mark = len(cluster.calls)
                created_at = loop.time()
                names = []
                for index in range(settings.count):
                    namespace, name = namespaces[index % len(namespaces)], f"model-{index:04d}"
                    cluster.create(mlmodel(name, namespace, index))
                    names.append((namespace, name))
                    if index % 50 == 49:
                        await asyncio.sleep(
                            0
                        )  # let the operator's watch stream flow while we create
                pending = set(names)
                while pending:
                    if loop.time() - created_at > settings.timeout:
                        raise RuntimeError(
                            f"{len(pending)} MLModels not settled after {settings.timeout:.0f}s"
                        )
                    if operator.process.poll() is not None:
                        raise RuntimeError(f"the operator exited:\n{operator.log_tail()}")
                    pending = {key for key in pending if not settled(cluster, *key)}
                    await asyncio.sleep(0.1)
                all_settled = loop.time() - created_at
                await wait_quiet(cluster, quiet_for=quiet, timeout=120)
                quiet_at = loop.time() - created_at
                rollout_calls = [c for c in cluster.operator_calls(mark) if c.verb != "watch"]

                # Idle resync: nothing changed, so a full pass over every MLModel must write nothing.
                idle_mark = len(cluster.calls)
                idle_started = loop.time()
                while not any(
                    c.verb == "list" and c.resource == "mlmodels"
                    for c in cluster.operator_calls(idle_mark)
                ):
                    if loop.time() - idle_started > settings.resync_seconds * 3 + 30:
                        raise RuntimeError("no resync pass seen")
                    await asyncio.sleep(0.2)
                await wait_quiet(cluster, quiet_for=quiet, timeout=settings.resync_seconds + 60)
                idle_calls = [c for c in cluster.operator_calls(idle_mark) if c.verb != "watch"]
        finally:
            operator.stop()
    idle_writes = [c for c in idle_calls if c.is_write]
    return {
        "mlmodels": settings.count,
        "namespaces": settings.namespaces,
        "resync_interval_seconds": settings.resync_seconds,
        "seconds_until_all_settled": round(all_settled, 2),
        "seconds_until_api_quiet": round(quiet_at, 2),
        "operator_rss_idle_mb": round(idle_before.peak_total_mb, 1),
        "operator_rss_peak_mb": round(memory.peak_total_mb, 1),
        "api_requests": len(rollout_calls),
        # A resync pass that falls inside the roll-out adds its reads to the per-MLModel figures.
        "resync_passes_during_rollout": sum(
            c.verb == "list" and c.resource == "mlmodels" for c in rollout_calls
        ),
        "api_requests_per_mlmodel": round(len(rollout_calls) / settings.count, 2),
        "api_writes_per_mlmodel": round(sum(c.is_write for c in rollout_calls) / settings.count, 2),
        "api_requests_by_kind": summarise(rollout_calls),
        "idle_resync_requests": len(idle_calls),
        "idle_resync_writes": len(idle_writes),
        "idle_resync_writes_by_kind": summarise(idle_writes),
    }


def render(result: dict[str, Any], meta: dict[str, Any]) -> str:
    rows = [
        ("MLModels created (namespaces)", f"{result['mlmodels']} ({result['namespaces']})"),
        (
            "time until all have children and Ready-or-Progressing",
            f"{result['seconds_until_all_settled']} s",
        ),
        ("time until the operator stops calling the API", f"{result['seconds_until_api_quiet']} s"),
        (
            "operator RSS idle before / peak",
            f"{result['operator_rss_idle_mb']} MB / {result['operator_rss_peak_mb']} MB",
        ),
        (
            "API requests per MLModel (watch streams excluded)",
            f"{result['api_requests_per_mlmodel']}",
        ),
        ("API writes per MLModel", f"{result['api_writes_per_mlmodel']}"),
        ("resync passes during the roll-out", str(result["resync_passes_during_rollout"])),
        (
            f"idle resync pass (interval {result['resync_interval_seconds']:g} s): requests",
            str(result["idle_resync_requests"]),
        ),
        ("idle resync pass: writes (must be 0)", str(result["idle_resync_writes"])),
    ]
    lines = [
        f"# Operator at scale, {meta['date']}",
        "",
        (
            f"- host `{meta['host']}`: {meta['cores']} cores, load average at start "
            f"{meta['load_average_at_start']}; the API emulator (kmock + tests/operator/emulator.py) "
            "runs in the benchmark's process on the same cores"
        ),
        f"- command: `{meta['command']}`",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
        "API requests during the roll-out, by verb and resource:",
        "",
        "| request | count |",
        "|---|---|",
        *(f"| {kind} | {count} |" for kind, count in result["api_requests_by_kind"].items()),
    ]
    if result["idle_resync_writes_by_kind"]:
        lines += [
            "",
            "Writes during the idle resync (should be none):",
            "",
            "| request | count |",
            "|---|---|",
            *(
                f"| {kind} | {count} |"
                for kind, count in result["idle_resync_writes_by_kind"].items()
            ),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings = parse_args(argv)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": socket.gethostname(),
        "cores": os.cpu_count(),
        "load_average_at_start": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "command": " ".join(["benchmarks/operator_scale.py", *argv]),
    }
    with tempfile.TemporaryDirectory(prefix="mlmodel-operator-bench-") as scratch:
        started = time.monotonic()
        try:
            result = asyncio.run(run(settings, Path(scratch)))
        except RuntimeError as error:
            print(f"operator benchmark failed: {error}", file=sys.stderr)
            return 1
        print(f"done in {time.monotonic() - started:.0f}s", file=sys.stderr)
    markdown = render(result, meta)
    print(markdown)
    if settings.output_dir is not None:
        settings.output_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{datetime.date.today():%Y-%m-%d}-{meta['host']}-operator"
        (settings.output_dir / f"{stem}.md").write_text(markdown, encoding="utf-8")
        (settings.output_dir / f"{stem}.json").write_text(
            json.dumps({"meta": meta, "result": result}, indent=2) + "\n", encoding="utf-8"
        )
    return 1 if result["idle_resync_writes"] else 0


if __name__ == "__main__":
    sys.exit(main())
