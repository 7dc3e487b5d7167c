"""Triton statistics shared by the workers of one server (stats.SharedStats), in files in a real
directory, as the workers of `serve --workers N` share them (test_server.py runs those)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from mlmodel_runtime.stats import InferenceStats, SharedStats


def _worker_stats(rows: int, batch: int, *, failed: int = 0, hits: int = 0) -> InferenceStats:
    stats = InferenceStats()
    for _ in range(rows // batch):
        stats.succeeded(
            rows=batch, total_ns=100, queue_ns=10, input_ns=20, infer_ns=50, output_ns=20
        )
        stats.executed(batch, 50)
    for _ in range(failed):
        stats.failed(7)
    for _ in range(hits):
        stats.cache_hit(3)
    return stats


def test_the_combined_answer_is_the_sum_of_every_worker(tmp_path: Path) -> None:
    first = SharedStats(_worker_stats(8, 2, failed=1), tmp_path, worker="a")
    second = SharedStats(_worker_stats(12, 4, hits=5), tmp_path, worker="b")
    first.publish()
    second.publish()
    second.stats.succeeded(rows=4, total_ns=1, queue_ns=0, input_ns=0, infer_ns=1, output_ns=0)
    # Each worker sees the other's published counts and its own as they are now.
    for view, own_extra in ((first, 0), (second, 1)):
        answer = view.combined().as_triton("m", "1")["model_stats"][0]
        inference = answer["inference_stats"]
        assert inference["success"]["count"] == 4 + 3 + own_extra
        assert inference["fail"] == {"count": 1, "ns": 7}
        assert inference["cache_hit"] == {"count": 5, "ns": 15}
        assert answer["inference_count"] == 20 + 4 * own_extra
        assert answer["execution_count"] == 7
        assert [
            (entry["batch_size"], entry["compute_infer"]["count"])
            for entry in answer["batch_stats"]
        ] == [
            (2, 4),
            (4, 3),
        ]


def test_publishing_writes_only_what_changed_and_atomically(tmp_path: Path) -> None:
    shared = SharedStats(_worker_stats(2, 1), tmp_path, worker="w")
    shared.publish()
    path = tmp_path / "stats-w.json"
    written = path.stat().st_mtime_ns
    path.write_text(json.dumps(shared.stats.snapshot()))  # the same counts, newer file
    rewritten = path.stat().st_mtime_ns
    shared.publish()  # nothing changed: no write
    assert path.stat().st_mtime_ns == rewritten >= written
    shared.stats.failed(5)
    shared.publish()
    assert json.loads(path.read_text())["counts"]["fail"] == 1
    assert sorted(item.name for item in tmp_path.iterdir()) == ["stats-w.json"]  # no temporary left


def test_a_running_worker_publishes_every_second_and_once_more_when_stopped(
    tmp_path: Path,
) -> None:
    async def scenario() -> tuple[int, int]:
        stats = InferenceStats()
        shared = SharedStats(stats, tmp_path, worker="w")
        reader = SharedStats(InferenceStats(), tmp_path, worker="r")
        task = asyncio.get_running_loop().create_task(shared.run())
        stats.failed(1)
        await asyncio.sleep(1.5)
        seen_running = reader.combined().counts["fail"]
        stats.failed(1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return seen_running, reader.combined().counts["fail"]

    assert asyncio.run(scenario()) == (1, 2)
