"""Per-model inference statistics in the form of Triton's statistics extension
(``GET /v2/models/{name}/stats``): request counts and cumulative nanoseconds, from what the data
plane measures anyway. Counted per worker process, since the last start."""

from __future__ import annotations

import time
from typing import Any

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
        self, *, rows: int, total_ns: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int
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
