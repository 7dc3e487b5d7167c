"""The prediction cache: a model's outputs for a request's rows, kept in Redis under a key made of
the model's digest and the rows as the model sees them, so a new artifact never serves old answers.
Redis being slow or down never fails or stalls a prediction: every call has a short timeout, and
after a failure the cache is not even tried for a while (doubling up to a few seconds), so a dead
Redis costs nothing per request; one request at a time probes it again."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

import numpy as np
import orjson

from mlmodel_runtime.codec import DecodedRequest
from mlmodel_runtime.metrics import RuntimeMetrics
from mlmodel_runtime.model import Outputs

logger = logging.getLogger("mlmodel_runtime.cache")

# Bumped whenever the key or the entry format changes: old entries then simply miss.
FORMAT = b"mlmodel-prediction-cache/1"
KEY_PREFIX = "mlmodel:prediction:"
# Writes are not awaited by the request; beyond this many queued, new ones are dropped.
MAX_PENDING_WRITES = 1024
_FAILED = object()  # what a lookup gets when Redis failed
# Array kinds stored as raw bytes: bool, ints, floats, complex, fixed-width bytes and unicode.
# Anything else (object arrays) goes as a JSON list; an entry never holds a pickle.
_RAW_KINDS = frozenset("biufcSU")


def cache_policy(cache_control: str | None) -> tuple[bool, bool]:
    """Whether a request may be answered from the cache, and whether its answer may be stored,
    from its Cache-Control header: ``no-cache`` asks for a fresh answer (stored for the next
    request), ``no-store`` for one that is neither read from nor written to the cache."""
    if not cache_control:
        return True, True
    directives = {part.split("=", 1)[0].strip().lower() for part in cache_control.split(",")}
    if "no-store" in directives:
        return False, False
    return "no-cache" not in directives, True


class EntryError(ValueError):
    """A cache entry that cannot be read back (another format, or corrupt): served as a miss."""


def request_key(*, digest: str, name: str, version: str, request: DecodedRequest) -> str:
    """The key of a request's answer: the model (its sha256 digest, name and version), the rows the
    model is given (their values, types and shape, whatever protocol and encoding carried them) and
    the outputs asked for. Nothing else in a request changes what the model returns: ``id`` and
    ``parameters`` are echoed into the response, not given to the model."""
    key = hashlib.blake2b(FORMAT, digest_size=32)
    for part in (digest, name, version, "\x1f".join(request.outputs)):
        key.update(part.encode())
        key.update(b"\x00")
    rows = request.rows
    if isinstance(rows, np.ndarray):
        rows = np.ascontiguousarray(rows)
        key.update(f"array {rows.dtype.str} {rows.shape}\x00".encode())
        key.update(rows.data)
    else:
        key.update(b"texts\x00")
        key.update(orjson.dumps(rows))
    return KEY_PREFIX + key.hexdigest()


def encode_entry(outputs: Outputs) -> bytes:
    """``outputs`` as one Redis value: a JSON header (name, dtype, shape and length of each array),
    a newline, then the arrays' bytes."""
    header = []
    chunks = []
    for name, values in outputs.items():
        values = np.asarray(values)
        if values.dtype.kind in _RAW_KINDS:
            raw = np.ascontiguousarray(values).tobytes()
            dtype = values.dtype.str
        else:
            raw = orjson.dumps(values.ravel().tolist(), option=orjson.OPT_SERIALIZE_NUMPY)
            dtype = "json"
        header.append([name, dtype, list(values.shape), len(raw)])
        chunks.append(raw)
    return b"".join([orjson.dumps(header), b"\n", *chunks])


def decode_entry(entry: bytes) -> Outputs:
    head, sep, body = entry.partition(b"\n")
    if not sep:
        raise EntryError("no header")
    try:
        header = orjson.loads(head)
        outputs: Outputs = {}
        offset = 0
        for name, dtype, shape, length in header:
            raw = body[offset : offset + length]
            if len(raw) != length:
                raise EntryError("truncated")
            offset += length
            if dtype == "json":
                values = np.empty(len(items := orjson.loads(raw)), dtype=object)
                values[:] = items
                outputs[name] = values.reshape(shape)
                continue
            kind = np.dtype(dtype)
            if kind.kind not in _RAW_KINDS:
                raise EntryError(f"dtype {dtype} is not stored raw")
            outputs[name] = np.frombuffer(raw, dtype=kind).reshape(shape)
    except (ValueError, TypeError) as exc:
        raise EntryError(str(exc)) from None
    if offset != len(body):
        raise EntryError("trailing bytes")
    return outputs


class PredictionCache:
    """Reads and writes prediction outputs in Redis for one runtime process, counting every lookup
    (``mlmodel_cache_requests_total{result}``) and write (``mlmodel_cache_writes_total{result}``)."""

    def __init__(
        self,
        client: Any,
        *,
        metrics: RuntimeMetrics,
        ttl_seconds: int,
        max_entry_bytes: int,
        timeout_seconds: float,
        backoff_seconds: float = 0.5,
        backoff_max_seconds: float = 5.0,
    ) -> None:
        self.client = client  # a redis.asyncio.Redis
        self.metrics = metrics
        self.ttl_seconds = ttl_seconds
        self.max_entry_bytes = max_entry_bytes
        self.timeout_seconds = timeout_seconds
        self._backoff_initial = backoff_seconds
        self._backoff_max = backoff_max_seconds
        self._backoff = backoff_seconds
        self._down_until = 0.0  # monotonic time before which Redis is not tried
        self._failing = False
        self._probing = False  # a request is trying Redis again after a failure
        self._lookups: list[tuple[str, asyncio.Future[Any]]] = []  # waiting for the next MGET
        self._stores: list[tuple[str, bytes]] = []  # waiting for the next pipeline of SETs
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # reader, writer, disconnects
        self._up = metrics.cache_up.labels(metrics.model)
        self._up.set(1)

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        metrics: RuntimeMetrics,
        ttl_seconds: int,
        max_entry_bytes: int,
        timeout_seconds: float,
    ) -> PredictionCache:
        """A cache on the Redis at ``url`` (redis://, rediss:// or unix://); nothing is sent until
        the first prediction."""
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            # Our own back-off decides when to try again; redis-py's retries would stall requests.
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
            client_name="mlmodel-runtime",
        )
        return cls(
            client,
            metrics=metrics,
            ttl_seconds=ttl_seconds,
            max_entry_bytes=max_entry_bytes,
            timeout_seconds=timeout_seconds,
        )

    # --- the back-off ------------------------------------------------------------------------

    def _may_try(self) -> bool:
        if not self._failing:
            return True
        if self._probing or time.monotonic() < self._down_until:
            return False
        self._probing = True  # this caller probes; the others keep skipping until it knows
        return True

    def _failed(self, action: str, exc: BaseException) -> None:
        if self._failing and not self._probing:
            return  # a call begun before Redis failed: the back-off under way stands
        self._probing = False
        self._down_until = time.monotonic() + self._backoff
        # The pool's other connections went to the same failed server: each would fail once more
        # when reused (a restarted Redis), so the next probe starts afresh.
        self._background(self._disconnect())
        if not self._failing:
            self._failing = True
            self._up.set(0)
            logger.warning(
                "prediction cache unavailable, serving without it",
                extra={"action": action, "error": f"{type(exc).__name__}: {exc}",
                       "retry_seconds": self._backoff},
            )  # fmt: skip
        self._backoff = min(self._backoff * 2, self._backoff_max)

    def _succeeded(self) -> None:
        if self._failing:
            self._failing = self._probing = False
            self._backoff = self._backoff_initial
            self._up.set(1)
            logger.info("prediction cache available again")

    # --- lookups and writes ------------------------------------------------------------------
    # Requests that arrive together share one round trip: while an MGET (or a pipeline of SETs) is
    # out, new keys queue, and the next one takes them all, as the batcher does for the model. One
    # command per request would cost ~50 us of CPU each in redis-py, a tenth of a fast prediction.

    def bypassed(self) -> None:
        """A request that asked not to be answered from the cache (Cache-Control: no-cache)."""
        self.metrics.cache_lookup("bypass")

    async def get(self, key: str) -> Outputs | None:
        """The stored outputs, or None (a miss, or Redis failing: the model answers either way)."""
        if not self._may_try():
            self.metrics.cache_lookup("skipped")
            return None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._lookups.append((key, future))
        if self._reader is None:
            self._reader = self._background(self._read_queued())
        entry = await future
        if entry is _FAILED:
            self.metrics.cache_lookup("error")
            return None
        if entry is None:
            self.metrics.cache_lookup("miss")
            return None
        try:
            outputs = decode_entry(entry)
        except EntryError as exc:
            logger.warning(
                "unreadable prediction cache entry", extra={"key": key, "error": str(exc)}
            )
            self.metrics.cache_lookup("error")
            return None
        self.metrics.cache_lookup("hit")
        return outputs

    async def _read_queued(self) -> None:
        batch: list[tuple[str, asyncio.Future[Any]]] = []
        try:
            while self._lookups:
                batch, self._lookups = self._lookups, []
                try:
                    async with asyncio.timeout(self.timeout_seconds):
                        entries = await self.client.mget([key for key, _ in batch])
                except Exception as exc:  # noqa: BLE001 - whatever Redis does, the model answers
                    self._failed("get", exc)
                    # Those queued meanwhile would wait for the same failure: they fail now.
                    batch, self._lookups = batch + self._lookups, []
                    entries = [_FAILED] * len(batch)
                else:
                    self._succeeded()
                for (_, future), entry in zip(batch, entries, strict=True):
                    if not future.done():
                        future.set_result(entry)
        finally:
            self._reader = None
            # Cancelled (the loop is closing): nobody waits forever for an answer.
            for _, future in batch + self._lookups:
                if not future.done():
                    future.set_result(_FAILED)

    def put(self, key: str, outputs: Outputs) -> None:
        """Store ``outputs`` under ``key`` in the background: the response does not wait for it."""
        if not self._may_try():
            self.metrics.cache_write("skipped")
            return
        entry = encode_entry(outputs)
        if len(entry) > self.max_entry_bytes:
            self._probing = False
            self.metrics.cache_write("too_large")
            return
        if len(self._stores) >= MAX_PENDING_WRITES:
            self._probing = False
            self.metrics.cache_write("dropped")
            return
        self._stores.append((key, entry))
        if self._writer is None:
            self._writer = self._background(self._write_queued())

    async def _write_queued(self) -> None:
        try:
            while self._stores:
                batch, self._stores = self._stores, []
                try:
                    async with asyncio.timeout(self.timeout_seconds):
                        async with self.client.pipeline(transaction=False) as pipe:
                            for key, entry in batch:
                                pipe.set(key, entry, ex=self.ttl_seconds)
                            await pipe.execute()
                except Exception as exc:  # noqa: BLE001
                    self._failed("set", exc)
                    batch, self._stores = batch + self._stores, []
                    for _ in batch:
                        self.metrics.cache_write("error")
                    continue
                self._succeeded()
                for _ in batch:
                    self.metrics.cache_write("stored")
        finally:
            self._writer = None

    def _background(self, work: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _disconnect(self) -> None:
        try:
            await self.client.connection_pool.disconnect()
        except Exception:
            logger.debug("closing the prediction cache's connections failed", exc_info=True)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.timeout_seconds)
        try:
            await self.client.aclose()
        except Exception:
            logger.debug("closing the prediction cache's connections failed", exc_info=True)
