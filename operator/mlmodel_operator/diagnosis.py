"""Find out why a model's pods are not ready: list them, and ask the runtime in each.

Called while the Deployment is not fully available or a rollout is under way, at most once per
interval per MLModel.
The readiness questions go to the pods over plain HTTP from a session of their own, which
never carries the operator's API credentials.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import Any

import aiohttp

from mlmodel_operator import __version__
from mlmodel_operator.builders.candidates import canary_selector, stable_selector
from mlmodel_operator.kube import POD, KubeClient
from mlmodel_operator.pods import (
    ProbeTarget,
    container_problem,
    probe_targets,
    readiness_problem,
    unsettled,
)
from mlmodel_operator.settings import OperatorSettings

logger = logging.getLogger("mlmodel_operator.diagnosis")
# Readiness questions in flight at once, over all MLModels; and pods asked per MLModel (the
# first problem found is the one reported, so a few suffice).
PROBE_CONCURRENCY = 8
PODS_PROBED_PER_MODEL = 3
MAX_BODY = 64 * 1024
Problem = tuple[str, str]


@dataclasses.dataclass
class _LastFinding:
    """The problem last found for an MLModel's pods (None: none) and when, reused for an interval."""

    at: float
    problem: Problem | None


class PodDiagnosis:
    def __init__(self, settings: OperatorSettings) -> None:
        self._settings = settings
        self._findings: dict[tuple[str, bool], _LastFinding] = {}
        self._gate = asyncio.Semaphore(PROBE_CONCURRENCY)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def forget(self, uid: str) -> None:
        for canary in (False, True):
            self._findings.pop((uid, canary), None)

    async def problem(
        self,
        kube: KubeClient,
        mlmodel: dict[str, Any],
        deployment: dict[str, Any] | None,
        *,
        canary: bool = False,
    ) -> Problem | None:
        """Why the pods of the served model (or, `canary`, of its spec.canary candidate; each
        Deployment's own) are not ready, or None (all available, or no reason known)."""
        key = (mlmodel["metadata"]["uid"], canary)
        if not unsettled(deployment):
            self._findings.pop(key, None)
            return None
        now = time.monotonic()
        cached = self._findings.get(key)
        if cached is not None and now - cached.at < self._settings.pod_diagnosis_interval_seconds:
            return cached.problem
        selector = canary_selector(mlmodel) if canary else stable_selector(mlmodel)
        pods = (await kube.list(POD, mlmodel["metadata"]["namespace"], selector)).get("items") or []
        found = container_problem(pods)
        if found is None and self._settings.pod_probe_enabled:
            found = await self._ask_runtimes(probe_targets(pods)[:PODS_PROBED_PER_MODEL])
        self._findings[key] = _LastFinding(time.monotonic(), found)
        return found

    async def _ask_runtimes(self, targets: list[ProbeTarget]) -> Problem | None:
        answers = await asyncio.gather(*(self._ask(target) for target in targets))
        return next((answer for answer in answers if answer is not None), None)

    async def _ask(self, target: ProbeTarget) -> Problem | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.pod_probe_timeout_seconds),
                headers={"User-Agent": f"mlmodel-operator/{__version__}"},
            )
        async with self._gate:
            try:
                async with self._session.get(target.url, allow_redirects=False) as response:
                    # Bounded read: whatever answers on that port, it cannot flood the operator.
                    body = json.loads(await response.content.read(MAX_BODY) or b"null")
                    return readiness_problem(target, response.status, body)
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                # Unreachable from here (a network policy, a pod just gone): not a verdict.
                logger.debug("runtime readiness unknown: pod=%s error=%r", target.pod, error)
                return None
