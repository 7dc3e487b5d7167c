#!/usr/bin/env python3
"""Run the real operator against the local control plane (`make cluster`: a real kube-apiserver,
etcd, controllers and KWOK) with 1,000 MLModels in 10 namespaces, and print what it cost: time
until every MLModel is Ready, the operator's peak memory, API requests and writes per MLModel
(from the API server's audit log), and what one idle resync pass changes (which must be nothing).

    .venv/bin/python benchmarks/operator_scale.py              # 1,000 MLModels
    .venv/bin/python benchmarks/operator_scale.py --count 100  # a quick look
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO_ROOT / "tests"))

from benchkit.procs import RssSampler
from mlmodel_operator.builders import build_children
from mlmodel_operator.settings import OperatorSettings
from support.cluster import OPERATOR_NAMESPACE, Cluster
from support.operator import OPERATOR_USER, WRITE_VERBS, audit_time, start_operator

SHA256 = "5e" * 32
# What an idle pass must not change: every object the MLModels own or cause.
KINDS = ("mlmodels", "deployments", "services", "replicasets", "pods")


@dataclasses.dataclass(frozen=True)
class Settings:
    count: int
    namespaces: int
    resync_seconds: float
    timeout: float
    output_dir: Path | None
    cluster_dir: Path
    floor: bool = True
    max_api_connections: int | None = None  # None: the operator's default


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000, help="MLModels to create (default 1000)")
    parser.add_argument("--namespaces", type=int, default=10, help="spread over this many namespaces")
    parser.add_argument(
        "--resync", type=float, default=30.0,
        help="the operator's resync interval in seconds (MLMODEL_OPERATOR_RESYNC_INTERVAL_SECONDS)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument("--output-dir", type=Path, default=HERE / "results")
    parser.add_argument("--no-save", dest="output_dir", action="store_const", const=None)
    parser.add_argument(
        "--cluster-dir", type=Path, default=REPO_ROOT / ".cluster",
        help="the cluster `make cluster` started (started here if it is not running)",
    )
    parser.add_argument(
        "--no-floor", dest="floor", action="store_false",
        help="skip the run without the operator (the same Deployments and Services applied directly)",
    )
    parser.add_argument(
        "--max-api-connections", type=int, default=None,
        help="the operator's MLMODEL_OPERATOR_MAX_API_CONNECTIONS (default: the operator's own)",
    )
    args = parser.parse_args(argv)
    return Settings(
        args.count, args.namespaces, args.resync, args.timeout, args.output_dir, args.cluster_dir,
        args.floor, args.max_api_connections,
    )  # fmt: skip


def mlmodel(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.mlmodel.io/v1alpha1",
        "kind": "MLModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": f"https://models.example.com/{name}/model.joblib", "sha256": SHA256},
            "replicas": 1,
            "monitoring": {"serviceMonitor": False},
        },
    }


def ensure_cluster(directory: Path) -> Cluster:
    port = int(os.environ.get("MLMODEL_CLUSTER_PORT", "16443"))
    subprocess.run(["bash", str(REPO_ROOT / "tests" / "cluster" / "up.sh"), str(directory)], check=True)
    return Cluster(directory=directory, port=port)


def became_true(
    cluster: Cluster, resource: str, namespaces: list[str], selector: str, condition: str
) -> list[datetime.datetime]:
    """When the objects in `namespaces` whose `condition` is True became so (to the second, as
    conditions say): polling a list of a thousand objects often would load the API server the
    benchmark measures. Only this run's namespaces: a cluster shared with other work (the tests')
    may hold older objects with the same labels, Available long before this run started."""
    path = (f'{{range .items[*]}}{{.status.conditions[?(@.type=="{condition}")].status}} '
            f'{{.status.conditions[?(@.type=="{condition}")].lastTransitionTime}}{{"\\n"}}{{end}}')
    times = []
    for namespace in namespaces:
        out = cluster.kubectl("get", resource, "-n", namespace, "-l", selector, "-o", f"jsonpath={path}").stdout
        times += [datetime.datetime.fromisoformat(line.split()[1]) for line in out.splitlines() if line.startswith("True ")]
    return times


def wait_all_true(
    cluster: Cluster, resource: str, namespaces: list[str], selector: str, condition: str, count: int,
    timeout: float, alive: Any = lambda: None,
) -> datetime.datetime:
    """When the last of `count` objects got `condition` True, polling every 3 s."""
    deadline = time.monotonic() + timeout
    while len(times := became_true(cluster, resource, namespaces, selector, condition)) < count:
        alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(times)} of {count} {resource} {condition} after {timeout:.0f} s")
        time.sleep(3.0)
    return max(times)


def versions(cluster: Cluster, namespaces: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for namespace in namespaces:
        for kind in KINDS:
            out = cluster.kubectl(
                "get", kind, "-n", namespace, "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.metadata.resourceVersion}{\"\\n\"}{end}",
            ).stdout
            for line in out.splitlines():
                name, _, version = line.partition("=")
                found[f"{namespace}/{kind}/{name}"] = version
    return found


def describe(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", event["requestURI"].split("?")[0])
    sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
    return f"{event['verb']} {resource}{sub}"


def requests_between(cluster: Cluster, start: datetime.datetime, end: datetime.datetime) -> list[dict[str, Any]]:
    return [
        e for e in cluster.audit_events(OPERATOR_USER)
        if start <= audit_time(e) <= end and e["verb"] != "watch"
    ]


def client_of(event: dict[str, Any]) -> str:
    """Who sent a request, shortly: the operator, a controller (by its service account), ..."""
    user = event.get("user", {}).get("username", "")
    if user == OPERATOR_USER:
        return "mlmodel-operator"
    if user.startswith("system:serviceaccount:kube-system:"):
        return user.rsplit(":", 1)[1]
    return user


def requests_by_client(cluster: Cluster, start: datetime.datetime, end: datetime.datetime) -> collections.Counter[str]:
    """Every client's requests (watches excluded) in a time window, from the audit log."""
    return collections.Counter(
        client_of(e) for e in cluster.audit_events()
        if e["verb"] != "watch" and start <= audit_time(e) <= end
    )


def apply_in_parallel(cluster: Cluster, batches: list[list[dict[str, Any]]]) -> None:
    """One kubectl per namespace at once, as a GitOps tool syncs its applications: one kubectl
    alone is held by its client-side rate limit (5 requests/s, bursts of 10)."""
    with concurrent.futures.ThreadPoolExecutor(len(batches)) as pool:
        list(pool.map(
            lambda batch: cluster.kubectl(
                "apply", "--server-side", "--field-manager=bench", "-f", "-",
                input=yaml.safe_dump_all(batch), timeout=600,
            ),
            batches,
        ))


def control_plane_floor(cluster: Cluster, settings: Settings) -> dict[str, Any]:
    """The same Deployments and Services the operator makes, applied directly with no operator
    running: how long the control plane alone takes to roll out 1,000 models on these cores."""
    namespaces = [f"floor-{i}" for i in range(settings.namespaces)]
    for namespace in namespaces:
        cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=true", timeout=600)
        cluster.create_namespace(namespace)
    batches = [
        [
            child
            for index in range(i, settings.count, settings.namespaces)
            for child in build_children(
                {**mlmodel(f"model-{index:04d}", namespace),
                 "metadata": {"name": f"model-{index:04d}", "namespace": namespace,
                              "labels": {"bench": "operator-scale"}}},
                OperatorSettings(), servicemonitor_supported=False,
            )
        ]
        for i, namespace in enumerate(namespaces)
    ]
    started = datetime.datetime.now(datetime.UTC)
    apply_in_parallel(cluster, batches)
    available_at = wait_all_true(
        cluster, "deployments", namespaces, "app.kubernetes.io/part-of=mlmodel", "Available", settings.count,
        settings.timeout,
    )
    clients = requests_by_client(cluster, started, available_at + datetime.timedelta(seconds=5))
    for namespace in namespaces:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    return {
        "floor_seconds_until_all_available": (available_at - started.replace(microsecond=0)).total_seconds(),
        "floor_requests_per_model_by_client": {k: round(v / settings.count, 2) for k, v in clients.most_common()},
    }


def wait_quiet(cluster: Cluster, quiet_for: float, timeout: float) -> None:
    """Until the operator has made no write for `quiet_for` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = datetime.datetime.now(datetime.UTC)
        recent = [
            e for e in requests_between(cluster, now - datetime.timedelta(seconds=quiet_for), now)
            if e["verb"] in WRITE_VERBS and (e.get("objectRef") or {}).get("resource") != "events"
        ]
        if not recent:
            return
        time.sleep(1.0)
    raise RuntimeError("the operator never went quiet")


def run(settings: Settings, workdir: Path) -> dict[str, Any]:
    cluster = ensure_cluster(settings.cluster_dir)
    cluster.kubectl("apply", "-k", str(REPO_ROOT / "operator" / "deploy"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/mlmodels.serving.mlmodel.io", "--timeout=60s")
    cluster.kubectl("scale", "deployment/mlmodel-operator", "-n", OPERATOR_NAMESPACE, "--replicas=0")
    namespaces = [f"bench-{i}" for i in range(settings.namespaces)]
    for namespace in namespaces:
        cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=true", timeout=600)
    for namespace in namespaces:
        cluster.create_namespace(namespace)
    # As the tests run it, but with the operator's own defaults except the resync interval, and
    # quiet JSON logs.
    operator = start_operator(
        cluster, workdir, "--standalone", namespaces=namespaces, log_path=workdir / "operator.log",
        verbose=False, wait=False,
        MLMODEL_OPERATOR_RESYNC_INTERVAL_SECONDS=str(settings.resync_seconds),
        MLMODEL_OPERATOR_CRD_CHECK_INTERVAL_SECONDS=None,
        MLMODEL_OPERATOR_LOG_FORMAT="json",
        MLMODEL_OPERATOR_LOG_LEVEL="warning",
        MLMODEL_OPERATOR_MAX_API_CONNECTIONS=(
            None if settings.max_api_connections is None else str(settings.max_api_connections)
        ),
    )
    try:
        with RssSampler(operator.process.pid) as rss:
            time.sleep(5)
            rss_idle_kib = rss.peak_single_kib
            started = datetime.datetime.now(datetime.UTC)
            clock = time.monotonic()
            per_namespace = -(-settings.count // settings.namespaces)
            batches: list[list[dict[str, Any]]] = []
            created = 0
            for namespace in namespaces:
                batch = []
                for _ in range(min(per_namespace, settings.count - created)):
                    body = mlmodel(f"model-{created:04d}", namespace)
                    body["metadata"]["labels"] = {"bench": "operator-scale"}
                    batch.append(body)
                    created += 1
                batches.append(batch)
            apply_in_parallel(cluster, batches)
            seconds_applied = time.monotonic() - clock
            def alive() -> None:
                if operator.process.poll() is not None:
                    raise RuntimeError(f"the operator exited: {operator.log()[-3000:]}")

            ready_at = wait_all_true(
                cluster, "mlmodels", namespaces, "bench=operator-scale", "Ready", settings.count,
                settings.timeout, alive,
            )
            seconds_ready = (ready_at - started.replace(microsecond=0)).total_seconds()
            wait_quiet(cluster, quiet_for=5, timeout=settings.timeout)
            quiet_at = datetime.datetime.now(datetime.UTC)
            rollout = requests_between(cluster, started, quiet_at)
            clients = requests_by_client(cluster, started, ready_at + datetime.timedelta(seconds=5))
            # One idle pass: nothing changed since the roll-out settled.
            time.sleep(settings.resync_seconds)  # the pass that was due during the roll-out
            before = versions(cluster, namespaces)
            idle_start = datetime.datetime.now(datetime.UTC)
            time.sleep(settings.resync_seconds * 1.2)
            idle_end = datetime.datetime.now(datetime.UTC)
            after = versions(cluster, namespaces)
            idle = requests_between(cluster, idle_start, idle_end)
            peak_kib = rss.peak_single_kib
    finally:
        operator.stop(timeout=30)
    floor = control_plane_floor(cluster, settings) if settings.floor else {}
    changed = sorted(key for key in before if after.get(key) != before[key])
    rollout_kinds = collections.Counter(describe(e) for e in rollout)
    idle_kinds = collections.Counter(describe(e) for e in idle)
    return {
        "mlmodels": settings.count,
        "namespaces": settings.namespaces,
        "seconds_to_apply_all": round(seconds_applied, 1),
        "seconds_until_all_ready": round(seconds_ready, 1),
        "seconds_until_operator_quiet": round((quiet_at - started).total_seconds(), 1),
        "operator_rss_idle_mb": round(rss_idle_kib / 1024, 1),
        "operator_rss_peak_mb": round(peak_kib / 1024, 1),
        "api_requests_per_mlmodel": round(len(rollout) / settings.count, 2),
        "api_writes_per_mlmodel": round(sum(1 for e in rollout if e["verb"] in WRITE_VERBS) / settings.count, 2),
        "api_requests_by_kind": dict(rollout_kinds.most_common()),
        "ready_at": ready_at.isoformat(),
        "resync_interval_seconds": settings.resync_seconds,
        "operator_max_api_connections": (
            OperatorSettings.model_fields["max_api_connections"].default
            if settings.max_api_connections is None
            else settings.max_api_connections
        ),
        "idle_pass_requests": len(idle),
        "idle_pass_requests_by_kind": dict(idle_kinds.most_common()),
        "idle_pass_writes": sum(1 for e in idle if e["verb"] in WRITE_VERBS),
        "idle_pass_objects_checked": len(before),
        "idle_pass_objects_changed": len(changed),
        "idle_pass_changed_examples": changed[:10],
        "requests_per_model_by_client": {k: round(v / settings.count, 2) for k, v in clients.most_common()},
        **floor,
    }


def render(result: dict[str, Any], meta: dict[str, Any]) -> str:
    rows = [
        ("MLModels created (namespaces)", f"{result['mlmodels']} ({result['namespaces']})"),
        ("time to apply them all (kubectl apply --server-side)", f"{result['seconds_to_apply_all']} s"),
        ("time until every MLModel is Ready (from the last Ready condition's lastTransitionTime, to the second)", f"{result['seconds_until_all_ready']} s"),
        ("time until the operator stops writing", f"{result['seconds_until_operator_quiet']} s"),
        ("operator RSS idle before / peak", f"{result['operator_rss_idle_mb']} MB / {result['operator_rss_peak_mb']} MB"),
        ("the operator's API connections for writes (MLMODEL_OPERATOR_MAX_API_CONNECTIONS)", str(result["operator_max_api_connections"])),
        ("API requests per MLModel (watches excluded)", str(result["api_requests_per_mlmodel"])),
        ("API writes per MLModel (Events included)", str(result["api_writes_per_mlmodel"])),
        (f"idle resync pass (interval {result['resync_interval_seconds']:g} s): requests", str(result["idle_pass_requests"])),
        ("idle resync pass: writes", str(result["idle_pass_writes"])),
        ("idle resync pass: objects whose resourceVersion changed", f"{result['idle_pass_objects_changed']} of {result['idle_pass_objects_checked']}"),
    ]
    if "floor_seconds_until_all_available" in result:
        rows.append((
            "without the operator: the same Deployments and Services applied directly, time until all are Available",
            f"{result['floor_seconds_until_all_available']} s",
        ))
    clients = result["requests_per_model_by_client"]
    floor_clients = result.get("floor_requests_per_model_by_client", {})
    lines = [
        f"# Operator at scale on the local control plane, {meta['date']}",
        "",
        (
            f"- host `{meta['host']}`: {meta['cores']} cores, load average at start "
            f"{meta['load_average_at_start']}; etcd, kube-apiserver, kube-controller-manager, "
            "kube-scheduler and KWOK (tests/cluster, Kubernetes v1.36.3) run on the same cores"
        ),
        f"- command: `{meta['command']}`",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
        "Requests per model to the API server by client (watches excluded, audit log), with the operator and without it:",
        "",
        "| client | with the operator | without |",
        "|---|---|---|",
        *(f"| {name} | {clients.get(name, 0)} | {floor_clients.get(name, '-')} |"
          for name in sorted(set(clients) | set(floor_clients), key=lambda n: -clients.get(n, 0))),
        "",
        "The operator's API requests from the first apply until it went quiet, from the API server's audit log:",
        "",
        "| request | count |",
        "|---|---|",
        *(f"| {kind} | {count} |" for kind, count in result["api_requests_by_kind"].items()),
        "",
        "Requests during the idle pass:",
        "",
        "| request | count |",
        "|---|---|",
        *(f"| {kind} | {count} |" for kind, count in result["idle_pass_requests_by_kind"].items()),
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
            result = run(settings, Path(scratch))
        except (RuntimeError, subprocess.CalledProcessError) as error:
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
    return 1 if result["idle_pass_writes"] or result["idle_pass_objects_changed"] else 0


if __name__ == "__main__":
    sys.exit(main())
