"""Adaptive batching: concurrent requests share model calls, results go back to the right request,
a lone request runs at once, and one bad request does not fail its neighbours."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import numpy as np
import pytest
from mlmodel_runtime.batching import Batcher
from support.runtime import Models, running_app, settings_for


class RecordingModel:
    """A real (tiny) model function: doubles each row after a pause, refusing negative rows, and
    remembers the size of every call it served."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.calls: list[int] = []

    async def predict(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        self.calls.append(len(rows))
        await asyncio.sleep(self.delay)
        if (rows < 0).any():
            raise ValueError("negative rows are refused")
        return {"predict": rows[:, 0] * 2}


def rows(*values: float) -> np.ndarray:
    return np.array(values, dtype=float).reshape(-1, 1)


async def test_concurrent_requests_coalesce_and_map_back() -> None:
    model = RecordingModel()
    batcher = Batcher(model.predict, max_batch_size=64, max_wait_seconds=0.001)
    requests = [rows(i, i + 0.5) for i in range(20)]
    results = await asyncio.gather(*(batcher.submit(request, 2) for request in requests))
    for request, result in zip(requests, results, strict=True):
        assert result["predict"].tolist() == (request[:, 0] * 2).tolist()
    assert sum(model.calls) == 40
    assert len(model.calls) < 20  # coalesced: fewer model calls than requests
    assert max(model.calls) > 2


async def test_a_lone_request_runs_immediately() -> None:
    model = RecordingModel(delay=0.0)
    batcher = Batcher(model.predict, max_batch_size=64, max_wait_seconds=5.0)
    started = time.perf_counter()
    result = await batcher.submit(rows(21.0), 1)
    assert time.perf_counter() - started < 1.0  # never waits the 5 s for company
    assert result["predict"].tolist() == [42.0]
    assert model.calls == [1]


async def test_batches_respect_the_maximum_size() -> None:
    model = RecordingModel()
    batcher = Batcher(model.predict, max_batch_size=4, max_wait_seconds=0.001)
    results = await asyncio.gather(*(batcher.submit(rows(i), 1) for i in range(10)))
    assert [result["predict"][0] for result in results] == [2.0 * i for i in range(10)]
    assert max(model.calls) <= 4 and sum(model.calls) == 10
    # A single request bigger than the maximum runs alone, whole.
    big = await batcher.submit(rows(*range(9)), 9)
    assert big["predict"].tolist() == [2.0 * i for i in range(9)]
    assert model.calls[-1] == 9


async def test_one_bad_request_does_not_fail_the_others() -> None:
    model = RecordingModel()
    batcher = Batcher(model.predict, max_batch_size=64, max_wait_seconds=0.001)
    # The first request keeps the model busy, so the next three queue up and share one call.
    blocker = asyncio.ensure_future(batcher.submit(rows(0), 1))
    await asyncio.sleep(0)
    outcomes = await asyncio.gather(
        batcher.submit(rows(1), 1), batcher.submit(rows(-1), 1), batcher.submit(rows(3), 1),
        return_exceptions=True,
    )  # fmt: skip
    await blocker
    assert outcomes[0]["predict"].tolist() == [2.0]
    assert isinstance(outcomes[1], ValueError) and "negative rows" in str(outcomes[1])
    assert outcomes[2]["predict"].tolist() == [6.0]
    assert model.calls[:2] == [1, 3]  # the blocker, then the failed batch of three, then one by one
    assert model.calls[2:] == [1, 1, 1]


async def test_cancelled_requests_are_skipped() -> None:
    model = RecordingModel()
    batcher = Batcher(model.predict, max_batch_size=64, max_wait_seconds=0.001)
    blocker = asyncio.ensure_future(batcher.submit(rows(0), 1))
    await asyncio.sleep(0)
    gone = asyncio.ensure_future(batcher.submit(rows(5), 1))
    kept = asyncio.ensure_future(batcher.submit(rows(6), 1))
    await asyncio.sleep(0)
    gone.cancel()
    assert (await kept)["predict"].tolist() == [12.0]
    await blocker
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert model.calls == [1, 1]


async def test_http_requests_coalesce_in_the_runtime(models: Models, tmp_path: Path) -> None:
    """Through the whole app with a real (slow) scikit-learn model: the batch-size metric shows
    coalescing, and every response carries its own request's predictions."""
    settings = settings_for(models.slow, tmp_path, "slow", max_batch_size=64, max_batch_wait_ms=2)

    def body(value: float) -> dict:
        return {
            "id": f"r{value}",
            "inputs": [{"name": "input-0", "shape": [1, 1], "datatype": "FP64", "data": [value]}],
        }

    async with running_app(settings) as rt:
        values = [float(i) for i in range(12)]
        responses = await asyncio.gather(
            *(rt.client.post("/v2/models/slow/infer", json=body(value)) for value in values)
        )
        for value, response in zip(values, responses, strict=True):
            assert response.status_code == 200, response.text
            assert response.json()["id"] == f"r{value}"
            assert response.json()["outputs"][0]["data"] == [value * 2]
        metrics = (await rt.client.get("/metrics")).text
        count = float(
            re.search(r'mlmodel_batch_size_count\{model="slow"\} (\S+)', metrics).group(1)
        )
        total = float(re.search(r'mlmodel_batch_size_sum\{model="slow"\} (\S+)', metrics).group(1))
        assert total == 12  # every row scored once (the warm-up call is not counted)
        # Fewer model calls than requests (0.2 s each: 12 calls in a row would take 2.4 s).
        assert count < 12
