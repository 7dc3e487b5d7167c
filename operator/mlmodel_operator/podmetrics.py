"""The /metrics of a model's ready runtime pods, read over plain HTTP (for status.shadow and
status.canary).

From a session of its own that never carries the operator's API credentials, a bounded read
per pod, a few pods per question.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from mlmodel_operator import __version__
from mlmodel_operator.kube import POD, KubeClient
from mlmodel_operator.pods import ProbeTarget, probe_targets
from mlmodel_operator.settings import OperatorSettings

logger = logging.getLogger("mlmodel_operator.podmetrics")
PODS_ASKED = 10
MAX_BODY = 1024 * 1024


class PodMetrics:
    def __init__(self, settings: OperatorSettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def read(self, kube: KubeClient, namespace: str, selector: str) -> tuple[list[str], int]:
        """The /metrics texts of the ready pods `selector` picks that answered, and how many
        were asked."""
        pods = (await kube.list(POD, namespace, selector)).get("items") or []
        targets = probe_targets(pods, ready=True)[:PODS_ASKED]
        answers = await asyncio.gather(*(self._ask(target) for target in targets))
        return [text for text in answers if text is not None], len(targets)

    async def _ask(self, target: ProbeTarget) -> str | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.pod_probe_timeout_seconds),
                headers={"User-Agent": f"mlmodel-operator/{__version__}"},
            )
        try:
            async with self._session.get(target.address("/metrics"), allow_redirects=False) as response:
                if response.status != 200:
                    return None
                # Bounded read: whatever answers on that port, it cannot flood the operator.
                return (await response.content.read(MAX_BODY)).decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError) as error:
            logger.debug("runtime metrics unreadable: pod=%s error=%r", target.pod, error)
            return None
