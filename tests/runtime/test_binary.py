"""The binary tensor extension of the V2 REST protocol, in-process: bodies framed by
Inference-Header-Content-Length, raw and length-prefixed BYTES inputs mixed with JSON ones, binary
outputs, the same limits and shedding as JSON, and a clear 400 for every lie a body can tell. The
framing is built here by hand, from the protocol's description, not with the runtime's encoder."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import runtime_models
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.runtime import Models, running_app, settings_for

HEADER = "Inference-Header-Content-Length"
TEXTS = ["a wonderful film, great acting", "boring plot and dull music"]


def framed(header: dict[str, Any], *tensors: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(tensors), {HEADER: str(len(head))}


def bytes_tensor(*texts: str) -> bytes:
    return b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)


def unframe(response: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The JSON header and each binary output's raw bytes of a framed response."""
    length = int(response.headers[HEADER])
    header = json.loads(response.content[:length])
    raw, offset = {}, length
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is not None:
            raw[output["name"]] = response.content[offset : offset + size]
            offset += size
    assert offset == len(response.content)
    return header, raw


def split_bytes(raw: bytes) -> list[str]:
    texts, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        texts.append(raw[offset + 4 : offset + 4 + length].decode())
        offset += 4 + length
    return texts


def text_input(**extra: Any) -> dict[str, Any]:
    return {"name": "text", "shape": [len(TEXTS)], "datatype": "BYTES", **extra}


async def test_binary_text_request_with_binary_and_json_outputs(models: Models, tmp_path: Path) -> None:
    async with running_app(settings_for(models.text, tmp_path, "sentiment")) as rt:
        plain = await rt.client.post(
            "/v2/models/sentiment/infer", json={"inputs": [text_input(data=TEXTS)]}
        )
        expected = {output["name"]: output for output in plain.json()["outputs"]}
        body, headers = framed(
            {
                "id": "b1",
                "inputs": [text_input(parameters={"binary_data_size": len(bytes_tensor(*TEXTS))})],
                "outputs": [
                    {"name": "label", "parameters": {"binary_data": True}},
                    {"name": "probabilities", "parameters": {"binary_data": False}},
                ],
            },
            bytes_tensor(*TEXTS),
        )
        response = await rt.client.post("/v2/models/sentiment/infer", content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/octet-stream"
        header, raw = unframe(response)
        assert header["id"] == "b1"
        label, probabilities = header["outputs"]
        assert label["datatype"] == "BYTES" and label["shape"] == [2] and "data" not in label
        assert split_bytes(raw["label"]) == expected["label"]["data"] == ["positive", "negative"]
        assert probabilities == expected["probabilities"]  # asked for as JSON


async def test_request_level_binary_output_for_a_json_request(models: Models, tmp_path: Path) -> None:
    """What tritonclient sends by default when no outputs are named: every output binary."""
    async with running_app(settings_for(models.tabular, tmp_path, "houses")) as rt:
        rows = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 1.0, 0.5, 2.0]])
        request = {
            "parameters": {"binary_data_output": True},
            "inputs": [
                {"name": name, "shape": [2], "datatype": "FP64", "data": rows[:, i].tolist()}
                for i, name in enumerate(runtime_models.FEATURES)
            ],
        }
        response = await rt.client.post("/v2/models/houses/infer", json=request)
        assert response.status_code == 200, response.text
        header, raw = unframe(response)
        (output,) = header["outputs"]
        values = np.frombuffer(raw[output["name"]], dtype="<f8")
        np.testing.assert_allclose(values, runtime_models.house_price(rows))


async def test_mixed_json_and_binary_inputs_of_several_datatypes(models: Models, tmp_path: Path) -> None:
    rows = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 1.0, 0.5, 2.0], [0.0, 9.0, 1.0, 1.0]])
    area = rows[:, 0].astype("<f4").tobytes()
    rooms = rows[:, 1].astype("<i8").tobytes()
    age = rows[:, 2].astype("<f2").tobytes()
    async with running_app(settings_for(models.tabular, tmp_path, "houses")) as rt:
        body, headers = framed(
            {
                "inputs": [
                    {"name": "area", "shape": [3], "datatype": "FP32", "parameters": {"binary_data_size": len(area)}},
                    {"name": "distance", "shape": [3], "datatype": "FP64", "data": rows[:, 3].tolist()},
                    {"name": "rooms", "shape": [3], "datatype": "INT64", "parameters": {"binary_data_size": len(rooms)}},
                    {"name": "age", "shape": [3], "datatype": "FP16", "parameters": {"binary_data_size": len(age)}},
                ],
            },
            area, rooms, age,
        )  # fmt: skip
        response = await rt.client.post("/v2/models/houses/infer", content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"  # no binary output asked for
        np.testing.assert_allclose(
            response.json()["outputs"][0]["data"], runtime_models.house_price(rows)
        )


async def test_matrix_input_in_binary(models: Models, tmp_path: Path) -> None:
    rows = np.random.default_rng(1).normal(size=(5, 3))
    async with running_app(settings_for(models.matrix, tmp_path, "matrix")) as rt:
        plain = await rt.client.post(
            "/v2/models/matrix/infer",
            json={"inputs": [{"name": "input-0", "shape": [5, 3], "datatype": "FP64", "data": rows.ravel().tolist()}]},
        )  # fmt: skip
        raw = rows.astype("<f8").tobytes()
        body, headers = framed(
            {"inputs": [{"name": "input-0", "shape": [5, 3], "datatype": "FP64", "parameters": {"binary_data_size": len(raw)}}]},
            raw,
        )  # fmt: skip
        binary = await rt.client.post("/v2/models/matrix/infer", content=body, headers=headers)
        assert binary.status_code == 200 and binary.json() == plain.json()


LIES = {
    "header length past the body": (
        lambda body, n: (body, str(len(body) + 1)),
        "Inference-Header-Content-Length is",
    ),
    "header length zero": (lambda body, n: (body, "0"), "Inference-Header-Content-Length is 0"),
    "header length not a number": (lambda body, n: (body, "12abc"), "is not a number"),
    "header length cuts the JSON": (lambda body, n: (body, str(n - 3)), "not valid JSON"),
    "size larger than the data": (
        lambda body, n: (body[: n + 10], str(n)),
        "binary_data_size is 64 but only 10 bytes",
    ),
    "bytes left over": (lambda body, n: (body + b"\0\0\0", str(n)), "3 bytes after the JSON header"),
}


@pytest.mark.parametrize("lie", list(LIES))
async def test_a_lying_frame_is_a_clear_400(lie: str, models: Models, tmp_path: Path) -> None:
    raw = bytes_tensor(*TEXTS)
    body, headers = framed({"inputs": [text_input(parameters={"binary_data_size": len(raw)})]}, raw)
    change, message = LIES[lie]
    body, length = change(body, int(headers[HEADER]))
    async with running_app(settings_for(models.text, tmp_path, "sentiment")) as rt:
        response = await rt.client.post(
            "/v2/models/sentiment/infer", content=body, headers={HEADER: length}
        )
        assert response.status_code == 400, response.text
        assert message in response.json()["error"], response.json()


BAD_TENSORS = {
    "element length past the end": (
        [2], struct.pack("<I", 1000) + b"abc", "claims 1000 bytes but only 3 remain"
    ),
    "truncated length prefix": ([2], bytes_tensor("ok") + b"\x01\x00", "is cut short"),
    "fewer elements than the shape": ([3], bytes_tensor("a", "b"), "means 3 BYTES elements but the tensor holds 2"),
    "more elements than the shape": ([1], bytes_tensor("a", "b"), "holds more"),
    "invalid UTF-8": ([1], struct.pack("<I", 2) + b"\xff\xfe", "not valid UTF-8"),
    "huge shape, tiny data": ([10**12], bytes_tensor("a"), "holds 1"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_TENSORS))
async def test_malformed_bytes_tensors_are_400s(case: str, models: Models, tmp_path: Path) -> None:
    shape, raw, message = BAD_TENSORS[case]
    body, headers = framed(
        {"inputs": [{"name": "text", "shape": shape, "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}]},
        raw,
    )  # fmt: skip
    async with running_app(settings_for(models.text, tmp_path, "sentiment")) as rt:
        response = await rt.client.post("/v2/models/sentiment/infer", content=body, headers=headers)
        assert response.status_code == 400 and message in response.json()["error"], response.text


async def test_fixed_size_tensor_of_the_wrong_size(models: Models, tmp_path: Path) -> None:
    raw = np.arange(5, dtype="<f8").tobytes()
    body, headers = framed(
        {"inputs": [{"name": "input-0", "shape": [2, 3], "datatype": "FP64", "parameters": {"binary_data_size": len(raw)}}]},
        raw,
    )  # fmt: skip
    async with running_app(settings_for(models.matrix, tmp_path, "matrix")) as rt:
        response = await rt.client.post("/v2/models/matrix/infer", content=body, headers=headers)
        assert response.status_code == 400
        assert response.json()["error"] == (
            'input "input-0": shape [2, 3] of FP64 means 48 bytes but the tensor holds 40; make '
            "binary_data_size and shape agree"
        )


async def test_binary_size_without_the_header_and_flags_of_the_wrong_type(
    models: Models, tmp_path: Path
) -> None:
    async with running_app(settings_for(models.text, tmp_path, "sentiment")) as rt:
        no_header = await rt.client.post(
            "/v2/models/sentiment/infer",
            json={"inputs": [text_input(parameters={"binary_data_size": 4})]},
        )
        assert no_header.status_code == 400
        assert "no Inference-Header-Content-Length header" in no_header.json()["error"]
        flag = await rt.client.post(
            "/v2/models/sentiment/infer",
            json={"inputs": [text_input(data=TEXTS)], "outputs": [{"name": "label", "parameters": {"binary_data": "yes"}}]},
        )  # fmt: skip
        assert flag.status_code == 400
        assert flag.json()["error"] == "outputs[0].parameters.binary_data must be true or false"


async def test_binary_bodies_meet_the_same_limits_and_shedding(models: Models, tmp_path: Path) -> None:
    raw = bytes_tensor("x" * 5000)
    body, headers = framed(
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}]},
        raw,
    )  # fmt: skip
    settings = settings_for(
        models.text, tmp_path, "sentiment", max_request_bytes=2000, max_instances_per_request=2
    )
    async with running_app(settings) as rt:
        large = await rt.client.post("/v2/models/sentiment/infer", content=body, headers=headers)
        assert large.status_code == 413 and "over the limit of 2000 bytes" in large.json()["error"]
        raw = bytes_tensor("a", "b", "c")
        body, headers = framed(
            {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}]},
            raw,
        )  # fmt: skip
        rows = await rt.client.post("/v2/models/sentiment/infer", content=body, headers=headers)
        assert rows.status_code == 413 and "holds 3 rows, over the limit of 2" in rows.json()["error"]

    raw = struct.pack("<d", 1.0)
    body, headers = framed(
        {"inputs": [{"name": "input-0", "shape": [1, 1], "datatype": "FP64", "parameters": {"binary_data_size": 8}}]},
        raw,
    )  # fmt: skip
    settings = settings_for(models.slow, tmp_path, "slow", max_concurrent_requests=1)
    async with running_app(settings) as rt:
        first = asyncio.create_task(
            rt.client.post("/v2/models/slow/infer", content=body, headers=headers)
        )
        while rt.dataplane.in_flight == 0:
            await asyncio.sleep(0.005)
        shed = await rt.client.post("/v2/models/slow/infer", content=body, headers=headers)
        assert shed.status_code == 503 and shed.headers["retry-after"] == "1"
        assert (await first).status_code == 200


# --- fuzzing: whatever the body, a 200 or a 4xx with a message, never a 500 -----------------------

header_objects = st.fixed_dictionaries(
    {
        "inputs": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["text", "input-0", "area", 7]),
                    "datatype": st.sampled_from(["BYTES", "FP64", "FP32", "INT64", "BOOL", "FP16", "X"]),
                    "shape": st.lists(st.integers(-2, 2**40), min_size=0, max_size=3),
                    "parameters": st.fixed_dictionaries(
                        {"binary_data_size": st.one_of(st.integers(-5, 2**40), st.text(max_size=3), st.none())}
                    ),
                }
            ),
            max_size=3,
        ),
    },
    optional={
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["label", "probabilities", "nope"])},
                optional={"parameters": st.fixed_dictionaries({"binary_data": st.one_of(st.booleans(), st.integers())})},
            ),
            max_size=2,
        ),
        "parameters": st.fixed_dictionaries({"binary_data_output": st.one_of(st.booleans(), st.text(max_size=2))}),
    },
)  # fmt: skip


@given(
    header=header_objects,
    tail=st.binary(max_size=64),
    length_shift=st.sampled_from([0, 0, 0, -1, 1, -50, 10**6]),
)
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_fuzzed_binary_bodies_never_break_the_server(
    header: dict[str, Any], tail: bytes, length_shift: int, fuzz_app: Any
) -> None:
    head = json.dumps(header).encode()
    headers = {HEADER: str(len(head) + length_shift)}
    response = fuzz_app(head + tail, headers)
    assert response.status_code in (200, 400, 413), (response.status_code, response.text)
    if response.status_code != 200:
        assert response.json()["error"]


@pytest.fixture(scope="module")
def fuzz_app(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One in-process app for every example (hypothesis calls the test many times): a sync
    wrapper around an event loop of the module's own."""
    loop = asyncio.new_event_loop()
    settings = settings_for(models.text, tmp_path_factory.mktemp("fuzz"), "sentiment")
    context = running_app(settings)
    rt = loop.run_until_complete(context.__aenter__())

    def post(body: bytes, headers: dict[str, str]) -> Any:
        return loop.run_until_complete(
            rt.client.post("/v2/models/sentiment/infer", content=body, headers=headers)
        )

    yield post
    loop.run_until_complete(context.__aexit__(None, None, None))
    loop.close()
    assert "unhandled error" not in rt.log.getvalue()
