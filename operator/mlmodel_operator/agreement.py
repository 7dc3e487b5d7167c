"""How often the shadow candidate agrees with the served model (status.shadow).

The served runtime's pods count it themselves (mlmodel_shadow_rows_total and
mlmodel_shadow_requests_total on their /metrics); the operator adds up what its ready pods say
(podmetrics.py), at most once per interval per MLModel. Counters start again with each pod, so
the figures cover the pods that serve now.
"""

from __future__ import annotations

import time
from typing import Any

from mlmodel_spec.resource import MLModelSpec
from prometheus_client.parser import text_string_to_metric_families

from mlmodel_operator.builders.candidates import shadow_name
from mlmodel_operator.builders.common import selector_string
from mlmodel_operator.kube import KubeClient
from mlmodel_operator.podmetrics import PodMetrics
from mlmodel_operator.settings import OperatorSettings

# (metric, label) -> key of the totals.
_COUNTED = {
    ("mlmodel_shadow_rows_total", "agreement"): ("agree", "disagree"),
    ("mlmodel_shadow_requests_total", "result"): ("compared", "failed", "skipped"),
}
KEYS = ("agree", "disagree", "compared", "failed", "skipped")


def shadow_counts(text: str) -> dict[str, int]:
    """The shadow counters of one runtime's /metrics text (pure)."""
    totals = dict.fromkeys(KEYS, 0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for (name, label), keys in _COUNTED.items():
                if sample.name == name and sample.labels.get(label) in keys:
                    totals[sample.labels[label]] += int(sample.value)
    return totals


def shadow_status(mlmodel: dict, spec: MLModelSpec, totals: dict[str, int], pods: tuple[int, int]) -> dict:
    """status.shadow from the summed counters of `pods` = (answered, asked) pods (pure)."""
    assert spec.shadow is not None
    rows = totals["agree"] + totals["disagree"]
    answered, asked = pods
    status: dict[str, Any] = {
        "name": shadow_name(mlmodel),
        "modelShortDigest": (spec.shadow.model.sha256 or "unverified")[:12],
        "sampleRate": spec.shadow.sample_rate,
        "rows": {"agree": totals["agree"], "disagree": totals["disagree"]},
        "requests": {key: totals[key] for key in ("compared", "failed", "skipped")},
    }
    if rows:
        status["agreement"] = round(totals["agree"] / rows, 4)
        status["message"] = (
            f"the candidate agrees on {totals['agree'] / rows:.1%} of {rows} rows "
            f"({answered}/{asked} serving pods counted)"
        )
    elif asked == 0:
        status["message"] = "no serving pod is ready yet"
    elif answered == 0:
        status["message"] = "no serving pod answered on /metrics"
    else:
        status["message"] = "no prediction mirrored yet"
    return status


class ShadowAgreement:
    def __init__(self, settings: OperatorSettings, pods: PodMetrics) -> None:
        self._settings = settings
        self._pods = pods
        self._last: dict[str, tuple[float, dict]] = {}

    def forget(self, uid: str) -> None:
        self._last.pop(uid, None)

    async def status(self, kube: KubeClient, mlmodel: dict, spec: MLModelSpec) -> dict | None:
        """status.shadow of a model with spec.shadow (None without), reused for an interval."""
        uid = mlmodel["metadata"]["uid"]
        if spec.shadow is None:
            self._last.pop(uid, None)
            return None
        now = time.monotonic()
        cached = self._last.get(uid)
        if cached is not None and now - cached[0] < self._settings.pod_diagnosis_interval_seconds:
            return cached[1]
        texts, asked = await self._pods.read(
            kube, mlmodel["metadata"]["namespace"], selector_string(mlmodel)
        )
        totals = dict.fromkeys(KEYS, 0)
        for text in texts:
            for key, value in shadow_counts(text).items():
                totals[key] += value
        found = shadow_status(mlmodel, spec, totals, (len(texts), asked))
        self._last[uid] = (time.monotonic(), found)
        return found
