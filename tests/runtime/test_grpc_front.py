"""The gRPC front's life beside its worker: a real mlmodel-grpc-front process (built beside the
interpreter by `make install`), killed, refused its address, stopped with a call in flight, and
left by a caller that gave up. What the calls answer is test_grpc.py's, for both carriers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from mlmodel_runtime.grpc_front import CALL, CANCEL, FrontProtocol, GrpcFront
from mlmodel_runtime.grpc_server import InferenceService, start_grpc_server
from mlmodel_runtime.protocol import open_inference_pb2 as pb
from mlmodel_runtime.settings import RuntimeSettings
from mlmodel_runtime.shared_front import find_front
from support.runtime import InProcess, Models, running_app, settings_for
from test_grpc import Client, _tensor

SLOW_REQUEST = pb.ModelInferRequest(
    model_name="slow", inputs=[_tensor("input-0", "FP64", [1, 1], fp64_contents=[1.0])]
)


@pytest.fixture(autouse=True)
def _front_built() -> None:
    assert find_front("auto") is not None, "mlmodel-grpc-front is not built: run make install"


def front_settings(models: Models, tmp_path: Path, **values: Any) -> RuntimeSettings:
    return settings_for(models.slow, tmp_path, "slow", **{"host": "127.0.0.1", **values})


@contextlib.asynccontextmanager
async def running_front(
    models: Models, tmp_path: Path
) -> AsyncIterator[tuple[InProcess, GrpcFront, int]]:
    """The slow model's app and its gRPC front on a free loopback port; the front stopped after."""
    settings = front_settings(models, tmp_path)
    async with running_app(settings) as rt:
        front, port = await start_grpc_server(settings, rt.dataplane, tokens=None, access_log=None, port=0)
        assert isinstance(front, GrpcFront) and front.process is not None
        try:
            yield rt, front, port
        finally:
            await front.stop(None)


async def answer_from_a_new_front(
    port: int, what: str, each_try: Callable[[], object] = lambda: None
) -> pb.ModelInferResponse:
    """The slow model's answer once a front serves on ``port`` again: tries for 15 s, ``each_try``
    first; every failure until then must be UNAVAILABLE. Fails with ``what``."""
    deadline = time.monotonic() + 15
    while True:
        each_try()
        # A new channel each try: the old one's connection died with the first front.
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                return await Client(channel)("ModelInfer", SLOW_REQUEST)
            except aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def test_a_front_that_dies_is_started_again_and_serves(
    models: Models, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_front(models, tmp_path) as (_, front, port):
        first = front.process
        assert first is not None
        os.kill(first.pid, signal.SIGKILL)
        await first.wait()
        answer = await answer_from_a_new_front(port, "the front was not started again")
        assert list(answer.outputs[0].contents.fp64_contents) == [2.0]
        assert front.process is not first and front.process.returncode is None
        assert "the gRPC front exited; starting it again" in caplog.messages
    assert front.process.returncode is not None


async def test_a_front_that_cannot_listen_says_why(models: Models, tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine.
    settings = front_settings(models, tmp_path, host="192.0.2.1")
    async with running_app(settings) as rt:
        with pytest.raises(RuntimeError) as refused:
            await start_grpc_server(
                settings, rt.dataplane, tokens=None, access_log=None, reuse_port=True, port=0
            )
    message = str(refused.value)
    assert message.startswith("the gRPC front did not start: mlmodel-grpc-front: cannot listen on")
    assert "192.0.2.1" in message


async def test_stopping_lets_the_call_in_flight_finish_and_refuses_new_ones(
    models: Models, tmp_path: Path
) -> None:
    async with running_front(models, tmp_path) as (rt, front, port):
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            client = Client(channel)
            in_flight = asyncio.create_task(client("ModelInfer", SLOW_REQUEST))
            while rt.dataplane.in_flight == 0:
                await asyncio.sleep(0.005)
            stopping = asyncio.create_task(front.stop(10))
            answer = await in_flight
            assert list(answer.outputs[0].contents.fp64_contents) == [2.0]
            await stopping
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(aio.AioRpcError) as refused:
                await Client(channel)("ServerLive", pb.ServerLiveRequest())
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_caller_that_gives_up_cancels_its_call_in_the_worker(
    models: Models, tmp_path: Path
) -> None:
    async with running_front(models, tmp_path) as (rt, front, port):
        assert front.protocol is not None
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            # Connected first: a connection still being made inside the 50 ms would let the
            # deadline pass before the call is sent, and the worker would never see it.
            await asyncio.wait_for(channel.channel_ready(), 10)
            call = Client(channel).calls["ModelInfer"](SLOW_REQUEST, timeout=0.05)
            with pytest.raises(aio.AioRpcError) as late:
                await call
            # Which side's timer fires first is a race: the client's gives DEADLINE_EXCEEDED;
            # grpc-go's server resets the stream at its copy of the deadline (RST_STREAM CANCEL),
            # which the client reports as CANCELLED when that frame arrives first. Both mean the
            # call is over.
            over = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
            assert late.value.code() in over
        deadline = time.monotonic() + 5
        while front.protocol.tasks:  # the cancel frame reached the worker's task
            assert time.monotonic() < deadline, "the worker still serves the abandoned call"
            await asyncio.sleep(0.02)
        metrics = (await rt.client.get("/metrics")).text
        assert 'mlmodel_requests_total{code="500",endpoint="grpc_model_infer",model="slow"} 1.0' in metrics


def _frame(call_id: int, kind: int, payload: bytes = b"") -> bytes:
    """A frame as the front writes it (docs/protocols.md, "The gRPC front")."""
    return struct.pack(">IIB", 5 + len(payload), call_id, kind) + payload


async def test_a_call_cancelled_in_the_same_read_is_still_counted(
    models: Models, tmp_path: Path
) -> None:
    # A worker busy elsewhere can read a call and its cancel together (the caller's deadline
    # passed meanwhile). This test is the front's end of the socket, writing both in one send:
    # the call still runs its first step, so it is counted (a 500, as any call cancelled) and
    # answers nothing.
    async with running_app(front_settings(models, tmp_path)) as rt:
        service = InferenceService(rt.dataplane, tokens=None, access_log=None)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        transport, protocol = await asyncio.get_running_loop().connect_accepted_socket(
            lambda: FrontProtocol(service), ours
        )
        try:
            method = b"/inference.GRPCInferenceService/ModelInfer"
            call = (
                struct.pack(">H", len(method)) + method
                + struct.pack(">H", 9) + b"127.0.0.1"
                + struct.pack(">H", 0)  # no metadata
                + SLOW_REQUEST.SerializeToString()
            )  # fmt: skip
            theirs.sendall(_frame(7, CALL, call) + _frame(7, CANCEL))
            counted = 'mlmodel_requests_total{code="500",endpoint="grpc_model_infer",model="slow"} 1.0'
            deadline = time.monotonic() + 5
            while counted not in (await rt.client.get("/metrics")).text:
                assert time.monotonic() < deadline, "the cancelled call was never counted"
                await asyncio.sleep(0.02)
            assert protocol.tasks == {}
            await asyncio.sleep(0.3)  # longer than the slow model takes: no answer comes
            theirs.setblocking(False)
            with pytest.raises(BlockingIOError):
                theirs.recv(4096)
        finally:
            transport.close()
            theirs.close()
