"""The gRPC front a supervisor shares among its workers (shared_front.py, runtime/grpcfront's
pool.go): a real mlmodel-grpc-front on loopback and two workers in this process (two apps, each
with its own data plane, connected as `mlmodel serve --workers 2` connects them). A channel's calls
spread over the workers; a worker that goes away fails only its own calls; a stopping worker gets
no new calls and finishes its own; a front that dies is started again and the workers connect
again; a front whose supervisor is gone stops. test_server.py runs the whole server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import runtime_models
from grpc import aio
from mlmodel_runtime.grpc_front import READINESS_POLL_SECONDS, FrontLink
from mlmodel_runtime.grpc_server import start_grpc_server
from mlmodel_runtime.protocol import open_inference_pb2 as pb
from mlmodel_runtime.shared_front import SOCKET_ENV, SharedFront, find_front
from runtime_models import Artifact
from support.runtime import InProcess, running_app, settings_for
from test_grpc import Client
from test_grpc_front import SLOW_REQUEST, answer_from_a_new_front


@contextlib.asynccontextmanager
async def shared_front(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[SharedFront, int]]:
    """The front on a free loopback port, its socket named for the workers started after."""
    binary = find_front("auto")
    assert binary is not None, "mlmodel-grpc-front is not built: run make install"
    grpc_socket = socket.create_server(("127.0.0.1", 0))
    front = SharedFront(binary, grpc_socket, [], procs=1)
    front.start()
    monkeypatch.setenv(SOCKET_ENV, front.path)
    try:
        yield front, grpc_socket.getsockname()[1]
    finally:
        await asyncio.to_thread(front.stop, 10)
        grpc_socket.close()


@pytest.fixture(scope="module")
def slower(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """The slow model at 1 s a call: a second worker starts while the first one's call runs."""
    return runtime_models.slow_doubler(tmp_path_factory.mktemp("slower") / "slow.joblib", delay=1.0)


@contextlib.asynccontextmanager
async def worker(
    artifact: Artifact, folder: Path, *, wait: bool = True
) -> AsyncIterator[tuple[InProcess, FrontLink]]:
    """The slow model's app, connected to the shared front as a supervisor's worker connects
    (``wait``: once its model is loaded)."""
    settings = settings_for(artifact, folder, "slow", host="127.0.0.1")
    async with running_app(settings, wait=wait) as rt:
        link, _ = await start_grpc_server(settings, rt.dataplane, tokens=None, access_log=None)
        assert isinstance(link, FrontLink)
        try:
            yield rt, link
        finally:
            await link.stop(None)


async def until(condition, what: str, seconds: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def test_one_channels_calls_spread_over_the_workers(
    slower: Artifact, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        shared_front(monkeypatch) as (_, port),
        worker(slower, tmp_path / "a") as (a, _),
        worker(slower, tmp_path / "b") as (b, _),
        aio.insecure_channel(f"127.0.0.1:{port}") as channel,  # one HTTP/2 connection
    ):
        client = Client(channel)
        calls = [asyncio.create_task(client("ModelInfer", SLOW_REQUEST)) for _ in range(8)]
        # Each call goes to the worker with the fewer unanswered: both hold some at once.
        await until(
            lambda: a.dataplane.in_flight > 0 and b.dataplane.in_flight > 0,
            "the channel's calls did not reach both workers",
        )
        for answer in await asyncio.gather(*calls):
            assert list(answer.outputs[0].contents.fp64_contents) == [2.0]


async def test_calls_go_to_the_ready_worker_and_to_one_not_ready_only_when_none_is(
    slower: Artifact, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker whose model never loads answers at once; without readiness it would have the fewer
    # unanswered calls and draw most of them.
    async with (
        shared_front(monkeypatch) as (_, port),
        worker(Artifact(slower.path, "0" * 64), tmp_path / "broken", wait=False) as (broken, _),
        aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        client = Client(channel)
        with pytest.raises(aio.AioRpcError) as alone:  # the only worker: its own answer
            await client("ModelInfer", SLOW_REQUEST)
        assert alone.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no runtime worker is serving yet" not in (alone.value.details() or "")
        async with worker(slower, tmp_path / "a"):
            await asyncio.sleep(3 * READINESS_POLL_SECONDS)  # its "ready" has reached the front
            answers = await asyncio.gather(*(client("ModelInfer", SLOW_REQUEST) for _ in range(6)))
            for answer in answers:
                assert list(answer.outputs[0].contents.fp64_contents) == [2.0]
        assert not broken.dataplane.ready


async def test_before_any_worker_connects_calls_are_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with (
        shared_front(monkeypatch) as (_, port),
        aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        with pytest.raises(aio.AioRpcError) as refused:
            await Client(channel)("ServerLive", pb.ServerLiveRequest())
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no runtime worker is serving yet" in (refused.value.details() or "")


async def test_a_worker_that_goes_away_fails_its_own_calls_and_another_serves(
    slower: Artifact, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        shared_front(monkeypatch) as (_, port),
        worker(slower, tmp_path / "a") as (a, link_a),
        aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        client = Client(channel)
        lost = asyncio.create_task(client("ModelInfer", SLOW_REQUEST))
        await until(lambda: a.dataplane.in_flight > 0, "the call did not reach the worker")
        link_a.stopping = True  # gone for good: no connecting again
        assert link_a.protocol is not None and link_a.protocol.transport is not None
        link_a.protocol.transport.abort()  # as a worker that was killed
        with pytest.raises(aio.AioRpcError) as failed:
            await lost
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "stopped before answering" in (failed.value.details() or "")
        async with worker(slower, tmp_path / "b"):
            answer = await client("ModelInfer", SLOW_REQUEST)  # the same channel, another worker
            assert list(answer.outputs[0].contents.fp64_contents) == [2.0]


async def test_a_stopping_worker_finishes_its_calls_and_gets_no_new_ones(
    slower: Artifact, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        shared_front(monkeypatch) as (_, port),
        worker(slower, tmp_path / "a") as (a, link_a),
        worker(slower, tmp_path / "b") as (b, link_b),
        aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        client = Client(channel)
        own = asyncio.create_task(client("ModelInfer", SLOW_REQUEST))
        await until(
            lambda: a.dataplane.in_flight + b.dataplane.in_flight > 0, "the call was not served"
        )
        busy, idle, link = (a, b, link_a) if a.dataplane.in_flight else (b, a, link_b)
        stopping = asyncio.create_task(link.stop(10))
        await asyncio.sleep(0.1)  # the front has read the worker's "no new calls"
        later = [asyncio.create_task(client("ModelInfer", SLOW_REQUEST)) for _ in range(4)]
        await until(
            lambda: idle.dataplane.in_flight > 0, "new calls did not reach the other worker"
        )
        assert busy.dataplane.in_flight == 1  # its own call only
        answer = await own
        assert list(answer.outputs[0].contents.fp64_contents) == [2.0]
        await stopping
        for answer in await asyncio.gather(*later):
            assert list(answer.outputs[0].contents.fp64_contents) == [2.0]


async def test_a_front_that_dies_is_started_again_and_the_workers_connect_again(
    slower: Artifact,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mlmodel_runtime.grpc")
    async with shared_front(monkeypatch) as (front, port), worker(slower, tmp_path / "a"):
        first = front.process
        assert first is not None
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        answer = await answer_from_a_new_front(
            port,
            "no worker serves through a new front",
            # what the supervisor's watch loop does every half second
            each_try=front.restart_if_gone,
        )
        assert list(answer.outputs[0].contents.fp64_contents) == [2.0]
        assert front.process is not first and front.process.poll() is None
        assert "the gRPC front exited; starting it again" in caplog.messages
        assert "the gRPC front's socket closed; connecting again" in caplog.messages
        assert "gRPC front serving again" in caplog.messages


async def test_without_a_writable_temporary_directory_the_socket_has_an_abstract_name(
    slower: Artifact, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /proc takes no new directory, not even root's: as a read-only container without /tmp.
    monkeypatch.setattr(tempfile, "tempdir", "/proc")
    async with (
        shared_front(monkeypatch) as (front, port),
        worker(slower, tmp_path / "a"),
        aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        assert front.directory is None and front.path.startswith("@mlmodel-grpc-front-")
        answer = await Client(channel)("ModelInfer", SLOW_REQUEST)
        assert list(answer.outputs[0].contents.fp64_contents) == [2.0]


async def test_the_front_stops_when_its_supervisor_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    async with shared_front(monkeypatch) as (front, _):
        assert front.process is not None and front.process.stdin is not None
        front.process.stdin.close()  # what the kernel does to a supervisor's pipe when it dies
        try:
            code = await asyncio.to_thread(front.process.wait, 10)
        except subprocess.TimeoutExpired:
            pytest.fail("the front still runs with its supervisor gone")
        assert code == 0
