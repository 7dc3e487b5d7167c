"""Hostile request bodies: huge, deeply nested, NaN/Infinity, empty batches, too many rows, shapes
that claim more than they hold. Each gets a 4xx that says what to fix (never a 500), and the server
keeps serving afterwards."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from support.runtime import InProcess, Models, running_app, settings_for

TEXT = "/v2/models/reviews/infer"
TEXT_V1 = "/v1/models/reviews:predict"
HOUSES = "/v2/models/houses/infer"
HOUSES_V1 = "/v1/models/houses:predict"
FEATURES = ("area", "rooms", "age", "distance")


def columns(rows: int, declared: int | None = None) -> dict:
    """One FP64 input per feature of the tabular model, ``declared`` rows in each shape."""
    return {
        "inputs": [
            {
                "name": name,
                "shape": [declared if declared is not None else rows],
                "datatype": "FP64",
                "data": [1.0] * rows,
            }
            for name in FEATURES
        ]
    }


def texts(data: list, shape: list[int] | None = None) -> dict:
    return {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": shape or [len(data)], "data": data}
        ]
    }


async def expect(rt: InProcess, path: str, body: bytes, status: int, *fragments: str) -> None:
    response = await rt.client.post(
        path, content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for fragment in fragments:
        assert fragment in message, message


async def still_serving(rt: InProcess) -> None:
    response = await rt.client.post(TEXT_V1, json={"instances": ["great"]})
    assert response.json() == {"predictions": ["positive"]}


@pytest.fixture
async def text_app(models: Models, tmp_path: Path):
    settings = settings_for(models.text, tmp_path, "reviews", max_instances_per_request=100)
    async with running_app(settings) as rt:
        yield rt


@pytest.fixture
async def houses_app(models: Models, tmp_path: Path):
    async with running_app(settings_for(models.tabular, tmp_path, "houses")) as rt:
        yield rt


async def test_deeply_nested_json_is_a_400(text_app: InProcess) -> None:
    # 100,000 levels: past orjson's depth limit of 1024, which refuses it without recursing.
    await expect(text_app, TEXT, b"[" * 100_000 + b"]" * 100_000, 400, "not valid JSON", "depth")
    nested_data = (
        b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": '
        + b"[" * 1000
        + b'"x"'
        + b"]" * 1000
        + b"}]}"
    )
    await expect(text_app, TEXT, nested_data, 400, "BYTES data must be strings")
    await still_serving(text_app)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
async def test_nan_and_infinity_literals_are_refused(houses_app: InProcess, literal: bytes) -> None:
    body = b'{"instances": [[' + literal + b", 3, 20, 1.5]]}"
    await expect(houses_app, HOUSES_V1, body, 400, "NaN and Infinity are not JSON numbers")
    v2 = orjson.dumps(columns(1)).replace(b"[1.0]", b"[" + literal + b"]", 1)
    await expect(houses_app, HOUSES, v2, 400, "NaN and Infinity are not JSON numbers")


async def test_a_number_too_large_for_a_double_is_refused(houses_app: InProcess) -> None:
    await expect(
        houses_app, HOUSES_V1, b'{"instances": [[1e999, 3, 20, 1.5]]}', 400, "not valid JSON"
    )


async def test_empty_batches_are_a_400(text_app: InProcess, houses_app: InProcess) -> None:
    await expect(text_app, TEXT, orjson.dumps(texts([])), 400, "holds no rows")
    await expect(text_app, TEXT_V1, b'{"instances": []}', 400, "at least one instance")
    await expect(houses_app, HOUSES, orjson.dumps(columns(0)), 400, "holds no rows")
    matrix = {"inputs": [{"name": "input-0", "shape": [0, 4], "datatype": "FP64", "data": []}]}
    await expect(houses_app, HOUSES, orjson.dumps(matrix), 400, "holds no rows")


async def test_more_rows_than_allowed_is_a_413(text_app: InProcess) -> None:
    await expect(
        text_app, TEXT, orjson.dumps(texts(["fine"] * 101)), 413, "101 rows", "limit of 100"
    )
    await expect(
        text_app,
        TEXT_V1,
        orjson.dumps({"instances": ["fine"] * 101}),
        413,
        "MAX_INSTANCES_PER_REQUEST",
    )
    response = await text_app.client.post(TEXT_V1, json={"instances": ["fine"] * 100})
    assert response.status_code == 200 and len(response.json()["predictions"]) == 100


async def test_a_shape_claiming_more_rows_than_the_data_holds_is_a_400(
    houses_app: InProcess,
) -> None:
    # Sized from the data, never from the declared shape: 10**12 rows must not be allocated.
    await expect(
        houses_app,
        HOUSES,
        orjson.dumps(columns(1, declared=10**12)),
        400,
        "make shape match the data",
    )
    await expect(
        houses_app, HOUSES, orjson.dumps(columns(3, declared=2)), 400, "make shape match the data"
    )
    response = await houses_app.client.post(HOUSES, json=columns(2))
    assert response.status_code == 200


async def test_huge_strings_and_bodies_within_the_limit_are_served(text_app: InProcess) -> None:
    long_review = "great wonderful " * 300_000  # 4.8 MB in one string
    response = await text_app.client.post(TEXT_V1, json={"instances": [long_review]})
    assert response.json() == {"predictions": ["positive"]}
    # Just under the 10 MiB body limit: parsed, unknown keys ignored, answered.
    padding = "x" * (10 * 2**20 - 100)
    body = orjson.dumps({"instances": ["awful"], "padding": padding})
    assert len(body) < 10 * 2**20
    response = await text_app.client.post(TEXT_V1, content=body)
    assert response.json() == {"predictions": ["negative"]}
    over = orjson.dumps({"instances": ["awful"], "padding": padding + "x" * 200})
    await expect(text_app, TEXT_V1, over, 413, "over the limit")


async def test_bodies_that_are_not_utf8_or_not_objects_are_a_400(text_app: InProcess) -> None:
    await expect(text_app, TEXT, b'{"inputs": "\xff\xfe"}', 400, "not valid JSON")
    await expect(text_app, TEXT, b'"just a string"', 400, "must be a JSON object")
    await expect(text_app, TEXT, b"", 400, "empty")
    await still_serving(text_app)
