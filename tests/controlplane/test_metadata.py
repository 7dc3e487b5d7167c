"""The real operator writes deployment metadata while it reconciles on the real control plane:
rows on a real PostgreSQL (and through its outage), SQLite when no database is named, and a
deletion it missed while it was down.

The operator process gets its database URL in its environment, as the install's Deployment gets
it from the mlmodel-operator-db Secret through the kubelet: the operator itself never reads a
Secret (its ServiceAccount may not).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from mlmodel_store.database import Database
from mlmodel_store.queries import Deployment, Rollout, get_deployments, rollout_history
from mlmodel_store.urls import default_sqlite_url
from support.cluster import Cluster
from support.operator import metric, operator_requests, scrape, utc_now
from support.operator import mlmodel_history as history
from support.ports import free_port, wait_until

from controlplane.models import SHA256, URI, condition, mlmodel
from controlplane.pods import UNREADY_IMAGE, UNREADY_IMAGE_2, mark_ready, wait_for_pods

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

NEW_URI = "s3://models/sentiment/v2/model.joblib"
# Rows a database outage may take to arrive: the writer's backoff doubles up to 30 s.
OUTAGE_RECOVERY_SECONDS = 60.0


class Store:
    """Reads the metadata database the operator writes (a fresh transaction per read)."""

    def __init__(self, url: str, namespace: str) -> None:
        self.database = Database(url)
        self.namespace = namespace

    def read(self, name: str) -> tuple[list[Deployment], list[Rollout]]:
        try:
            with self.database.session(write=False, create=False) as session:
                return (
                    get_deployments(session, self.namespace, name),
                    rollout_history(session, self.namespace, name),
                )
        except Exception:  # noqa: BLE001 - not migrated yet, or the server is down
            return [], []

    def rollout(self, name: str, generation: int) -> Rollout | None:
        return next((r for r in self.read(name)[1] if r.generation == generation), None)

    def deployment(self, name: str) -> Deployment | None:
        deployments = self.read(name)[0]
        return deployments[0] if deployments else None

    def counts(self) -> tuple[int, int]:
        """(rollouts, deployment rows) in the whole database; (-1, -1) while it is unreachable."""
        try:
            with self.database.session(write=False) as session:
                rollouts = session.fetch_one("SELECT COUNT(*) AS n FROM rollouts")
                deployments = session.fetch_one("SELECT COUNT(*) AS n FROM deployments")
            return int(rollouts["n"]), int(deployments["n"])
        except Exception:  # noqa: BLE001 - the server is still starting
            return -1, -1

    def close(self) -> None:
        self.database.close()


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


def patch(cluster: Cluster, namespace: str, name: str, spec: dict[str, Any]) -> None:
    cluster.kubectl("patch", "mlmodel", name, "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec}))


def reconciled(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    """The stored MLModel once its status describes its current generation."""
    stored = cluster.get("mlmodel", name, namespace)
    if not stored or (stored.get("status") or {}).get("observedGeneration") != stored["metadata"]["generation"]:
        return None
    return stored


def is_ready(cluster: Cluster, namespace: str, name: str) -> bool:
    return condition(cluster.get("mlmodel", name, namespace), "Ready").get("status") == "True"


def password_of(url: str) -> str:
    return url.split("@")[0].split(":")[-1]


def test_create_rollout_update_invalid_delete_rows_on_postgresql(
    installed_cluster: Cluster, run_operator, namespace: str, postgres_url: str
):
    cluster = installed_cluster
    # Pods of these images run but stay unready until the test marks them ready: each rollout
    # is in progress for as long as the test needs to look at it.
    operator = run_operator(namespaces=[namespace], resync=1, MLMODEL_OPERATOR_DATABASE_URL=postgres_url)
    store = Store(postgres_url, namespace)
    try:
        cluster.apply(mlmodel("sentiment", namespace, replicas=2, runtime={"image": UNREADY_IMAGE}))
        uid = cluster.get("mlmodel", "sentiment", namespace)["metadata"]["uid"]

        # Created: the deployment row and the first rollout.
        first = wait_until(lambda: store.rollout("sentiment", 1), what="rollout 1")
        assert first.changes == {"created": True}
        assert (first.uid, first.model_uri, first.sha256, first.desired_replicas) == (uid, URI, SHA256, 2)
        assert first.runtime_image == UNREADY_IMAGE
        assert first.ready_at is None and first.failed_at is None
        deployment = wait_until(lambda: store.deployment("sentiment"), what="deployment row")
        assert (deployment.uid, deployment.generation, deployment.ready) == (uid, 1, False)
        assert deployment.deleted_at is None

        # Rolled out: the kubelet marks both pods ready; the rollout becomes ready, so does the row.
        for pod in wait_for_pods(cluster, namespace, "sentiment", count=2):
            mark_ready(cluster, pod)
        wait_until(lambda: is_ready(cluster, namespace, "sentiment"), timeout=60, what="Ready=True")
        ready = wait_until(lambda: (r := store.rollout("sentiment", 1)) and r.ready_at and r, what="ready_at")
        assert ready.ready_at >= ready.started_at
        deployment = wait_until(lambda: (d := store.deployment("sentiment")) and d.ready and d, what="ready row")
        assert deployment.phase == "Ready"

        # Replicas, URI, digest and image changed: a second rollout says so.
        patch(
            cluster, namespace, "sentiment",
            {"replicas": 3, "model": {"uri": NEW_URI, "sha256": "ab" * 32}, "runtime": {"image": UNREADY_IMAGE_2}},
        )
        second = wait_until(lambda: store.rollout("sentiment", 2), what="rollout 2")
        assert second.changes == {
            "uri": {"from": URI, "to": NEW_URI},
            "digest": {"from": SHA256, "to": "ab" * 32},
            "image": {"from": UNREADY_IMAGE, "to": UNREADY_IMAGE_2},
            "replicas": {"from": 2, "to": 3},
        }
        assert second.ready_at is None
        deployment = wait_until(
            lambda: (d := store.deployment("sentiment")) and d.generation == 2 and d,
            what="deployment row at generation 2",
        )
        assert (deployment.model_uri, deployment.desired_replicas, deployment.ready) == (NEW_URI, 3, False)

        # A spec the operator cannot serve (the CRD admits a path): a failed rollout with the
        # status's reason.
        patch(cluster, namespace, "sentiment", {"model": {"uri": "model.joblib"}})
        failed = wait_until(
            lambda: (r := store.rollout("sentiment", 3)) and r.failed_at and r, what="rollout 3 failed"
        )
        assert failed.reason == "InvalidSpec" and "relative path" in (failed.message or "")
        assert failed.changes == {"uri": {"from": NEW_URI, "to": "model.joblib"}}
        deployment = wait_until(
            lambda: (d := store.deployment("sentiment")) and d.phase == "Failed" and d,
            what="deployment row Failed",
        )
        assert deployment.generation == 3 and not deployment.ready

        # `mlmodel history`, newest first, from the same database.
        result = history("sentiment", "--namespace", namespace, "--database-url", postgres_url)
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
        assert password_of(postgres_url) not in result.stdout + result.stderr

        # Deleted: the row stays, marked deleted.
        cluster.kubectl("delete", "mlmodel", "sentiment", "-n", namespace)
        deleted = wait_until(
            lambda: (d := store.deployment("sentiment")) and d.deleted_at and d, what="deleted_at"
        )
        assert deleted.phase == "Deleted" and not deleted.ready

        samples = scrape(operator.metrics_port)
        ok = metric(samples, "mlmodel_metadata_writes_total", component="operator", result="ok")
        assert ok >= 8  # rollouts, deployment rows, ready, failure, deletion
        assert metric(samples, "mlmodel_metadata_writes_dropped_total", component="operator") == 0
        assert password_of(postgres_url) not in operator.log()
    finally:
        store.close()


def test_deletion_missed_while_the_operator_was_down_is_recorded(
    installed_cluster: Cluster, run_operator, namespace: str, postgres_url: str
):
    cluster = installed_cluster
    operator = run_operator(namespaces=[namespace], resync=1, MLMODEL_OPERATOR_DATABASE_URL=postgres_url)
    store = Store(postgres_url, namespace)
    try:
        cluster.apply(mlmodel("sentiment", namespace), mlmodel("prices", namespace))
        for name in ("sentiment", "prices"):
            wait_until(lambda n=name: store.deployment(n), what=f"{name} row")
        assert operator.stop() == 0

        # Nobody watching, and no finalizer: the server deletes it at once.
        cluster.kubectl("delete", "mlmodel", "sentiment", "-n", namespace, "--wait=true")
        assert cluster.get("mlmodel", "sentiment", namespace) is None
        restarted = run_operator(namespaces=[namespace], resync=1, MLMODEL_OPERATOR_DATABASE_URL=postgres_url)
        gone = wait_until(
            lambda: (d := store.deployment("sentiment")) and d.deleted_at and d,
            what="the missed deletion recorded",
        )
        assert gone.phase == "Deleted"

        # The model that still exists is left alone, resync after resync (the resync lists the
        # MLModels each pass: two more passes after the sweep).
        after = utc_now()
        wait_until(
            lambda: sum(
                1
                for e in operator_requests(cluster, after)
                if e["verb"] == "list" and (e.get("objectRef") or {}).get("resource") == "mlmodels"
            )
            >= 2,
            what="two more resync passes",
        )
        kept = store.deployment("prices")
        assert kept is not None and kept.deleted_at is None
        assert restarted.process.poll() is None
    finally:
        store.close()


def test_database_outage_never_blocks_reconciling_and_rows_arrive_after(
    installed_cluster: Cluster, run_operator, namespace: str, postgres_server: Any
):
    cluster = installed_cluster
    # The outage needs a server this test may stop: the session's own, never an external one.
    postgres_server.start()
    url = postgres_server.create_database()
    operator = run_operator(namespaces=[namespace], resync=1, MLMODEL_OPERATOR_DATABASE_URL=url)
    store = Store(url, namespace)
    try:
        cluster.apply(mlmodel("sentiment", namespace, replicas=2))
        wait_until(lambda: store.rollout("sentiment", 1), what="rollout before the outage")

        with postgres_server.stopped():
            patch(cluster, namespace, "sentiment", {"replicas": 4})
            cluster.apply(mlmodel("prices", namespace), mlmodel("churn", namespace))
            # Reconciling goes on: children appear and status is written, database or not.
            for name in ("prices", "churn"):
                wait_until(lambda n=name: cluster.get("deployment", n, namespace), what=f"{name} deployment")
                wait_until(lambda n=name: reconciled(cluster, namespace, n), what=f"{name} status")
            wait_until(
                lambda: (d := cluster.get("deployment", "sentiment", namespace)) and d["spec"]["replicas"] == 4,
                what="sentiment scaled to 4",
            )
            wait_until(lambda: reconciled(cluster, namespace, "sentiment"), what="sentiment status")
            queued = wait_until(
                lambda: metric(scrape(operator.metrics_port), "mlmodel_metadata_writes_queued", component="operator"),
                what="writes queued during the outage",
            )
            # Two new deployments and rollouts, plus the new rollout and row of the update.
            assert queued >= 6

        # Back: every queued row arrives.
        wait_until(
            lambda: store.counts() == (4, 3),
            timeout=OUTAGE_RECOVERY_SECONDS,
            what="4 rollouts and 3 deployment rows after the outage",
        )
        assert store.rollout("sentiment", 2).changes == {"replicas": {"from": 2, "to": 4}}
        for name in ("prices", "churn"):
            assert store.rollout(name, 1).changes == {"created": True}
        samples = scrape(operator.metrics_port)
        assert metric(samples, "mlmodel_metadata_writes_dropped_total", component="operator") == 0
        assert metric(samples, "mlmodel_metadata_writes_total", component="operator", result="retried") > 0
        wait_until(
            lambda: metric(scrape(operator.metrics_port), "mlmodel_metadata_writes_queued", component="operator") == 0,
            what="the queue drained",
        )
        assert "metadata store unavailable" in operator.log()
        assert password_of(url) not in operator.log()
    finally:
        store.close()


def test_without_a_database_url_the_operator_and_history_share_sqlite(
    installed_cluster: Cluster, run_operator, namespace: str, tmp_path: Path
):
    cluster = installed_cluster
    # run_operator gives the operator HOME=tmp_path/home: the default cache dir is under it.
    home = tmp_path / "home"
    store = Store(default_sqlite_url(home / ".cache" / "mlmodel"), namespace)
    run_operator(namespaces=[namespace], resync=1)
    try:
        cluster.apply(mlmodel("sentiment", namespace, replicas=2))
        first = wait_until(lambda: store.rollout("sentiment", 1), what="rollout 1")
        assert first.changes == {"created": True}
        patch(cluster, namespace, "sentiment", {"replicas": 5})
        second = wait_until(lambda: store.rollout("sentiment", 2), what="rollout 2")
        assert second.changes == {"replicas": {"from": 2, "to": 5}}
        deployment = wait_until(
            lambda: (d := store.deployment("sentiment")) and d.generation == 2 and d,
            what="deployment row at generation 2",
        )
        assert deployment.desired_replicas == 5

        # No flags, no URL: `mlmodel history` finds the operator's file by the same default.
        result = history("sentiment", "--namespace", namespace, env={"HOME": str(home)})
        assert result.returncode == 0, result.stderr
        assert [row["GENERATION"] for row in table(result.stdout)] == ["2", "1"]
    finally:
        store.close()


def test_an_unreachable_database_costs_the_operator_nothing_but_counted_writes(
    installed_cluster: Cluster, run_operator, namespace: str
):
    cluster = installed_cluster
    # Nothing listens on this port: every write fails until shutdown gives up on them.
    url = f"postgresql://mlmodel:hunter2@127.0.0.1:{free_port()}/mlmodel"
    operator = run_operator(
        namespaces=[namespace],
        resync=1,
        MLMODEL_OPERATOR_DATABASE_URL=url,
        MLMODEL_OPERATOR_METADATA_FLUSH_TIMEOUT_SECONDS="1",
    )
    cluster.apply(mlmodel("sentiment", namespace))
    wait_until(lambda: cluster.get("deployment", "sentiment", namespace), what="deployment")
    # KWOK's pods become ready: the model rolls out with the database unreachable.
    wait_until(lambda: is_ready(cluster, namespace, "sentiment"), timeout=60, what="Ready=True")
    queued = wait_until(
        lambda: metric(scrape(operator.metrics_port), "mlmodel_metadata_writes_queued", component="operator"),
        what="writes queued",
    )

    started = time.monotonic()
    assert operator.stop() == 0
    assert time.monotonic() - started < 10  # the flush timeout, not the writer's backoff
    log = operator.log()
    assert "metadata writes lost at shutdown" in log
    assert "hunter2" not in log
    assert queued >= 3  # rollout, deployment row, health
