"""The runtime's business logic, free of HTTP: load lifecycle and readiness, inference through the
batcher, metadata. Routes call it; it raises MLModelError subclasses for the app to render."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from mlmodel_runtime import __version__, codec
from mlmodel_runtime.artifacts import ArtifactError
from mlmodel_runtime.batching import Batcher
from mlmodel_runtime.cache import PredictionCache, cache_policy, request_key
from mlmodel_runtime.errors import (
    BadRequest,
    InferenceFailed,
    MLModelError,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
)
from mlmodel_runtime.metrics import RuntimeMetrics, shared_directory
from mlmodel_runtime.model import (
    LABEL_OUTPUT,
    Model,
    ModelLoadError,
    Outputs,
    Rows,
    Signature,
    SKLearnModel,
)
from mlmodel_runtime.settings import RuntimeSettings
from mlmodel_runtime.shadow import ShadowMirror
from mlmodel_runtime.stats import InferenceStats, SharedStats

logger = logging.getLogger("mlmodel_runtime.dataplane")

SERVER_NAME = "mlmodel-runtime"
# Protocol extensions served in full, as GET /v2 and gRPC ServerMetadata name them (Triton's names).
# Not model_repository: the index is served, but load and unload are refused (one model per runtime).
EXTENSIONS = ("binary_tensor_data", "statistics")
LOADING = "Loading"
SHUTTING_DOWN = "ShuttingDown"
# Longest the metadata store may hold up shutdown to flush "stopped" and queued rows.
METADATA_FLUSH_SECONDS = 5.0
# Sampled predictions keep at most this many rows: the store cuts payloads to a few KB anyway.
LOGGED_ROWS = 1000

# (settings, report each failure) -> verified local artifact path
Fetcher = Callable[[RuntimeSettings, Callable[[Any], None]], Awaitable[Path]]
Encoded = TypeVar("Encoded")


def _default_fetcher() -> Fetcher:
    from mlmodel_runtime.artifacts import fetch_artifact_with_retry

    return fetch_artifact_with_retry


def build_model(settings: RuntimeSettings) -> Model:
    if settings.model_format == "sklearn":
        return SKLearnModel(settings.model_name, settings.model_version)
    if settings.model_format == "onnx":
        from mlmodel_runtime.onnx_model import OnnxModel  # onnxruntime only when asked for

        return OnnxModel(settings.model_name, settings.model_version)
    raise ModelLoadError(
        "UnsupportedFormat",
        f"model format {settings.model_format!r} is not served by this runtime: use sklearn or onnx",
    )


def build_dataplane(
    settings: RuntimeSettings, *, log_fields: dict[str, Any] | None = None
) -> DataPlane:
    """The data plane of a serving process: metrics, and the metadata recorder (PostgreSQL at
    ``database_url``, else SQLite in the cache dir) exporting its own metrics in the same registry."""
    metrics = RuntimeMetrics(settings.model_name)
    recorder = None
    from mlmodel_store.urls import resolve_database_url, scrub

    from mlmodel_runtime.recorder import RuntimeRecorder

    try:
        recorder = RuntimeRecorder.from_settings(settings, registry=metrics.registry)
    except Exception as exc:  # noqa: BLE001 - a bad URL must not stop serving: say so, serve on
        url = resolve_database_url(settings.database_url, settings.cache_dir)
        logger.error(
            "metadata store disabled",
            extra={"reason": "StoreMisconfigured", "error": scrub(str(exc), url)},
        )
    cache = None
    if settings.cache_redis_url is not None:
        cache = PredictionCache.connect(
            settings.cache_redis_url.get_secret_value(),
            metrics=metrics,
            ttl_seconds=settings.cache_ttl_seconds,
            max_entry_bytes=settings.cache_max_entry_bytes,
            timeout_seconds=settings.cache_timeout_ms / 1000.0,
        )
    shadow = None
    if settings.shadow_url:
        shadow = ShadowMirror(
            settings.shadow_url,
            sample_rate=settings.shadow_sample_rate,
            model_names=(settings.model_name, settings.shadow_model_name or settings.model_name),
            metrics=metrics,
            timeout_seconds=settings.shadow_timeout_seconds,
            max_in_flight=settings.shadow_max_in_flight,
            tolerance=settings.shadow_tolerance,
            record=recorder.log_disagreement if recorder is not None else None,
        )
    return DataPlane(
        settings,
        metrics=metrics,
        recorder=recorder,
        log_fields=log_fields,
        cache=cache,
        shadow=shadow,
    )


def reserved_bytes(declared_length: str | None, limit: int) -> int:
    """Memory to reserve for a request body before reading it: its declared length (at most
    ``limit``, the reader refuses more), or ``limit`` when undeclared or unreadable."""
    try:
        return min(int(declared_length), limit) if declared_length is not None else limit
    except ValueError:
        return limit


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class DataPlane:
    def __init__(
        self,
        settings: RuntimeSettings,
        *,
        metrics: RuntimeMetrics | None = None,
        model: Model | None = None,
        fetch: Fetcher | None = None,
        log_fields: dict[str, Any] | None = None,
        recorder: Any = None,
        cache: PredictionCache | None = None,
        shadow: ShadowMirror | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.model_name
        self.version = settings.model_version
        self.metrics = metrics or RuntimeMetrics(settings.model_name)
        self._model = model
        self._fetch = fetch
        self.log_fields = log_fields if log_fields is not None else {}
        self.recorder = recorder  # store.RuntimeRecorder, optional: sampled predictions, heartbeats
        self.cache = cache  # answers repeat requests from Redis (spec.cache), optional
        self.shadow = shadow  # mirrors sampled predictions to a candidate (spec.shadow), optional
        self.digest = settings.model_sha256 or ""
        self.reason = LOADING
        self.message = "fetching and verifying the model artifact"
        self.shutting_down = False
        self._shutdown_announced = False
        self.in_flight = 0  # prediction requests admitted: reading, queued or in the model
        self.bytes_in_flight = 0  # request bytes those hold (reserved before reading)
        self._loaded = False
        self._batcher: Batcher | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._started = time.monotonic()
        self.stats = InferenceStats()
        directory = shared_directory()  # several workers: statistics are the server's
        self.shared_stats = SharedStats(self.stats, directory) if directory else None
        self._share_task: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin fetching and loading in the background: the server answers health checks meanwhile."""
        self._started = time.monotonic()
        if self.recorder is not None:
            self.recorder.start()
        loop = asyncio.get_running_loop()
        self._load_task = loop.create_task(self._load(), name="model-load")
        if self.shared_stats is not None:
            self._share_task = loop.create_task(self.shared_stats.run(), name="share-statistics")

    async def wait_loaded(self) -> None:
        if self._load_task is not None:
            await asyncio.shield(self._load_task)

    async def stop(self) -> None:
        self.begin_shutdown()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
            await asyncio.gather(self._load_task, return_exceptions=True)
        if self._share_task is not None:
            self._share_task.cancel()  # publishes once more
            await asyncio.gather(self._share_task, return_exceptions=True)
        if self._model is not None:
            await self._model.unload()
        if self.cache is not None:
            await self.cache.close()
        if self.shadow is not None:
            await self.shadow.close()
        if self.recorder is not None:
            # Marks this instance stopped; bounded so a database outage cannot eat the grace period.
            flush_seconds = min(
                METADATA_FLUSH_SECONDS, max(self.settings.shutdown_grace_seconds, 0.5)
            )
            await self.recorder.close(timeout=flush_seconds)

    def begin_shutdown(self) -> None:
        """Report not-ready from now on; requests in flight (and new ones) are still served."""
        self.shutting_down = True  # a signal handler may already have set it (see server.py)
        if not self._shutdown_announced:
            self._shutdown_announced = True
            self.metrics.ready.set(0)
            logger.info("shutting down, readiness now false", extra={"in_flight": self.in_flight})

    async def _load(self) -> None:
        try:
            model = self._model = self._model or build_model(self.settings)
            fetch = self._fetch or _default_fetcher()
            path = await fetch(self.settings, self._artifact_failed)
            self.message = "artifact verified, loading the model"
            await model.load(path)
            if not self.digest:
                self.digest = await asyncio.to_thread(_file_sha256, path)
        except ModelLoadError as exc:
            self._failed(exc.reason, exc.message)
            logger.error("model load failed", extra={"reason": exc.reason, "error": exc.message})
            return
        except asyncio.CancelledError:
            raise
        except ArtifactError:
            return  # reported by _artifact_failed; not retryable, so the server stays not-ready
        except Exception as exc:
            self._failed(
                "ModelLoadFailed", f"loading the model failed: {type(exc).__name__}: {exc}"
            )
            logger.exception("model load failed", extra={"reason": "ModelLoadFailed"})
            return
        seconds = time.monotonic() - self._started
        self._batcher = Batcher(
            self._predict_batch,
            max_batch_size=self.settings.max_batch_size,
            max_wait_seconds=self.settings.max_batch_wait_ms / 1000.0,
        )
        self.log_fields["labels.digest"] = self.digest
        self.metrics.load_duration.set(seconds)
        self.metrics.model_info(
            version=self.version, digest=self.digest, model_format=self.settings.model_format
        )
        # Modules and model are here for good: keep them out of the collector's full passes, which
        # otherwise walk them all (~0.1 s, a latency spike every few seconds under load).
        gc.freeze()
        self._loaded = True
        self.reason, self.message = "", ""
        if not self.shutting_down:
            self.metrics.ready.set(1)
        logger.info(
            "model ready",
            extra={
                "seconds": round(seconds, 3),
                "inputs": [spec.name for spec in model.signature.inputs][:20],
                "outputs": list(model.signature.output_names),
            },
        )
        if self.recorder is not None:
            try:
                self.recorder.model_loaded(
                    digest=self.digest, version=self.version or None, load_duration_seconds=seconds
                )
            except Exception:  # the metadata store must never cost us serving
                logger.exception("metadata store unavailable")

    def _artifact_failed(self, error: ArtifactError) -> None:
        self._failed(error.reason, error.message)

    def _failed(self, reason: str, message: str) -> None:
        self.reason, self.message = reason, message
        self.metrics.artifact_error(reason)

    # --- health and metadata ------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._loaded and not self.shutting_down

    def readiness(self) -> dict[str, Any]:
        if self.ready:
            return {"ready": True}
        if self.shutting_down:
            return {
                "ready": False,
                "reason": SHUTTING_DOWN,
                "message": "the server is stopping: finishing requests in flight",
            }
        return {"ready": False, "reason": self.reason, "message": self.message}

    def check_model(self, name: str, version: str | None = None) -> None:
        if name != self.name:
            raise ModelNotFound(f'model "{name}" not found; this server serves "{self.name}"')
        if version is not None and self.version and version != self.version:
            raise ModelNotFound(
                f'model "{name}" has no version "{version}"; the version served is "{self.version}"'
            )

    def _signature_or_503(self) -> Signature:
        if not self._loaded or self._model is None:
            raise ModelNotReady(f'model "{self.name}" is not ready ({self.reason}): {self.message}')
        return self._model.signature

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def statistics(self) -> dict[str, Any]:
        stats = self.stats if self.shared_stats is None else self.shared_stats.combined()
        return stats.as_triton(self.name, self.version)

    def repository_index(self) -> list[dict[str, str]]:
        """The model repository extension's index: the one model and its state."""
        if self.ready:
            state, reason = "READY", ""
        else:
            readiness = self.readiness()
            state = "LOADING" if readiness["reason"] == LOADING else "UNAVAILABLE"
            reason = readiness["message"]
        return [{"name": self.name, "version": self.version, "state": state, "reason": reason}]

    def model_metadata(self) -> dict[str, Any]:
        signature = self._signature_or_503()
        return {
            "name": self.name,
            "versions": [self.version] if self.version else [],
            "platform": self._model.platform if self._model is not None else "",
            "inputs": [spec.as_dict() for spec in signature.inputs],
            "outputs": [spec.as_dict() for spec in signature.outputs],
        }

    # --- inference ----------------------------------------------------------------------------

    @contextmanager
    def admitted(self, body_bytes: int) -> Iterator[None]:
        """Hold a prediction slot and ``body_bytes`` of the request-memory budget while one request
        is read and served. When either is used up the request is shed (503 + Retry-After) before
        its body is read, so memory stays bounded however many clients pile on; a request that
        finds nothing in flight is always admitted."""
        settings = self.settings
        if self.in_flight >= settings.max_concurrent_requests:
            self._shed(
                f"{self.in_flight} predictions already in flight (limit "
                f"{settings.max_concurrent_requests}): retry shortly"
            )
        if (
            self.in_flight
            and self.bytes_in_flight + body_bytes > settings.max_request_bytes_in_flight
        ):
            self._shed(
                f"requests holding {self.bytes_in_flight} bytes are already being served (limit "
                f"{settings.max_request_bytes_in_flight}): retry shortly, or send smaller requests"
            )
        self.in_flight += 1
        self.bytes_in_flight += body_bytes
        self.metrics.in_flight.inc()
        try:
            yield
        finally:
            self.in_flight -= 1
            self.bytes_in_flight -= body_bytes
            self.metrics.in_flight.dec()

    def _shed(self, message: str) -> None:
        self.metrics.shed.inc()
        raise Overloaded(message)

    def _check_rows(self, n_rows: int) -> None:
        limit = self.settings.max_instances_per_request
        if n_rows > limit:
            raise PayloadTooLarge(
                f"the request holds {n_rows} rows, over the limit of {limit} per request: split it "
                "into several requests (or raise MLMODEL_MAX_INSTANCES_PER_REQUEST)"
            )

    async def infer_v2(
        self,
        body: bytes,
        *,
        header_length: str | None = None,
        request_id: str | None = None,
        cache_control: str | None = None,
    ) -> tuple[bytes, int | None]:
        """A V2 infer body (JSON, or binary tensors after a JSON header of ``header_length`` bytes)
        in; the response body and the length of its JSON header when binary outputs follow out."""
        return await self.infer(
            lambda signature: codec.decode_v2(body, signature, header_length),
            lambda request, outputs, signature: codec.encode_v2(
                model_name=self.name,
                model_version=self.version,
                request=request,
                outputs=outputs,
                signature=signature,
            ),
            request_id,
            cache_control,
        )

    async def infer_v1(
        self, body: bytes, *, request_id: str | None = None, cache_control: str | None = None
    ) -> bytes:
        return await self.infer(
            lambda signature: codec.decode_v1(body, signature),
            lambda request, outputs, signature: codec.encode_v1(outputs, signature),
            request_id,
            cache_control,
        )

    async def infer(
        self,
        decode: Callable[[Signature], codec.DecodedRequest],
        encode: Callable[[codec.DecodedRequest, Outputs, Signature], Encoded],
        request_id: str | None,
        cache_control: str | None = None,
    ) -> Encoded:
        """The one inference pipeline of every protocol: decode against the signature, check the
        row limit, predict (from the cache, else through the batcher), encode; timed for the
        statistics extension. ``cache_control``: the request's Cache-Control header."""
        started = time.perf_counter_ns()
        try:
            signature = self._signature_or_503()
            request = decode(signature)
            self._check_rows(request.n_rows)
            decoded = time.perf_counter_ns()
            if self.cache is None:
                outputs, queue_ns = await self._infer(request, request_id)
            else:
                outputs, queue_ns = await self._infer_cached(
                    self.cache, request, request_id, cache_control
                )
            predicted = time.perf_counter_ns()
            result = encode(request, outputs, signature)
        except MLModelError:
            self.stats.failed(time.perf_counter_ns() - started)
            raise
        finished = time.perf_counter_ns()
        self.stats.succeeded(
            rows=request.n_rows,
            total_ns=finished - started,
            queue_ns=queue_ns,
            input_ns=decoded - started,
            infer_ns=predicted - decoded - queue_ns,
            output_ns=finished - predicted,
        )
        return result

    async def _infer_cached(
        self,
        cache: PredictionCache,
        request: codec.DecodedRequest,
        request_id: str | None,
        cache_control: str | None,
    ) -> tuple[Outputs, int]:
        """The outputs from the cache when it holds them, else from the model (then stored)."""
        read, write = cache_policy(cache_control)
        key = request_key(digest=self.digest, name=self.name, version=self.version, request=request)
        started = time.perf_counter_ns()
        if read:
            outputs = await cache.get(key)
            if outputs is not None:
                self.stats.cache_hit(time.perf_counter_ns() - started)
                return outputs, 0
        else:
            cache.bypassed()
        looked_up = time.perf_counter_ns()
        outputs, queue_ns = await self._infer(request, request_id)
        stored = time.perf_counter_ns()
        if write:
            wanted = request.outputs
            cache.put(key, {name: outputs[name] for name in wanted} if wanted else outputs)
        self.stats.cache_miss(looked_up - started + time.perf_counter_ns() - stored)
        return outputs, queue_ns

    async def _infer(
        self, request: codec.DecodedRequest, request_id: str | None
    ) -> tuple[Outputs, int]:
        assert self._batcher is not None
        started = time.perf_counter()
        try:
            outputs, queue_ns = await self._batcher.submit_timed(request.rows, request.n_rows)
        except (ValueError, TypeError) as exc:
            # Input that passed our checks but that the model refuses (e.g. NaN for a model that
            # cannot take missing values): the client's to fix.
            raise BadRequest(f"the model rejected the input: {exc}") from None
        except Exception as exc:
            logger.exception("inference failed", extra={"http.request.id": request_id})
            raise InferenceFailed(
                f"the model failed on this request: {type(exc).__name__}: {exc}"
            ) from None
        if self.recorder is not None and self.recorder.prediction_sample_rate > 0:
            self._record(request, outputs, request_id, time.perf_counter() - started)
        return outputs, queue_ns

    def _record(
        self,
        request: codec.DecodedRequest,
        outputs: Outputs,
        request_id: str | None,
        seconds: float,
    ) -> None:
        # Handed over as they are (numpy included): the store's thread encodes them, only when sampled.
        try:
            self.recorder.log_prediction(
                request_id=request_id,
                latency_seconds=seconds,
                inputs=request.rows[:LOGGED_ROWS],
                outputs={name: values[:LOGGED_ROWS] for name, values in outputs.items()},
            )
        except Exception:
            logger.exception("metadata store unavailable")

    async def _predict_batch(self, rows: Rows) -> Outputs:
        assert self._model is not None
        started = time.perf_counter_ns()
        outputs = await self._model.predict(rows)
        ns = time.perf_counter_ns() - started
        self.metrics.inference_duration.observe(ns / 1e9)
        self.metrics.batch_size.observe(len(rows))
        self.stats.executed(len(rows), ns)
        labels = outputs.get(LABEL_OUTPUT)
        if labels is not None:
            # A Counter over the list: np.unique sorts an object array, 15-45 µs a batch against 2-8.
            self.metrics.count_labels(Counter(map(str, labels.tolist())))
        return outputs
