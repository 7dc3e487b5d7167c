"""Per-model inference statistics in the form of Triton's statistics extension
(``GET /v2/models/{name}/stats``): request counts and cumulative nanoseconds, from what the data
plane measures anyway, since the server started.

With several workers each one publishes its counts to a file of its own in the directory the
workers share (``SharedStats``, once a second and when it stops) and answers with the sum of all
files, its own counts taken live: another worker's requests show within a second, and a worker
that died keeps its counts in the sum, as Prometheus counters do."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

logger = logging.getLogger("mlmodel_runtime.stats")

PUBLISH_SECONDS = 1.0

_PHASES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


def _duration(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}


class InferenceStats:
    def __init__(self) -> None:
        self.counts = dict.fromkeys(_PHASES, 0)
        self.ns = dict.fromkeys(_PHASES, 0)
        self.inference_count = 0  # rows predicted
        self.execution_count = 0  # model calls (batches)
        self.last_inference_ms = 0
        self.batches: dict[int, list[int]] = {}  # batch size -> [model calls, ns in the model]
        self.cache = {"cache_hit": [0, 0], "cache_miss": [0, 0]}  # [requests, ns in the cache]

    def succeeded(
        self,
        *,
        rows: int,
        total_ns: int,
        queue_ns: int,
        input_ns: int,
        infer_ns: int,
        output_ns: int,
    ) -> None:
        for phase, ns in (
            ("success", total_ns),
            ("queue", queue_ns),
            ("compute_input", input_ns),
            ("compute_infer", infer_ns),
            ("compute_output", output_ns),
        ):
            self.counts[phase] += 1
            self.ns[phase] += ns
        self.inference_count += rows
        self.last_inference_ms = time.time_ns() // 1_000_000

    def failed(self, total_ns: int) -> None:
        self.counts["fail"] += 1
        self.ns["fail"] += total_ns

    def cache_hit(self, ns: int) -> None:
        """A request answered from the prediction cache; ``ns`` to look it up and read it."""
        entry = self.cache["cache_hit"]
        entry[0] += 1
        entry[1] += ns

    def cache_miss(self, ns: int) -> None:
        """A request the cache could not answer; ``ns`` spent on the lookup and on the write."""
        entry = self.cache["cache_miss"]
        entry[0] += 1
        entry[1] += ns

    def executed(self, batch_size: int, ns: int) -> None:
        self.execution_count += 1
        entry = self.batches.get(batch_size)
        if entry is None:
            entry = self.batches[batch_size] = [0, 0]
        entry[0] += 1
        entry[1] += ns

    def snapshot(self) -> dict[str, Any]:
        """The counts as JSON-ready data, for ``add`` in another process."""
        return {
            "counts": dict(self.counts),
            "ns": dict(self.ns),
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "last_inference_ms": self.last_inference_ms,
            "batches": {str(size): list(entry) for size, entry in self.batches.items()},
            "cache": {kind: list(entry) for kind, entry in self.cache.items()},
        }

    def add(self, snapshot: dict[str, Any]) -> None:
        """Count what ``snapshot`` (another worker's) counted, too."""
        for phase in _PHASES:
            self.counts[phase] += snapshot["counts"][phase]
            self.ns[phase] += snapshot["ns"][phase]
        self.inference_count += snapshot["inference_count"]
        self.execution_count += snapshot["execution_count"]
        self.last_inference_ms = max(self.last_inference_ms, snapshot["last_inference_ms"])
        for size, (calls, ns) in snapshot["batches"].items():
            entry = self.batches.setdefault(int(size), [0, 0])
            entry[0] += calls
            entry[1] += ns
        for kind, (count, ns) in snapshot["cache"].items():
            self.cache[kind][0] += count
            self.cache[kind][1] += ns

    def as_triton(self, name: str, version: str) -> dict[str, Any]:
        """The body of Triton's statistics extension for this one model."""
        inference_stats = {
            phase: _duration(self.counts[phase], self.ns[phase]) for phase in _PHASES
        }
        # Without a prediction cache (spec.cache) both stay at zero.
        for kind, (count, ns) in self.cache.items():
            inference_stats[kind] = _duration(count, ns)
        return {
            "model_stats": [
                {
                    "name": name,
                    "version": version,
                    "last_inference": self.last_inference_ms,
                    "inference_count": self.inference_count,
                    "execution_count": self.execution_count,
                    "inference_stats": inference_stats,
                    # Input decoding and output encoding happen per request (inference_stats), not
                    # per batch: here they are counted with no time.
                    "batch_stats": [
                        {
                            "batch_size": size,
                            "compute_input": _duration(calls, 0),
                            "compute_infer": _duration(calls, ns),
                            "compute_output": _duration(calls, 0),
                        }
                        for size, (calls, ns) in sorted(self.batches.items())
                    ],
                }
            ]
        }


class SharedStats:
    """One worker's ``stats`` published in ``directory`` (shared by the server's workers), and the
    whole server's counts read back from there. ``worker`` names this worker's file; by default
    the pid and a random suffix, so a restarted worker never takes over a dead one's file."""

    def __init__(
        self, stats: InferenceStats, directory: str | Path, worker: str | None = None
    ) -> None:
        self.stats = stats
        self.directory = Path(directory)
        self.name = f"stats-{worker or f'{os.getpid()}-{uuid.uuid4().hex[:8]}'}.json"
        self._published: dict[str, Any] | None = None

    def publish(self) -> None:
        """Write this worker's counts when they changed since the last time (atomically: a
        reader sees the old file or the new one)."""
        snapshot = self.stats.snapshot()
        if snapshot == self._published:
            return
        temporary = self.directory / f".{self.name}.tmp"
        temporary.write_text(json.dumps(snapshot))
        os.replace(temporary, self.directory / self.name)
        self._published = snapshot

    def combined(self) -> InferenceStats:
        """Every worker's counts: this one's as they are now, the others' as last published."""
        total = InferenceStats()
        total.add(self.stats.snapshot())
        for path in self.directory.glob("stats-*.json"):
            if path.name == self.name:
                continue
            try:
                total.add(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # Not expected (writes are atomic): the answer then lacks one worker, and says so.
                logger.warning(
                    "a worker's statistics could not be read",
                    extra={"path": str(path), "error": str(exc)},
                )
        return total

    async def run(self) -> None:
        """Publish once a second until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(PUBLISH_SECONDS)
                self._publish_logged()
        finally:
            self._publish_logged()

    def _publish_logged(self) -> None:
        try:
            self.publish()
        except OSError as exc:  # a full or vanished directory: the next second tries again
            logger.warning(
                "statistics not shared with the other workers",
                extra={"directory": str(self.directory), "error": str(exc)},
            )
