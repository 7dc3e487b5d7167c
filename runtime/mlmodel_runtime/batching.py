"""Adaptive micro-batching: requests that arrive while the model is busy are coalesced into its next
call, so throughput under load approaches the model's batch throughput while a lone request runs at
once, with no added wait."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from mlmodel_runtime.model import Outputs, Rows

logger = logging.getLogger("mlmodel_runtime.batching")

PredictFn = Callable[[Rows], Awaitable[Outputs]]


@dataclass
class _Pending:
    rows: Rows
    n_rows: int
    future: asyncio.Future[Outputs] = field(repr=False)
    queued_ns: int = 0
    started_ns: int = 0  # when its batch went to the model


def concatenate(parts: list[Rows]) -> Rows:
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)  # type: ignore[arg-type]
    merged: list[str] = []
    for part in parts:
        merged.extend(part)  # type: ignore[arg-type]
    return merged


def split(outputs: Outputs, sizes: list[int]) -> list[Outputs]:
    results: list[Outputs] = [{} for _ in sizes]
    for name, values in outputs.items():
        start = 0
        for index, size in enumerate(sizes):
            results[index][name] = values[start : start + size]
            start += size
    return results


class Batcher:
    """Coalesces concurrent ``submit`` calls into ``predict`` calls of at most ``max_batch_size`` rows
    (a single larger request runs alone, never split).

    One runner task drains the queue: while a model call runs, new requests queue up and go in
    the next call. When more than one request is already waiting (the server is under load), the
    runner waits up to ``max_wait_seconds`` for the batch to fill; a request that finds the model
    idle and nobody queued runs immediately.
    """

    def __init__(self, predict: PredictFn, *, max_batch_size: int, max_wait_seconds: float) -> None:
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_seconds = max_wait_seconds
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._runner: asyncio.Task[None] | None = None
        self._filled: asyncio.Future[None] | None = None  # set while the runner waits for more

    async def submit(self, rows: Rows, n_rows: int) -> Outputs:
        outputs, _ = await self.submit_timed(rows, n_rows)
        return outputs

    async def submit_timed(self, rows: Rows, n_rows: int) -> tuple[Outputs, int]:
        """``submit``, also returning the nanoseconds the rows waited before their batch started."""
        loop = asyncio.get_running_loop()
        pending = _Pending(rows, n_rows, loop.create_future(), time.perf_counter_ns())
        self._queue.append(pending)
        self._queued_rows += n_rows
        filled = self._filled
        if filled is not None and self._queued_rows >= self.max_batch_size and not filled.done():
            filled.set_result(None)
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run(), name="batcher")
        outputs = await pending.future
        return outputs, pending.started_ns - pending.queued_ns

    async def _run(self) -> None:
        while self._queue:
            if (
                len(self._queue) > 1
                and self._queued_rows < self.max_batch_size
                and self.max_wait_seconds > 0
            ):
                await self._wait_for_more()
            batch = self._take()
            await self._execute(batch)

    async def _wait_for_more(self) -> None:
        # A bare future and a timer: asyncio.wait_for would add a task and two callbacks per batch.
        loop = asyncio.get_running_loop()
        filled = self._filled = loop.create_future()
        timer = loop.call_later(self.max_wait_seconds, _set_if_pending, filled)
        try:
            await filled
        finally:
            timer.cancel()
            self._filled = None

    def _take(self) -> list[_Pending]:
        batch = [self._queue.popleft()]
        rows = batch[0].n_rows
        while self._queue and rows + self._queue[0].n_rows <= self.max_batch_size:
            item = self._queue.popleft()
            rows += item.n_rows
            batch.append(item)
        self._queued_rows -= rows
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        live = [item for item in batch if not item.future.done()]  # cancelled clients cost nothing
        if not live:
            return
        started = time.perf_counter_ns()
        for item in live:
            item.started_ns = started
        try:
            outputs = await self._predict(concatenate([item.rows for item in live]))
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request, not swallowed
            if len(live) == 1:
                _resolve(live[0], exc)
                return
            # One bad request must not fail its neighbours: run each alone to find the culprit.
            logger.info("batch failed, retrying requests one by one", extra={"requests": len(live)})
            for item in live:
                try:
                    _resolve(item, await self._predict(item.rows))
                except Exception as single_exc:  # noqa: BLE001 - handed to its request
                    _resolve(item, single_exc)
            return
        for item, result in zip(live, split(outputs, [item.n_rows for item in live]), strict=True):
            _resolve(item, result)


def _set_if_pending(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _resolve(item: _Pending, outcome: Outputs | BaseException) -> None:
    if item.future.done():
        return
    if isinstance(outcome, BaseException):
        item.future.set_exception(outcome)
    else:
        item.future.set_result(outcome)
