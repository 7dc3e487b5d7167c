"""A short, bounded load on a runtime: predictions over both protocols plus some bad requests."""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path

import httpx

REVIEWS = [
    "A wonderful film: moving, funny and beautifully acted.",
    "Awful. Boring plot, wooden acting, a waste of two hours.",
    "I laughed all the way through, a delight.",
    "Dull and far too long.",
]


def v2_body(texts: list[str]) -> dict:
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}


def run_load(url: str, model: str, rounds: int = 8, pause: float = 0.5) -> collections.Counter[tuple[str, int]]:
    """`rounds` rounds of 40 requests, `pause` apart so Prometheus scrapes in between.

    Each round: 24 V2 infers (1 to 4 texts), 8 V1 predicts, 4 malformed bodies, 2 requests for
    an unknown model, 2 reads of the model's readiness. Returns counts by (kind, status).
    """
    counts: collections.Counter[tuple[str, int]] = collections.Counter()
    with httpx.Client(base_url=url, timeout=10) as client:
        for round_ in range(rounds):
            for i in range(24):
                texts = [REVIEWS[(round_ + i + k) % len(REVIEWS)] for k in range(1 + i % 4)]
                r = client.post(f"/v2/models/{model}/infer", json=v2_body(texts))
                counts[("v2_infer", r.status_code)] += 1
            for i in range(8):
                r = client.post(f"/v1/models/{model}:predict", json={"instances": [REVIEWS[i % len(REVIEWS)]]})
                counts[("v1_predict", r.status_code)] += 1
            for _ in range(2):
                r = client.post(f"/v2/models/{model}/infer", content=b"{not json", headers={"content-type": "application/json"})
                counts[("malformed", r.status_code)] += 1
                r = client.post(f"/v2/models/{model}/infer", json={"inputs": [{"name": "text", "shape": [1]}]})
                counts[("invalid", r.status_code)] += 1
                r = client.post("/v2/models/no-such-model/infer", json=v2_body(["x"]))
                counts[("unknown_model", r.status_code)] += 1
                r = client.get(f"/v2/models/{model}/ready")
                counts[("v2_ready", r.status_code)] += 1
            time.sleep(pause)
    return counts


def example_request(repo_root: Path) -> dict:
    return json.loads((repo_root / "examples" / "sentiment" / "request.json").read_text())
