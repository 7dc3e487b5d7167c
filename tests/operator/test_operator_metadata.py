"""The real operator process writing deployment metadata: PostgreSQL (and an outage), SQLite."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from conftest import condition, free_port, make_mlmodel, wait_for
from emulator import ClusterEmulator
from mlmodel_runtime.store.database import Database
from mlmodel_runtime.store.queries import Deployment, Rollout, get_deployments, rollout_history
from mlmodel_runtime.store.urls import default_sqlite_url
from prometheus_client.parser import text_string_to_metric_families

NS = "default"
MLMODEL = "serving.mlmodel.io/v1alpha1/mlmodels"
DEPLOYMENTS = "apps/v1/deployments"
NEW_URI = "s3://models/sentiment/v2/model.joblib"
NEW_IMAGE = "registry.example.com/mlmodel/runtime:v2"
# Rows a database outage may take to arrive: the writer's backoff doubles up to 30 s.
OUTAGE_RECOVERY_SECONDS = 60.0


class Store:
    """Reads the metadata database the operator writes (a fresh transaction per read)."""

    def __init__(self, url: str) -> None:
        self.database = Database(url)

    def read(self, name: str, namespace: str = NS) -> tuple[list[Deployment], list[Rollout]]:
        try:
            with self.database.session(write=False, create=False) as session:
                return (
                    get_deployments(session, namespace, name),
                    rollout_history(session, namespace, name),
                )
        except Exception:  # noqa: BLE001 - not migrated yet, or the server is down
            return [], []

    def rollout(self, name: str, generation: int, namespace: str = NS) -> Rollout | None:
        return next((r for r in self.read(name, namespace)[1] if r.generation == generation), None)

    def deployment(self, name: str, namespace: str = NS) -> Deployment | None:
        deployments = self.read(name, namespace)[0]
        return deployments[0] if deployments else None

    def close(self) -> None:
        self.database.close()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def history(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`mlmodel history ...` as a user runs it: the console script in its own process."""
    script = Path(sys.executable).with_name("mlmodel")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLMODEL_")}
    environment.update(env or {})
    return subprocess.run(
        [str(script), "history", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=False,
    )


def table(output: str) -> list[dict[str, str]]:
    """Rows of `mlmodel history`'s table by column (cells are separated by 3+ spaces)."""
    lines = output.strip().splitlines()
    header = lines[0]
    starts = [header.index(column) for column in header.split()]
    names = header.split()
    rows = []
    for line in lines[1:]:
        cells = [
            line[start : starts[i + 1] if i + 1 < len(starts) else None].strip()
            for i, start in enumerate(starts)
        ]
        rows.append(dict(zip(names, cells)))
    return rows


def status_of(cluster: ClusterEmulator, name: str, namespace: str = NS) -> dict[str, Any] | None:
    mlmodel = cluster.get(MLMODEL, namespace, name)
    if not mlmodel or (mlmodel.get("status") or {}).get("observedGeneration") != mlmodel[
        "metadata"
    ].get("generation"):
        return None
    return mlmodel


async def test_create_rollout_update_invalid_delete_rows_on_postgresql(
    cluster: ClusterEmulator, start_operator: Any, postgres_url: str
) -> None:
    operator = await start_operator(resync=1, MLMODEL_OPERATOR_DATABASE_URL=postgres_url)
    store = Store(postgres_url)
    try:
        uid = cluster.create(make_mlmodel())["metadata"]["uid"]

        # Created: the deployment row and the first rollout.
        first = await wait_for(lambda: store.rollout("sentiment", 1), what="rollout 1")
        assert first.changes == {"created": True}
        assert (first.uid, first.model_uri, first.sha256, first.desired_replicas) == (
            uid,
            "https://models.example.com/sentiment/model.joblib",
            "3f" * 32,
            2,
        )
        assert first.runtime_image == "registry.example.com/mlmodel/runtime:test"
        assert first.ready_at is None and first.failed_at is None
        deployment = await wait_for(lambda: store.deployment("sentiment"), what="deployment row")
        assert (deployment.uid, deployment.generation, deployment.ready) == (uid, 1, False)
        assert deployment.deleted_at is None

        # Rolled out: the rollout becomes ready, and so does the deployment row.
        await wait_for(lambda: cluster.get(DEPLOYMENTS, NS, "sentiment"), what="deployment")
        cluster.set_deployment_rollout(NS, "sentiment")
        await wait_for(
            lambda: (
                condition(cluster.get(MLMODEL, NS, "sentiment"), "Ready").get("status") == "True"
            ),
            what="Ready=True",
        )
        ready = await wait_for(
            lambda: (r := store.rollout("sentiment", 1)) and r.ready_at and r, what="ready_at"
        )
        assert ready.ready_at >= ready.started_at
        deployment = await wait_for(
            lambda: (d := store.deployment("sentiment")) and d.ready and d, what="ready row"
        )
        assert deployment.phase == "Ready"

        # Replicas, URI, digest and image changed: a second rollout says so.
        cluster.patch(
            MLMODEL,
            NS,
            "sentiment",
            {
                "spec": {
                    "replicas": 3,
                    "model": {"uri": NEW_URI, "sha256": "ab" * 32},
                    "runtime": {"image": NEW_IMAGE},
                }
            },
        )
        second = await wait_for(lambda: store.rollout("sentiment", 2), what="rollout 2")
        assert second.changes == {
            "uri": {"from": "https://models.example.com/sentiment/model.joblib", "to": NEW_URI},
            "digest": {"from": "3f" * 32, "to": "ab" * 32},
            "image": {"from": "registry.example.com/mlmodel/runtime:test", "to": NEW_IMAGE},
            "replicas": {"from": 2, "to": 3},
        }
        assert second.ready_at is None
        deployment = await wait_for(
            lambda: (d := store.deployment("sentiment")) and d.generation == 2 and d,
            what="deployment row at generation 2",
        )
        assert (deployment.model_uri, deployment.desired_replicas, deployment.ready) == (
            NEW_URI,
            3,
            False,
        )

        # A spec the operator cannot serve: a failed rollout with the status's reason.
        cluster.patch(MLMODEL, NS, "sentiment", {"spec": {"model": {"uri": "model.joblib"}}})
        failed = await wait_for(
            lambda: (r := store.rollout("sentiment", 3)) and r.failed_at and r,
            what="rollout 3 failed",
        )
        assert failed.reason == "InvalidSpec" and "relative path" in (failed.message or "")
        assert failed.changes == {"uri": {"from": NEW_URI, "to": "model.joblib"}}
        deployment = await wait_for(
            lambda: (d := store.deployment("sentiment")) and d.phase == "Failed" and d,
            what="deployment row Failed",
        )
        assert deployment.generation == 3 and not deployment.ready

        # `mlmodel history`, newest first, from the same database.
        result = await asyncio.to_thread(
            history, "sentiment", "--namespace", NS, "--database-url", postgres_url
        )
        assert result.returncode == 0, result.stderr
        rows = table(result.stdout)
        assert [(row["GENERATION"], row["STATUS"]) for row in rows] == [
            ("3", "Failed"),
            ("2", "Superseded"),
            ("1", "Ready"),
        ]
        assert rows[0]["REASON"].startswith("InvalidSpec")
        assert rows[1]["DIGEST"] == "ab" * 6 and rows[1]["REPLICAS"] == "3"
        assert "replicas 2 -> 3" in rows[1]["CHANGES"] and rows[2]["CHANGES"] == "created"
        assert postgres_url.split("@")[0].split(":")[-1] not in result.stdout + result.stderr

        # Deleted: the row stays, marked deleted.
        cluster.delete(MLMODEL, NS, "sentiment")
        deleted = await wait_for(
            lambda: (d := store.deployment("sentiment")) and d.deleted_at and d,
            what="deleted_at",
        )
        assert deleted.phase == "Deleted" and not deleted.ready

        samples = await asyncio.to_thread(scrape, operator.metrics_port)
        ok = metric(samples, "mlmodel_metadata_writes_total", component="operator", result="ok")
        assert ok >= 8  # rollouts, deployment rows, ready, failure, deletion
        assert metric(samples, "mlmodel_metadata_writes_dropped_total", component="operator") == 0
        password = postgres_url.split("@")[0].split(":")[-1]
        assert password not in operator.log()
    finally:
        store.close()


async def test_deletion_missed_while_the_operator_was_down_is_recorded(
    cluster: ClusterEmulator, start_operator: Any, postgres_url: str
) -> None:
    operator = await start_operator(resync=1, MLMODEL_OPERATOR_DATABASE_URL=postgres_url)
    store = Store(postgres_url)
    try:
        cluster.create(make_mlmodel("sentiment"))
        cluster.create(make_mlmodel("prices"))
        for name in ("sentiment", "prices"):
            await wait_for(lambda n=name: store.deployment(n), what=f"{name} row")
        assert await operator.stop() == 0

        cluster.delete(MLMODEL, NS, "sentiment")  # nobody watching
        await start_operator(resync=1, MLMODEL_OPERATOR_DATABASE_URL=postgres_url)
        gone = await wait_for(
            lambda: (d := store.deployment("sentiment")) and d.deleted_at and d,
            what="the missed deletion recorded",
        )
        assert gone.phase == "Deleted"
        # The model that still exists is left alone, resync after resync.
        await asyncio.sleep(2.5)
        kept = store.deployment("prices")
        assert kept is not None and kept.deleted_at is None
    finally:
        store.close()


async def test_database_outage_never_blocks_reconciling_and_rows_arrive_after(
    cluster: ClusterEmulator, start_operator: Any, postgres_server: Any
) -> None:
    # The outage needs a server this test may stop: the session's own, never an external one.
    postgres_server.start()
    url = postgres_server.create_database()
    operator = await start_operator(resync=1, MLMODEL_OPERATOR_DATABASE_URL=url)
    store = Store(url)
    try:
        cluster.create(make_mlmodel("sentiment"))
        await wait_for(lambda: store.rollout("sentiment", 1), what="rollout before the outage")

        with postgres_server.stopped():
            cluster.patch(MLMODEL, NS, "sentiment", {"spec": {"replicas": 4}})
            for name in ("prices", "churn"):
                cluster.create(make_mlmodel(name))
            # Reconciling goes on: children appear and status is written, database or not.
            for name in ("prices", "churn"):
                await wait_for(
                    lambda n=name: cluster.get(DEPLOYMENTS, NS, n), what=f"{name} deployment"
                )
                await wait_for(lambda n=name: status_of(cluster, n), what=f"{name} status")
            await wait_for(
                lambda: (
                    (d := cluster.get(DEPLOYMENTS, NS, "sentiment")) and d["spec"]["replicas"] == 4
                ),
                what="sentiment scaled to 4",
            )
            await wait_for(lambda: status_of(cluster, "sentiment"), what="sentiment status")
            queued = await wait_for(
                lambda: metric(
                    scrape(operator.metrics_port),
                    "mlmodel_metadata_writes_queued",
                    component="operator",
                ),
                what="writes queued during the outage",
            )
            # Two new deployments and rollouts, plus the new rollout and row of the update.
            assert queued >= 6

        # Back: every queued row arrives.
        def counts() -> tuple[int, int]:
            try:
                with store.database.session(write=False) as session:
                    rollouts = session.fetch_one("SELECT COUNT(*) AS n FROM rollouts")
                    deployments = session.fetch_one("SELECT COUNT(*) AS n FROM deployments")
                return int(rollouts["n"]), int(deployments["n"])
            except Exception:  # noqa: BLE001 - the server is still starting
                return -1, -1

        await wait_for(
            lambda: counts() == (4, 3),
            timeout=OUTAGE_RECOVERY_SECONDS,
            what="4 rollouts and 3 deployment rows after the outage",
        )
        assert store.rollout("sentiment", 2).changes == {"replicas": {"from": 2, "to": 4}}
        for name in ("prices", "churn"):
            assert store.rollout(name, 1).changes == {"created": True}
        samples = await asyncio.to_thread(scrape, operator.metrics_port)
        assert metric(samples, "mlmodel_metadata_writes_dropped_total", component="operator") == 0
        assert (
            metric(samples, "mlmodel_metadata_writes_total", component="operator", result="retried")
            > 0
        )
        await wait_for(
            lambda: (
                metric(
                    scrape(operator.metrics_port),
                    "mlmodel_metadata_writes_queued",
                    component="operator",
                )
                == 0
            ),
            what="the queue drained",
        )
        assert "metadata store unavailable" in operator.log()
        assert url.split("@")[0].split(":")[-1] not in operator.log()
    finally:
        store.close()


async def test_without_a_database_url_the_operator_and_history_share_sqlite(
    cluster: ClusterEmulator, start_operator: Any, tmp_path: Path
) -> None:
    # conftest gives the operator HOME=tmp_path/home: the default cache dir is under it.
    home = tmp_path / "home"
    store = Store(default_sqlite_url(home / ".cache" / "mlmodel"))
    await start_operator(resync=1)
    try:
        cluster.create(make_mlmodel())
        first = await wait_for(lambda: store.rollout("sentiment", 1), what="rollout 1")
        assert first.changes == {"created": True}
        cluster.patch(MLMODEL, NS, "sentiment", {"spec": {"replicas": 5}})
        second = await wait_for(lambda: store.rollout("sentiment", 2), what="rollout 2")
        assert second.changes == {"replicas": {"from": 2, "to": 5}}
        deployment = await wait_for(
            lambda: (d := store.deployment("sentiment")) and d.generation == 2 and d,
            what="deployment row at generation 2",
        )
        assert deployment.desired_replicas == 5

        # No flags, no URL: `mlmodel history` finds the operator's file by the same default.
        result = await asyncio.to_thread(history, "sentiment", env={"HOME": str(home)})
        assert result.returncode == 0, result.stderr
        assert [row["GENERATION"] for row in table(result.stdout)] == ["2", "1"]
    finally:
        store.close()


async def test_an_unreachable_database_costs_the_operator_nothing_but_counted_writes(
    cluster: ClusterEmulator, start_operator: Any
) -> None:
    # Nothing listens on this port: every write fails until shutdown gives up on them.
    url = f"postgresql://mlmodel:hunter2@127.0.0.1:{free_port()}/mlmodel"
    operator = await start_operator(
        resync=1,
        MLMODEL_OPERATOR_DATABASE_URL=url,
        MLMODEL_OPERATOR_METADATA_FLUSH_TIMEOUT_SECONDS="1",
    )
    cluster.create(make_mlmodel())
    await wait_for(lambda: cluster.get(DEPLOYMENTS, NS, "sentiment"), what="deployment")
    await wait_for(lambda: status_of(cluster, "sentiment"), what="status")
    cluster.set_deployment_rollout(NS, "sentiment")
    await wait_for(
        lambda: condition(cluster.get(MLMODEL, NS, "sentiment"), "Ready").get("status") == "True",
        what="Ready=True with the database unreachable",
    )
    queued = await wait_for(
        lambda: metric(
            scrape(operator.metrics_port), "mlmodel_metadata_writes_queued", component="operator"
        ),
        what="writes queued",
    )

    started = time.monotonic()
    assert await operator.stop() == 0
    assert time.monotonic() - started < 10  # the flush timeout, not the writer's backoff
    log = operator.log()
    assert "metadata writes lost at shutdown" in log
    assert "hunter2" not in log
    assert queued >= 3  # rollout, deployment row, health
