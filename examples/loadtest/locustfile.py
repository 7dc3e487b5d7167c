"""Locust load test for a deployed MLModel: Open Inference Protocol V2 infer requests, and a verdict.

    locust -f examples/loadtest/locustfile.py --headless --host http://sentiment.default.svc \
        --users 32 --spawn-rate 8 --run-time 2m

At the end the run fails (exit code 1) when the failure ratio or the p99 latency passes its limit,
so a CI job or a canary check can use it as is. Settings, from the environment:
  MLMODEL_NAME              model name in the URL (default: sentiment)
  MLMODEL_INPUT_NAME        V2 input name (default: text)
  MLMODEL_TEXTS_PER_REQUEST texts in each request (default: 1)
  MLMODEL_TOKEN             bearer token, when the MLModel sets spec.auth
  MLMODEL_MAX_FAILURE_RATIO failures allowed, as a fraction of requests (default: 0.01)
  MLMODEL_MAX_P99_MS        p99 latency allowed in milliseconds (default: 250)
"""

from __future__ import annotations

import itertools
import json
import logging
import os

from locust import FastHttpUser, constant, events, task

logger = logging.getLogger("mlmodel.loadtest")
MODEL = os.environ.get("MLMODEL_NAME", "sentiment")
INPUT_NAME = os.environ.get("MLMODEL_INPUT_NAME", "text")
TEXTS_PER_REQUEST = int(os.environ.get("MLMODEL_TEXTS_PER_REQUEST", "1"))
TOKEN = os.environ.get("MLMODEL_TOKEN", "")
MAX_FAILURE_RATIO = float(os.environ.get("MLMODEL_MAX_FAILURE_RATIO", "0.01"))
MAX_P99_MS = float(os.environ.get("MLMODEL_MAX_P99_MS", "250"))

# Short reviews of both kinds; replace with inputs shaped like your own model's traffic.
TEXTS = (
    "A wonderful film: moving, funny and beautifully acted.",
    "Awful. Boring plot, wooden acting, a waste of two hours.",
    "the cast is strong but the script gives them nothing to do .",
    "a smart , sweet and playful romantic comedy that never talks down to its audience .",
    "an overlong , tedious exercise in style over substance .",
    "one of the most original and entertaining thrillers of the year .",
    "it's a mess , but a glorious , fascinating mess .",
    "the jokes are stale and the pacing is deadly .",
)


def request_bodies(texts_per_request: int) -> list[bytes]:
    """A few V2 infer bodies, built once: the load test measures the server, not JSON encoding here."""
    cycle = itertools.cycle(TEXTS)
    bodies = []
    for _ in range(len(TEXTS)):
        data = [next(cycle) for _ in range(texts_per_request)]
        body = {
            "inputs": [
                {"name": INPUT_NAME, "shape": [len(data)], "datatype": "BYTES", "data": data}
            ]
        }
        bodies.append(json.dumps(body).encode())
    return bodies


class InferUser(FastHttpUser):
    """One user sends one request at a time, with no pause: users are the concurrency."""

    wait_time = constant(0)
    bodies = request_bodies(TEXTS_PER_REQUEST)

    def on_start(self) -> None:
        self.next_body = itertools.cycle(self.bodies)
        self.headers = {"Content-Type": "application/json"}
        if TOKEN:
            self.headers["Authorization"] = f"Bearer {TOKEN}"

    @task
    def infer(self) -> None:
        with self.client.post(
            f"/v2/models/{MODEL}/infer",
            data=next(self.next_body),
            headers=self.headers,
            name="v2 infer",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
                return
            try:
                outputs = response.json()["outputs"]
            except (ValueError, KeyError, TypeError):
                response.failure("the answer is not a V2 infer response")
                return
            if not outputs or len(outputs[0].get("data", ())) != TEXTS_PER_REQUEST:
                response.failure(f"expected {TEXTS_PER_REQUEST} predictions, got {outputs!r:.200}")


@events.quitting.add_listener
def judge(environment, **_kwargs) -> None:  # type: ignore[no-untyped-def]
    """Set the exit code from the thresholds (Locust's own default only looks at failures > 0)."""
    total = environment.stats.total
    p99 = total.get_response_time_percentile(0.99) or 0.0
    verdicts = []
    if total.num_requests == 0:
        verdicts.append("no request was made")
    if total.fail_ratio > MAX_FAILURE_RATIO:
        verdicts.append(f"failure ratio {total.fail_ratio:.2%} > {MAX_FAILURE_RATIO:.2%}")
    if p99 > MAX_P99_MS:
        verdicts.append(f"p99 {p99:.0f} ms > {MAX_P99_MS:.0f} ms")
    for verdict in verdicts:
        logger.error("threshold failed: %s", verdict)
    environment.process_exit_code = 1 if verdicts else 0
