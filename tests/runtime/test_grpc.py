"""The gRPC service in-process: the app's data plane served on a loopback port by each carrier of
the calls (the gRPC front, a real mlmodel-grpc-front process, and grpc.aio), called through a
plain grpc.aio channel with the runtime's own messages. Health, metadata, typed and raw
tensors, every error mapped to its gRPC status, auth in metadata, shedding, metrics, access log,
statistics, and fuzzed messages. (The real clients are in test_clients.py, in processes of their
own: their generated modules clash with these in protobuf's default pool.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import runtime_models
from grpc import aio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlmodel_runtime.grpc_front import GrpcFront
from mlmodel_runtime.grpc_server import SERVICE, start_grpc_server
from mlmodel_runtime.protocol import open_inference_pb2 as pb
from mlmodel_runtime.settings import RuntimeSettings
from mlmodel_runtime.shared_front import find_front
from support.ports import listening_sockets
from support.runtime import InProcess, Models, running_app, settings_for

TEXTS = ["a wonderful film, great acting", "boring plot and dull music"]
METHODS = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
}


class Client:
    """One stub-less caller per method, as any generated client would make."""

    def __init__(self, channel: aio.Channel) -> None:
        self.channel = channel
        self.calls = {
            name: channel.unary_unary(
                f"/{SERVICE}/{name}",
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            )
            for name, (request, response) in METHODS.items()
        }
        self.raw_infer = channel.unary_unary(f"/{SERVICE}/ModelInfer")  # bytes in, bytes out

    async def __call__(self, method: str, request: Any, **kwargs: Any) -> Any:
        return await self.calls[method](request, timeout=10, **kwargs)


# MLMODEL_GRPC_FRONT for each carrier of the calls.
CARRIERS = {"front": "auto", "grpc.aio": "off"}


@pytest.fixture(scope="module", params=list(CARRIERS))
def carrier(request: pytest.FixtureRequest) -> str:
    """Every test here runs twice: through the gRPC front (built beside the interpreter by
    `make install`) and through grpc.aio."""
    setting = CARRIERS[request.param]
    if setting == "auto":
        assert find_front("auto") is not None, "mlmodel-grpc-front is not built: run make install"
    return setting


@pytest.fixture(autouse=True)
def _carried_by(carrier: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLMODEL_GRPC_FRONT", carrier)


@contextlib.asynccontextmanager
async def running_grpc(settings: RuntimeSettings) -> AsyncIterator[tuple[InProcess, Client]]:
    async with running_app(settings) as rt:
        state = rt.app.state
        server, port = await start_grpc_server(
            settings, rt.dataplane, tokens=state.tokens, access_log=state.access_log, port=0
        )
        assert isinstance(server, GrpcFront) == (settings.grpc_front != "off")
        try:
            async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield rt, Client(channel)
        finally:
            await server.stop(None)


def grpc_settings(artifact: Any, tmp_path: Path, name: str, **values: Any) -> RuntimeSettings:
    return settings_for(artifact, tmp_path, name, host="127.0.0.1", **values)


def text_request(**extra: Any) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name="sentiment",
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="text", datatype="BYTES", shape=[len(TEXTS)],
                contents=pb.InferTensorContents(bytes_contents=[t.encode() for t in TEXTS]),
            )
        ],
        **extra,
    )  # fmt: skip


async def test_health_and_metadata_match_http(models: Models, tmp_path: Path) -> None:
    settings = grpc_settings(models.text, tmp_path, "sentiment", model_version="2")
    async with running_grpc(settings) as (rt, client):
        assert (await client("ServerLive", pb.ServerLiveRequest())).live
        assert (await client("ServerReady", pb.ServerReadyRequest())).ready
        assert (await client("ModelReady", pb.ModelReadyRequest(name="sentiment"))).ready
        assert (await client("ModelReady", pb.ModelReadyRequest(name="sentiment", version="2"))).ready
        server = await client("ServerMetadata", pb.ServerMetadataRequest())
        assert list(server.extensions) == (await rt.client.get("/v2")).json()["extensions"]
        metadata = await client("ModelMetadata", pb.ModelMetadataRequest(name="sentiment"))
        http = (await rt.client.get("/v2/models/sentiment")).json()
        assert metadata.name == http["name"] and list(metadata.versions) == http["versions"]
        assert [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
            for t in metadata.outputs
        ] == http["outputs"]
        with pytest.raises(aio.AioRpcError) as missing:
            await client("ModelMetadata", pb.ModelMetadataRequest(name="other"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert missing.value.details() == 'model "other" not found; this server serves "sentiment"'
        with pytest.raises(aio.AioRpcError) as version:
            await client("ModelReady", pb.ModelReadyRequest(name="sentiment", version="9"))
        assert version.value.code() == grpc.StatusCode.NOT_FOUND


async def test_typed_contents_answer_as_json_does(models: Models, tmp_path: Path) -> None:
    async with running_grpc(grpc_settings(models.text, tmp_path, "sentiment")) as (rt, client):
        http = await rt.client.post(
            "/v2/models/sentiment/infer",
            json={"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": TEXTS}]},
        )
        expected = {output["name"]: output for output in http.json()["outputs"]}
        response = await client("ModelInfer", text_request(id="g1"))
        assert response.id == "g1" and response.model_name == "sentiment"
        assert not response.raw_output_contents  # typed request, typed answer
        label, probabilities = response.outputs
        assert [v.decode() for v in label.contents.bytes_contents] == expected["label"]["data"]
        assert list(probabilities.shape) == expected["probabilities"]["shape"]
        np.testing.assert_allclose(
            probabilities.contents.fp64_contents, expected["probabilities"]["data"]
        )
        only = await client(
            "ModelInfer",
            text_request(outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="label")]),
        )
        assert [output.name for output in only.outputs] == ["label"]


async def test_every_acceptor_serves_the_calls_its_connections_bring(
    models: Models, tmp_path: Path
) -> None:
    """MLMODEL_GRPC_ACCEPTORS servers listen on the one port; calls over many channels at once,
    whichever server the kernel gives each connection, all get the model's answer."""
    settings = grpc_settings(
        models.text, tmp_path, "sentiment", grpc_front="off", grpc_acceptors=4
    )
    async with running_app(settings) as rt:
        state = rt.app.state
        servers, port = await start_grpc_server(
            settings, rt.dataplane, tokens=state.tokens, access_log=state.access_log, port=0
        )
        try:
            assert len(servers.servers) == 4 and listening_sockets(port) == 4
            http = await rt.client.post(
                "/v2/models/sentiment/infer",
                json={"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": TEXTS}]},
            )
            expected = http.json()["outputs"][0]["data"]
            channels = [aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(16)]
            try:
                answers = await asyncio.gather(
                    *(Client(channel)("ModelInfer", text_request()) for channel in channels * 4)
                )
            finally:
                await asyncio.gather(*(channel.close() for channel in channels))
            for answer in answers:
                assert [v.decode() for v in answer.outputs[0].contents.bytes_contents] == expected
            stats = (await rt.client.get("/v2/models/sentiment/stats")).json()
            assert stats["model_stats"][0]["inference_stats"]["success"]["count"] == 1 + 64
        finally:
            await servers.stop(None)
        assert listening_sockets(port) == 0


async def test_raw_contents_in_raw_contents_out(models: Models, tmp_path: Path) -> None:
    rows = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 1.0, 0.5, 2.0]])
    request = pb.ModelInferRequest(
        model_name="houses",
        inputs=[
            pb.ModelInferRequest.InferInputTensor(name=name, datatype="FP32", shape=[2])
            for name in runtime_models.FEATURES
        ],
        raw_input_contents=[rows[:, i].astype("<f4").tobytes() for i in range(4)],
    )
    async with running_grpc(grpc_settings(models.tabular, tmp_path, "houses")) as (_rt, client):
        response = await client("ModelInfer", request)
        (output,) = response.outputs
        assert output.datatype == "FP64" and list(output.shape) == [2]
        values = np.frombuffer(response.raw_output_contents[0], dtype="<f8")
        np.testing.assert_allclose(values, runtime_models.house_price(rows), rtol=1e-6)


def _tensor(name: str, datatype: str, shape: list[int], **contents: Any) -> Any:
    return pb.ModelInferRequest.InferInputTensor(
        name=name, datatype=datatype, shape=shape, contents=pb.InferTensorContents(**contents)
    )


BAD_REQUESTS = {
    "unknown datatype": (
        pb.ModelInferRequest(model_name="sentiment", inputs=[_tensor("text", "STRING", [1])]),
        grpc.StatusCode.INVALID_ARGUMENT, 'input "text": unknown datatype "STRING"',
    ),
    "negative shape": (
        pb.ModelInferRequest(model_name="sentiment", inputs=[_tensor("text", "BYTES", [-1], bytes_contents=[b"a"])]),
        grpc.StatusCode.INVALID_ARGUMENT, "shape must be a list of non-negative integers",
    ),
    "values in the wrong field": (
        pb.ModelInferRequest(model_name="sentiment", inputs=[_tensor("text", "BYTES", [1], fp64_contents=[1.0])]),
        grpc.StatusCode.INVALID_ARGUMENT, "takes its values in contents.bytes_contents, which is empty",
    ),
    "raw entries do not match the inputs": (
        pb.ModelInferRequest(model_name="sentiment", inputs=[_tensor("text", "BYTES", [1])], raw_input_contents=[b"", b""]),
        grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents has 2 entries for 1 inputs",
    ),
    "lying raw BYTES length": (
        pb.ModelInferRequest(
            model_name="sentiment", inputs=[pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[1])],
            raw_input_contents=[b"\xff\x00\x00\x00abc"],
        ),
        grpc.StatusCode.INVALID_ARGUMENT, "claims 255 bytes but only 3 remain",
    ),
    "no inputs": (
        pb.ModelInferRequest(model_name="sentiment"),
        grpc.StatusCode.INVALID_ARGUMENT, "the request has no inputs",
    ),
    "unknown output": (
        text_request(outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="nope")]),
        grpc.StatusCode.INVALID_ARGUMENT, 'unknown output "nope"',
    ),
    "unknown model": (
        pb.ModelInferRequest(model_name="other"), grpc.StatusCode.NOT_FOUND, 'model "other" not found',
    ),
}  # fmt: skip


async def test_bad_requests_get_the_matching_status_and_message(models: Models, tmp_path: Path) -> None:
    async with running_grpc(grpc_settings(models.text, tmp_path, "sentiment")) as (rt, client):
        for case, (request, code, message) in BAD_REQUESTS.items():
            with pytest.raises(aio.AioRpcError) as error:
                await client("ModelInfer", request)
            assert error.value.code() == code, case
            assert message in error.value.details(), (case, error.value.details())
        with pytest.raises(aio.AioRpcError) as garbage:
            await client.raw_infer(b"\xff\xff\xff", timeout=10)
        assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid ModelInferRequest" in garbage.value.details()
    assert "unhandled error" not in rt.log.getvalue()


async def test_limits_auth_and_shedding(models: Models, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n")
    settings = grpc_settings(
        models.text, tmp_path / "a", "sentiment", auth_token_file=tokens, max_request_bytes=2000
    )
    async with running_grpc(settings) as (rt, client):
        with pytest.raises(aio.AioRpcError) as missing:
            await client("ModelInfer", text_request())
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "missing bearer token" in missing.value.details()
        with pytest.raises(aio.AioRpcError) as wrong:
            await client("ModelInfer", text_request(), metadata=(("authorization", "Bearer no"),))
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        granted = await client(
            "ModelInfer", text_request(), metadata=(("authorization", "Bearer s3cret"),)
        )
        assert granted.outputs
        assert (await client("ServerReady", pb.ServerReadyRequest())).ready  # probes: no token
        large = pb.ModelInferRequest(
            model_name="sentiment", inputs=[_tensor("text", "BYTES", [1], bytes_contents=[b"x" * 5000])]
        )  # fmt: skip
        with pytest.raises(aio.AioRpcError) as too_large:
            await client("ModelInfer", large, metadata=(("authorization", "Bearer s3cret"),))
        assert too_large.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    request = pb.ModelInferRequest(
        model_name="slow", inputs=[_tensor("input-0", "FP64", [1, 1], fp64_contents=[1.0])]
    )
    settings = grpc_settings(models.slow, tmp_path / "b", "slow", max_concurrent_requests=1)
    async with running_grpc(settings) as (rt, client):
        first = asyncio.create_task(client("ModelInfer", request))
        while rt.dataplane.in_flight == 0:
            await asyncio.sleep(0.005)
        call = client.calls["ModelInfer"](request, timeout=10)
        with pytest.raises(aio.AioRpcError) as shed:
            await call
        assert shed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "already in flight (limit 1)" in shed.value.details()
        assert ("retry-after", "1") in tuple(shed.value.trailing_metadata() or ())
        assert list((await first).outputs[0].contents.fp64_contents) == [2.0]


async def test_metrics_access_log_and_statistics_count_grpc(models: Models, tmp_path: Path) -> None:
    async with running_grpc(grpc_settings(models.text, tmp_path, "sentiment")) as (rt, client):
        await client("ModelInfer", text_request(), metadata=(("x-request-id", "grpc-7"),))
        with pytest.raises(aio.AioRpcError):
            await client("ModelInfer", pb.ModelInferRequest(model_name="sentiment"))
        metrics = (await rt.client.get("/metrics")).text
        assert (
            'mlmodel_requests_total{code="200",endpoint="grpc_model_infer",model="sentiment"} 1.0'
            in metrics
        )
        assert 'code="400",endpoint="grpc_model_infer"' in metrics
        stats = (await rt.client.get("/v2/models/sentiment/stats")).json()["model_stats"][0]
        assert stats["inference_count"] == 2 and stats["inference_stats"]["success"]["count"] == 1
        assert stats["inference_stats"]["fail"]["count"] == 1
    lines = [json.loads(line) for line in rt.log.getvalue().splitlines()]
    (line,) = [line for line in lines if line["http.request.id"] == "grpc-7"]
    assert line["url.path"] == "/inference.GRPCInferenceService/ModelInfer"
    assert line["http.response.status_code"] == 200 and line["client.address"] == "127.0.0.1"


# --- fuzzing: any message, a status with details, never INTERNAL or UNKNOWN ----------------------

contents = st.builds(
    pb.InferTensorContents,
    bool_contents=st.lists(st.booleans(), max_size=3),
    int64_contents=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),
    fp32_contents=st.lists(st.floats(width=32), max_size=3),
    fp64_contents=st.lists(st.floats(), max_size=3),
    bytes_contents=st.lists(st.binary(max_size=8), max_size=3),
)
tensors = st.builds(
    pb.ModelInferRequest.InferInputTensor,
    name=st.sampled_from(["text", "input-0", "area", "rooms", ""]),
    datatype=st.sampled_from(["BYTES", "FP64", "FP32", "FP16", "INT64", "BOOL", "UINT8", "", "x"]),
    shape=st.lists(st.integers(-3, 2**40), max_size=3),
    contents=st.one_of(st.none(), contents),
)
messages = st.builds(
    pb.ModelInferRequest,
    model_name=st.sampled_from(["sentiment", "sentiment", "other"]),
    model_version=st.sampled_from(["", "", "1", "9"]),
    id=st.text(max_size=5),
    inputs=st.lists(tensors, max_size=3),
    outputs=st.lists(
        st.builds(pb.ModelInferRequest.InferRequestedOutputTensor, name=st.sampled_from(["label", "x"])),
        max_size=2,
    ),
    raw_input_contents=st.lists(st.binary(max_size=24), max_size=3),
)  # fmt: skip
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@given(message=st.one_of(messages, st.binary(max_size=64)))
@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_fuzzed_messages_never_break_the_service(message: Any, fuzz_grpc: Any) -> None:
    body = message if isinstance(message, bytes) else message.SerializeToString()
    code, details = fuzz_grpc(body)
    assert code in ALLOWED, (code, details)
    assert code == grpc.StatusCode.OK or details


@pytest.fixture(scope="module")
def fuzz_grpc(models: Models, tmp_path_factory: pytest.TempPathFactory, carrier: str) -> Any:
    loop = asyncio.new_event_loop()
    folder = tmp_path_factory.mktemp("fuzz-grpc")
    settings = grpc_settings(
        models.text, folder, "sentiment", model_version="1", grpc_front=carrier
    )
    context = running_grpc(settings)
    rt, client = loop.run_until_complete(context.__aenter__())

    async def call(body: bytes) -> tuple[grpc.StatusCode, str]:
        try:
            pb.ModelInferResponse.FromString(await client.raw_infer(body, timeout=10))
            return grpc.StatusCode.OK, ""
        except aio.AioRpcError as error:
            return error.code(), error.details() or ""

    yield lambda body: loop.run_until_complete(call(body))
    loop.run_until_complete(context.__aexit__(None, None, None))
    loop.close()
    assert "unhandled error" not in rt.log.getvalue()
