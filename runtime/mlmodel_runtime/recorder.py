"""The runtime's use of the store: register this process, heartbeat, sample predictions, stop.

Everything goes through the ``AsyncWriter`` queue, so no call here waits for the database and a
database outage never touches a request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlmodel_store.database import Database
from mlmodel_store.events import (
    InstanceHeartbeat,
    InstanceRegistered,
    InstanceStopped,
    PredictionLogged,
    ShadowDisagreement,
    new_instance_id,
)
from mlmodel_store.writer import AsyncWriter
from prometheus_client import CollectorRegistry

if TYPE_CHECKING:
    from mlmodel_runtime.settings import RuntimeSettings

logger = logging.getLogger(__name__)

COMPONENT = "runtime"


class RuntimeRecorder:
    def __init__(
        self,
        writer: AsyncWriter,
        *,
        namespace: str,
        model: str,
        pod_name: str,
        prediction_sample_rate: float = 0.0,
        heartbeat_seconds: float = 30.0,
        sample: Callable[[], float] = random.random,
    ) -> None:
        self.writer = writer
        self.namespace = namespace
        self.model = model
        self.pod_name = pod_name
        self.prediction_sample_rate = prediction_sample_rate
        self.heartbeat_seconds = heartbeat_seconds
        self.instance_id = new_instance_id()
        self._sample = sample
        self._model_digest: str | None = None
        self._registered = False
        self._heartbeats: asyncio.Task | None = None

    @classmethod
    def from_settings(
        cls,
        settings: RuntimeSettings,
        *,
        registry: CollectorRegistry | None = None,
        **writer_options: Any,
    ) -> RuntimeRecorder:
        database = Database.from_settings(
            settings.database_url, settings.cache_dir, application_name="mlmodel-runtime"
        )
        writer = AsyncWriter(database, component=COMPONENT, registry=registry, **writer_options)
        return cls(
            writer,
            namespace=settings.namespace,
            model=settings.model_name,
            pod_name=settings.pod_name or socket.gethostname(),
            prediction_sample_rate=settings.prediction_log_sample_rate,
            heartbeat_seconds=settings.metadata_heartbeat_seconds,
        )

    def start(self) -> None:
        self.writer.start()

    def model_loaded(
        self,
        *,
        digest: str | None,
        version: str | None = None,
        load_duration_seconds: float | None = None,
    ) -> None:
        """Register this process once its model is loaded, then heartbeat until ``close``."""
        self._model_digest = digest
        self._registered = True
        self.writer.submit(
            InstanceRegistered(
                instance_id=self.instance_id,
                namespace=self.namespace,
                model=self.model,
                pod_name=self.pod_name,
                model_digest=digest,
                model_version=version or None,
                load_duration_seconds=load_duration_seconds,
            )
        )
        if self._heartbeats is None and self.heartbeat_seconds > 0:
            self._heartbeats = asyncio.get_running_loop().create_task(
                self._heartbeat_forever(), name="metadata-heartbeat"
            )

    def log_prediction(
        self, *, request_id: str | None, latency_seconds: float | None, inputs: Any, outputs: Any
    ) -> bool:
        """Queue the prediction when it falls in the sample; True when it did."""
        if self.prediction_sample_rate <= 0 or self._sample() >= self.prediction_sample_rate:
            return False
        return self.writer.submit(
            PredictionLogged(
                namespace=self.namespace,
                model=self.model,
                request_id=request_id,
                latency_seconds=latency_seconds,
                inputs=inputs,
                outputs=outputs,
                model_digest=self._model_digest,
            )
        )

    def log_disagreement(self, disagreement: dict[str, Any]) -> bool:
        """Queue a prediction the shadow model disagreed on (already sampled by the mirror)."""
        return self.writer.submit(
            ShadowDisagreement(
                namespace=self.namespace,
                model=self.model,
                model_digest=self._model_digest,
                **disagreement,
            )
        )

    async def close(self, timeout: float = 10.0) -> int:
        """Mark this process stopped and flush; returns the number of events lost."""
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            await asyncio.gather(self._heartbeats, return_exceptions=True)
            self._heartbeats = None
        if self._registered:
            self.writer.submit(InstanceStopped(instance_id=self.instance_id))
        return await self.writer.close(timeout)

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            self.writer.submit(InstanceHeartbeat(instance_id=self.instance_id))
