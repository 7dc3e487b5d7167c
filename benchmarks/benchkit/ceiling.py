"""The model's own throughput in this process, with no server in the way: the ceiling for a server."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Ceiling:
    batch_size: int
    texts_per_second: float
    calls: int


def measure(model: Any, texts: list[str], batch_size: int, seconds: float) -> Ceiling:
    """Call `model.predict` on consecutive batches of `texts` for about `seconds`."""
    batches = [
        [texts[(start + offset) % len(texts)] for offset in range(batch_size)]
        for start in range(0, len(texts), batch_size)
    ]
    model.predict(batches[0])  # first-call costs (lazy imports, caches) are not throughput
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        model.predict(batches[calls % len(batches)])
        calls += 1
    return Ceiling(batch_size, calls * batch_size / elapsed, calls)


def measure_artifact(
    artifact: Path, texts: list[str], batch_sizes: list[int], seconds: float
) -> list[Ceiling]:
    import joblib  # the project environment has it; imported here so --help stays instant

    model = joblib.load(artifact)
    return [measure(model, texts, size, seconds) for size in batch_sizes]
