"""The prediction cache (spec.cache) against a real Redis server (tests/support/redis.py): repeat
requests answered from Redis whatever protocol carries them, a new artifact never served old
answers, Cache-Control honoured, and Redis failing or frozen in the middle of a load costing no
request (the model answers, counters say so)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from mlmodel_runtime.cache import (
    EntryError,
    PredictionCache,
    cache_policy,
    decode_entry,
    encode_entry,
    request_key,
)
from mlmodel_runtime.codec import DecodedRequest
from mlmodel_runtime.metrics import RuntimeMetrics
from prometheus_client.parser import text_string_to_metric_families
from runtime_models import Artifact
from support.redis import RedisServer
from support.runtime import Models, running_app, settings_for, write_mlmodel

TEXTS = ["a wonderful, moving film", "boring and far too long"]
V2_BODY = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": TEXTS}]}


def lookups(plane: Any, result: str) -> float:
    value = plane.metrics.registry.get_sample_value(
        "mlmodel_cache_requests_total", {"model": plane.name, "result": result}
    )
    return value or 0.0


def up(plane: Any) -> float | None:
    return plane.metrics.registry.get_sample_value("mlmodel_cache_up", {"model": plane.name})


def writes(plane: Any, result: str) -> float:
    value = plane.metrics.registry.get_sample_value(
        "mlmodel_cache_writes_total", {"model": plane.name, "result": result}
    )
    return value or 0.0


async def written(plane: Any, count: float) -> None:
    """Writes happen after the response: wait until ``count`` were stored."""
    for _ in range(200):
        if writes(plane, "stored") >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{writes(plane, 'stored')} cache writes stored, expected {count}")


def cache_settings(artifact: Artifact, folder: Path, redis: RedisServer, **values: Any) -> Any:
    return settings_for(
        artifact, folder, "sentiment", cache_redis_url=redis.url, cache_ttl_seconds=600, **values
    )


# --- keys and entries, no server -----------------------------------------------------------------


def test_the_key_covers_model_rows_and_requested_outputs() -> None:
    texts = DecodedRequest(rows=["good", "bad"], n_rows=2)
    base = {"digest": "a" * 64, "name": "m", "version": "1"}
    key = request_key(**base, request=texts)
    assert key == request_key(
        **base, request=DecodedRequest(rows=["good", "bad"], n_rows=2, id="x")
    )
    assert key == request_key(
        **base, request=DecodedRequest(rows=["good", "bad"], n_rows=2, parameters={"p": 1})
    )
    different = [
        request_key(**{**base, "digest": "b" * 64}, request=texts),
        request_key(**{**base, "name": "other"}, request=texts),
        request_key(**{**base, "version": "2"}, request=texts),
        request_key(**base, request=DecodedRequest(rows=["good", "bad "], n_rows=2)),
        request_key(**base, request=DecodedRequest(rows=["bad", "good"], n_rows=2)),
        request_key(
            **base, request=DecodedRequest(rows=["good", "bad"], n_rows=2, outputs=("label",))
        ),
    ]
    assert len({key, *different}) == len(different) + 1
    # Numbers: values, shape and dtype all count.
    matrix = np.arange(6, dtype=np.float64).reshape(2, 3)
    keys = {
        request_key(**base, request=DecodedRequest(rows=rows, n_rows=len(rows)))
        for rows in (matrix, matrix.reshape(3, 2), matrix.astype(np.float32), matrix + 1e-12)
    }
    assert len(keys) == 4
    fortran = np.asfortranarray(matrix)
    assert request_key(**base, request=DecodedRequest(rows=fortran, n_rows=2)) == request_key(
        **base, request=DecodedRequest(rows=matrix, n_rows=2)
    )


def test_entries_round_trip_without_pickle() -> None:
    objects = np.empty(2, dtype=object)
    objects[:] = ["yes", "no"]
    outputs = {
        "label": np.array(["positive", "négatif"]),
        "probabilities": np.array([[0.25, 0.75], [0.5, 0.5]]),
        "count": np.array([1, 2], dtype=np.int32),
        "flag": np.array([True, False]),
        "words": objects,
    }
    decoded = decode_entry(encode_entry(outputs))
    assert list(decoded) == list(outputs)
    for name, values in outputs.items():
        assert decoded[name].shape == values.shape
        assert decoded[name].tolist() == values.tolist()
    assert decoded["probabilities"].dtype == np.float64 and decoded["count"].dtype == np.int32
    for corrupt in (
        b"no header",
        b'[["x", "<f8", [2], 16]]\n' + b"\0" * 8,  # truncated
        b'[["x", "<f8", [1], 8]]\n' + b"\0" * 9,  # trailing bytes
        b'[["x", "|O", [1], 8]]\n' + b"\0" * 8,  # object arrays are never read raw
        b"[1]\n",
    ):
        with pytest.raises(EntryError):
            decode_entry(corrupt)


@pytest.mark.parametrize(
    ("header", "policy"),
    [
        (None, (True, True)),
        ("", (True, True)),
        ("max-age=60", (True, True)),
        ("no-cache", (False, True)),
        ("No-Cache, max-age=0", (False, True)),
        ('no-cache="set-cookie"', (False, True)),
        ("no-store", (False, False)),
        ("no-cache, no-store", (False, False)),
    ],
)
def test_cache_control(header: str | None, policy: tuple[bool, bool]) -> None:
    assert cache_policy(header) == policy


# --- the runtime in-process against a real Redis -------------------------------------------------


async def test_repeat_requests_are_answered_from_redis_whatever_the_protocol(
    models: Models, tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = cache_settings(models.text, tmp_path, redis_server, model_version="3")
    async with running_app(settings) as rt:
        plane = rt.dataplane
        first = await rt.client.post("/v2/models/sentiment/infer", json={**V2_BODY, "id": "a"})
        assert first.status_code == 200, first.text
        assert (lookups(plane, "miss"), plane.stats.execution_count) == (1, 1)
        await written(plane, 1)
        keys = redis_server.command("--scan", "--pattern", "mlmodel:prediction:*").split()
        assert len(keys) == 1
        assert 590 <= int(redis_server.command("TTL", keys[0])) <= 600

        again = await rt.client.post(
            "/v2/models/sentiment/versions/3/infer",
            json={**V2_BODY, "id": "b", "parameters": {"note": "echoed"}},
        )
        assert again.status_code == 200
        assert (lookups(plane, "hit"), plane.stats.execution_count) == (1, 1)  # not the model
        body = again.json()
        assert body["id"] == "b" and body["parameters"] == {"note": "echoed"}
        assert body["outputs"] == first.json()["outputs"]

        # The same rows in binary tensors, and in V1: the same entry.
        binary = await rt.client.post(
            "/v2/models/sentiment/infer",
            json={**V2_BODY, "parameters": {"binary_data_output": True}},
        )
        assert binary.status_code == 200 and "inference-header-content-length" in binary.headers
        v1 = await rt.client.post("/v1/models/sentiment:predict", json={"instances": TEXTS})
        assert v1.json()["predictions"] == first.json()["outputs"][0]["data"]
        assert (lookups(plane, "hit"), plane.stats.execution_count) == (3, 1)

        # Other outputs asked for, other rows: other entries, computed by the model.
        only_label = await rt.client.post(
            "/v2/models/sentiment/infer", json={**V2_BODY, "outputs": [{"name": "label"}]}
        )
        assert [o["name"] for o in only_label.json()["outputs"]] == ["label"]
        other = {"inputs": [{**V2_BODY["inputs"][0], "data": TEXTS[::-1]}]}
        assert (await rt.client.post("/v2/models/sentiment/infer", json=other)).status_code == 200
        assert (lookups(plane, "miss"), plane.stats.execution_count) == (3, 3)

        stats = (await rt.client.get("/v2/models/sentiment/stats")).json()
        inference = stats["model_stats"][0]["inference_stats"]
        assert inference["cache_hit"]["count"] == 3 and inference["cache_miss"]["count"] == 3
        assert inference["success"]["count"] == 6
        metrics = (await rt.client.get("/metrics")).text
        assert 'mlmodel_cache_requests_total{model="sentiment",result="hit"} 3.0' in metrics
        assert 'mlmodel_cache_up{model="sentiment"} 1.0' in metrics
        # Bounded labels: the results documented in docs/cache.md, never a key or an input.
        results = set(
            re.findall(
                r'^mlmodel_cache_(?:requests|writes)_total\{model="sentiment",result="(\w+)"\}',
                metrics,
                re.MULTILINE,
            )
        )
        assert (
            {"hit", "miss", "stored"}
            <= results
            <= {
                "hit",
                "miss",
                "error",
                "skipped",
                "bypass",
                "stored",
                "too_large",
                "dropped",
            }
        )
        assert "mlmodel:prediction:" not in metrics and TEXTS[0] not in metrics


async def test_cache_control_no_cache_and_no_store(
    models: Models, tmp_path: Path, redis_server: RedisServer
) -> None:
    async with running_app(cache_settings(models.text, tmp_path, redis_server)) as rt:
        plane = rt.dataplane
        url = "/v2/models/sentiment/infer"
        await rt.client.post(url, json=V2_BODY)
        await written(plane, 1)
        fresh = await rt.client.post(url, json=V2_BODY, headers={"Cache-Control": "no-cache"})
        assert fresh.status_code == 200
        assert (lookups(plane, "bypass"), lookups(plane, "hit")) == (1, 0)
        assert plane.stats.execution_count == 2
        await written(plane, 2)  # the fresh answer replaces the entry
        await rt.client.post(url, json=V2_BODY)
        assert (lookups(plane, "hit"), plane.stats.execution_count) == (1, 2)

        other = {"inputs": [{**V2_BODY["inputs"][0], "data": ["never stored"], "shape": [1]}]}
        await rt.client.post(url, json=other, headers={"cache-control": "no-store"})
        await asyncio.sleep(0.2)
        assert writes(plane, "stored") == 2
        assert len(redis_server.command("--scan", "--pattern", "mlmodel:prediction:*").split()) == 1


async def test_answers_over_the_entry_limit_are_not_stored(
    models: Models, tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = cache_settings(models.text, tmp_path, redis_server, cache_max_entry_bytes=100)
    async with running_app(settings) as rt:
        response = await rt.client.post("/v2/models/sentiment/infer", json=V2_BODY)
        assert response.status_code == 200
        assert writes(rt.dataplane, "too_large") == 1 and writes(rt.dataplane, "stored") == 0
        assert redis_server.command("DBSIZE") == "0"


async def test_a_new_artifact_never_serves_the_old_answers(
    models: Models, tmp_path: Path, redis_server: RedisServer
) -> None:
    # The same model saved again compressed: other bytes, another digest, the same predictions.
    path = tmp_path / "v2.joblib"
    joblib.dump(joblib.load(models.text.path), path, compress=3)
    import hashlib

    renewed = Artifact(path, hashlib.sha256(path.read_bytes()).hexdigest())
    assert renewed.sha256 != models.text.sha256
    async with running_app(cache_settings(models.text, tmp_path / "a", redis_server)) as old:
        await old.client.post("/v2/models/sentiment/infer", json=V2_BODY)
        await written(old.dataplane, 1)
    async with running_app(cache_settings(renewed, tmp_path / "b", redis_server)) as new:
        response = await new.client.post("/v2/models/sentiment/infer", json=V2_BODY)
        assert response.status_code == 200
        assert lookups(new.dataplane, "miss") == 1 and lookups(new.dataplane, "hit") == 0
        assert new.dataplane.stats.execution_count == 1
        await written(new.dataplane, 1)
    assert redis_server.command("DBSIZE") == "2"


async def test_grpc_goes_through_the_same_cache(
    models: Models, tmp_path: Path, redis_server: RedisServer
) -> None:
    from test_grpc import running_grpc, text_request

    settings = cache_settings(models.text, tmp_path, redis_server, host="127.0.0.1")
    async with running_grpc(settings) as (rt, client):
        plane = rt.dataplane
        first = await client("ModelInfer", text_request(id="g1"))
        await written(plane, 1)
        second = await client("ModelInfer", text_request(id="g2"))
        assert second.id == "g2" and second.outputs == first.outputs
        assert (lookups(plane, "hit"), plane.stats.execution_count) == (1, 1)
        await client("ModelInfer", text_request(), metadata=(("cache-control", "no-cache"),))
        assert (lookups(plane, "bypass"), plane.stats.execution_count) == (1, 2)


LOAD_BODIES = [
    {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [f"{word} film"]}]}
    for word in ("great", "awful", "moving", "boring", "lovely", "dull", "fine", "bad")
]


class Load:
    """Concurrent clients posting LOAD_BODIES in turn, every answer checked against the one the
    model gave before the load; the slowest request and the number answered are kept."""

    def __init__(self, client: httpx.AsyncClient, clients: int) -> None:
        self.client = client
        self.clients = clients
        self.expected: dict[str, Any] = {}
        self.slowest = 0.0
        self.answered = 0

    async def learn_answers(self) -> None:
        for body in LOAD_BODIES:
            response = await self.client.post("/v2/models/sentiment/infer", json=body)
            self.expected[body["inputs"][0]["data"][0]] = response.json()["outputs"]

    async def _run(self, stop: asyncio.Event, index: int) -> None:
        while not stop.is_set():
            body = LOAD_BODIES[index % len(LOAD_BODIES)]
            index += 1
            started = time.monotonic()
            response = await self.client.post("/v2/models/sentiment/infer", json=body)
            self.slowest = max(self.slowest, time.monotonic() - started)
            assert response.status_code == 200, response.text
            assert response.json()["outputs"] == self.expected[body["inputs"][0]["data"][0]]
            self.answered += 1

    async def during(self, seconds: float, action: Any = None) -> None:
        """Load for ``seconds``; ``action`` (blocking, run in a thread) a third of the way in."""
        stop = asyncio.Event()
        tasks = [asyncio.create_task(self._run(stop, i)) for i in range(self.clients)]
        await asyncio.sleep(seconds / 3)
        if action is not None:
            await asyncio.to_thread(action)
        await asyncio.sleep(seconds * 2 / 3)
        stop.set()
        await asyncio.gather(*tasks)


async def test_redis_down_or_frozen_costs_no_request(
    models: Models, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Redis killed, then frozen (SIGSTOP: connections hang), in the middle of a load: every
    request answered right and quickly, the failures counted, the cache back once Redis is."""
    settings = cache_settings(models.text, tmp_path, redis_server, cache_timeout_ms=100)
    async with running_app(settings) as rt:
        plane = rt.dataplane
        load = Load(rt.client, clients=8)
        await load.learn_answers()
        await written(plane, len(LOAD_BODIES))

        await load.during(1.0)
        hits_before = lookups(plane, "hit")
        assert hits_before > 0 and lookups(plane, "error") == 0

        await load.during(1.5, redis_server.stop)  # killed in the middle of the load
        assert lookups(plane, "error") >= 1 and lookups(plane, "skipped") > 0
        assert up(plane) == 0
        errors_while_down = lookups(plane, "error")

        redis_server.start()  # empty again: misses first, then hits
        await asyncio.sleep(0.6)  # past the first back-off
        hits_before = lookups(plane, "hit")
        await load.during(2.0)
        assert lookups(plane, "hit") > hits_before
        assert up(plane) == 1

        frozen_errors = lookups(plane, "error")
        await load.during(2.0, redis_server.pause)  # frozen: connections open, nothing answers
        assert lookups(plane, "error") > frozen_errors
        # A frozen Redis costs a request at most the timeout (and only the few that probe it).
        assert load.slowest < 1.0, load.slowest
        redis_server.resume()
        assert load.answered > 100
        assert errors_while_down < load.answered / 10  # the back-off spared nearly every request


def requests_slower_than(metrics: str, seconds: float) -> float:
    """Inference requests the server took longer than ``seconds`` over (a histogram bucket bound)."""
    name, labels = "mlmodel_request_duration_seconds_bucket", {"endpoint": "v2_infer"}
    total = sample(metrics, name, **labels, le="+Inf")
    assert total > 0, "no inference request in the histogram"
    return total - sample(metrics, name, **labels, le=str(seconds))


def sample(metrics: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for item in family.samples:
            if item.name == name and item.labels == {"model": "sentiment", **labels}:
                return item.value
    return 0.0


async def test_a_served_runtime_rides_out_redis_killed_mid_load(
    models: Models, tmp_path: Path, redis_server: RedisServer, start_server: Any
) -> None:
    """The same outage against a real `mlmodel serve` process over HTTP, 16 clients at once."""
    path = write_mlmodel(
        tmp_path / "model", "sentiment", models.text,
        extra="  cache:\n    redis: {secretRef: {name: redis, key: url}}\n",
    )  # fmt: skip
    server = start_server([str(path)], env={"MLMODEL_CACHE_REDIS_URL": redis_server.url})
    await asyncio.to_thread(server.wait_ready)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        load = Load(client, clients=16)
        await load.learn_answers()
        await load.during(1.0)
        before = (await client.get("/metrics")).text
        assert sample(before, "mlmodel_cache_requests_total", result="hit") > 0

        await load.during(3.0, redis_server.stop)
        down = (await client.get("/metrics")).text
        assert sample(down, "mlmodel_cache_requests_total", result="error") >= 1
        assert sample(down, "mlmodel_cache_requests_total", result="skipped") > 0
        assert sample(down, "mlmodel_cache_up") == 0

        redis_server.start()
        await asyncio.sleep(0.6)
        await load.during(2.0)
        after = (await client.get("/metrics")).text
        assert sample(after, "mlmodel_cache_up") == 1
        hits = sample(after, "mlmodel_cache_requests_total", result="hit")
        assert hits > sample(down, "mlmodel_cache_requests_total", result="hit")
    # Timed by the server itself: the test's 16 Python clients on the same cores add their own
    # scheduling delays (up to half a second on a quiet machine) that say nothing of the runtime.
    # Redis calls time out after 100 ms, so no request may come near 0.5 s.
    assert requests_slower_than(after, 0.5) == 0, after
    assert load.answered > 100
    assert "prediction cache unavailable" in server.logs()
    assert "prediction cache available again" in server.logs()


def test_mlmodel_serve_honours_spec_cache(
    models: Models, tmp_path: Path, redis_server: RedisServer, start_server: Any
) -> None:
    path = write_mlmodel(
        tmp_path / "model", "sentiment", models.text,
        extra="  cache:\n    redis: {secretRef: {name: redis, key: url}}\n    ttlSeconds: 120\n",
    )  # fmt: skip
    server = start_server([str(path)], env={"MLMODEL_CACHE_REDIS_URL": redis_server.url})
    server.wait_ready()
    for _ in range(2):
        response = httpx.post(f"{server.url}/v2/models/sentiment/infer", json=V2_BODY, timeout=10)
        assert response.status_code == 200
        time.sleep(0.2)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'mlmodel_cache_requests_total{model="sentiment",result="hit"} 1.0' in metrics
    (key,) = redis_server.command("--scan", "--pattern", "mlmodel:prediction:*").split()
    assert 110 <= int(redis_server.command("TTL", key)) <= 120

    # Without the URL, the file cannot be served as written: said so, not silently uncached.
    refused = start_server([str(path)])
    assert refused.process.wait(30) == 2
    assert "MLMODEL_CACHE_REDIS_URL" in refused.logs()


def test_metrics_without_a_cache_have_no_cache_series() -> None:
    metrics = RuntimeMetrics("m")
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    assert "mlmodel_cache_up{" not in text and "mlmodel_cache_requests_total{" not in text
    PredictionCache(object(), metrics=metrics, ttl_seconds=1, max_entry_bytes=1, timeout_seconds=1)
    assert 'mlmodel_cache_up{model="m"} 1.0' in generate_latest(metrics.registry).decode()
