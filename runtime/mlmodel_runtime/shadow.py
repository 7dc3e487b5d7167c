"""Shadow traffic: a sampled share of predictions mirrored to a candidate model, and how often
the candidate agrees with the model that answered.

The client's answer is sent first; the mirror runs afterwards as a task of its own, bounded in
number (a busy shadow is skipped, never queued behind) and in time, so the shadow can never slow
or fail a client. Its answer is compared row by row with the one the client got: classifiers by
their label, numbers by relative error. Agreement goes to the metrics; a sample of the
disagreements (both answers and the request) to the metadata store.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

logger = logging.getLogger("mlmodel_runtime.shadow")



@dataclass(frozen=True)
class Comparison:
    """Rows of one prediction on which the shadow agreed and disagreed with the served answer."""

    agreed: int
    disagreed: int
    # The first disagreeing row: (served, shadow), for the store.
    example: tuple[Any, Any] | None = None


def _close(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return bool(a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return abs(a - b) <= tolerance * max(abs(a), abs(b), 1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, tolerance) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        keys = ["label"] if "label" in a and "label" in b else sorted(a)
        return set(a) == set(b) and all(_close(a[k], b[k], tolerance) for k in keys)
    return bool(a == b)


def _rows(output: dict[str, Any]) -> list[Any]:
    """A V2 output tensor's data as one item per row (its first dimension)."""
    data = output.get("data") or []
    shape = output.get("shape") or [len(data)]
    count = int(shape[0]) if shape else len(data)
    if count <= 0:
        return []
    width = max(len(data) // count, 1)
    return [data[index * width : (index + 1) * width] for index in range(count)]


def _compared_outputs(outputs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Which outputs decide agreement: a classifier's labels (its BYTES outputs), else all."""
    labels = [output for output in outputs if output.get("datatype") == "BYTES"]
    return labels or list(outputs)


def _compare_rows(pairs: Iterable[tuple[Any, Any]], tolerance: float) -> Comparison:
    agreed = disagreed = 0
    example = None
    for mine, theirs in pairs:
        if _close(mine, theirs, tolerance):
            agreed += 1
        else:
            disagreed += 1
            if example is None:
                example = (mine, theirs)
    return Comparison(agreed, disagreed, example)


def _row(rows: Sequence[Any], index: int) -> Any:
    return rows[index] if index < len(rows) else None


def compare_v2(served: dict[str, Any], shadow: dict[str, Any], tolerance: float) -> Comparison:
    """Row agreement of two V2 responses: every compared output equal (labels) or within
    `tolerance` relative error (numbers) on a row."""
    theirs = {output.get("name"): output for output in shadow.get("outputs") or ()}
    compared = _compared_outputs(served.get("outputs") or ())
    ours_rows = [_rows(output) for output in compared]
    theirs_rows = [_rows(theirs.get(output.get("name")) or {}) for output in compared]
    count = max((len(rows) for rows in ours_rows), default=0)
    pairs = (
        ([_row(rows, index) for rows in ours_rows], [_row(rows, index) for rows in theirs_rows])
        for index in range(count)
    )
    return _compare_rows(pairs, tolerance)


def compare_v1(served: dict[str, Any], shadow: dict[str, Any], tolerance: float) -> Comparison:
    """Row agreement of two V1 responses (`predictions`, one item per instance)."""
    mine = served.get("predictions") or []
    other = shadow.get("predictions") or []
    return _compare_rows(((row, _row(other, index)) for index, row in enumerate(mine)), tolerance)


class ShadowMirror:
    """Mirrors sampled predictions of one model to `url` (the shadow runtime's base URL)."""

    def __init__(
        self,
        url: str,
        *,
        sample_rate: float,
        model_names: tuple[str, str] | None = None,
        metrics: Any,
        timeout_seconds: float = 2.0,
        max_in_flight: int = 16,
        tolerance: float = 1e-3,
        record: Callable[[dict[str, Any]], object] | None = None,
        records_per_minute: int = 6,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        # (served, shadow): the shadow serves its model under another name; paths are renamed.
        self._renamed = (
            (f"/models/{model_names[0]}", f"/models/{model_names[1]}")
            if model_names and model_names[0] != model_names[1]
            else None
        )
        self.sample_rate = sample_rate
        self.metrics = metrics
        self.tolerance = tolerance
        self.max_in_flight = max_in_flight
        self._record = record
        self._records_per_minute = records_per_minute
        self._recorded: list[float] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds),
            limits=httpx.Limits(max_connections=max_in_flight),
            transport=transport,
        )

    def mirror(
        self,
        path: str,
        body: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        served: bytes,
        *,
        v2: bool,
    ) -> None:
        """Called after the client got `served` (a JSON request and answer: binary tensor
        bodies are not mirrored): maybe send `body` to the shadow too."""
        if self.sample_rate < 1.0 and random.random() >= self.sample_rate:
            return
        authorization = next((value for key, value in headers if key == b"authorization"), b"")
        if len(self._tasks) >= self.max_in_flight:
            self.metrics.shadow_request("skipped")  # the shadow is slow: never queue behind it
            return
        task = asyncio.get_running_loop().create_task(
            self._mirror(path, body, authorization, served, v2)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def skipped(self) -> None:
        """A prediction that is not mirrored (binary tensors), counted as such when sampled."""
        if self.sample_rate >= 1.0 or random.random() < self.sample_rate:
            self.metrics.shadow_request("skipped")

    async def _mirror(
        self, path: str, body: bytes, authorization: bytes, served: bytes, v2: bool
    ) -> None:
        headers = {"cache-control": "no-cache", "content-type": "application/json"}
        if authorization:
            headers["authorization"] = authorization.decode("latin-1")
        if self._renamed is not None:
            path = path.replace(self._renamed[0], self._renamed[1], 1)
        try:
            response = await self._client.post(self.url + path, content=body, headers=headers)
        except httpx.HTTPError as error:
            self.metrics.shadow_request("failed")
            logger.debug("shadow request failed", extra={"error": repr(error)})
            return
        if response.status_code != 200:
            self.metrics.shadow_request("failed")
            logger.debug("shadow answered %s", response.status_code)
            return
        try:
            ours, theirs = orjson.loads(served), orjson.loads(response.content)
        except orjson.JSONDecodeError:
            self.metrics.shadow_request("failed")
            return
        compare = compare_v2 if v2 else compare_v1
        result = compare(ours, theirs, self.tolerance)
        self.metrics.shadow_request("compared")
        self.metrics.shadow_rows(result.agreed, result.disagreed)
        if result.example is not None:
            self._keep(path, body, result.example)

    def _keep(self, path: str, body: bytes, example: tuple[Any, Any]) -> None:
        """Record a disagreement in the store, at most `records_per_minute` of them."""
        if self._record is None:
            return
        now = time.monotonic()
        self._recorded = [at for at in self._recorded if now - at < 60.0]
        if len(self._recorded) >= self._records_per_minute:
            return
        self._recorded.append(now)
        try:
            request: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            request = None
        self._record({"path": path, "request": request, "served": example[0], "shadow": example[1]})

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()
