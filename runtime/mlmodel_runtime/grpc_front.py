"""The worker's end of the gRPC front (``mlmodel-grpc-front``, runtime/grpcfront): a Go process that
terminates gRPC's HTTP/2 on the gRPC port and passes each call, still serialized, over a Unix socket
to the worker that started it. The worker reads calls from that socket on its event loop, serves
them with the same InferenceService as grpc.aio would, and writes the answers back.

Frames on the socket, both ways: u32 length of the rest, u32 call id, then (integers big-endian,
strings u16-length-prefixed, metadata values u32-length-prefixed):

- front to worker: u8 kind; 0 listening (u16 port), 1 call (method path, peer address, u16 count
  of metadata pairs, the pairs, the message), 2 cancel (the caller went away).
- worker to front: u8 gRPC status code; 0 is followed by the response message, any other by the
  status details (u32-prefixed) and the trailing metadata (u16 count, then pairs). Call id 0 (no
  call has it) gives the worker's state instead of a status: 0 stopping (no new calls; it still
  answers those it has), 1 ready, 2 not ready. A worker starts not ready.

A lone worker starts a front of its own (GrpcFront) on a socket pair; the workers of a supervisor
connect to the one front it started (FrontLink; shared_front.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from mlmodel_runtime.grpc_server import CallFailed, InferenceService
from mlmodel_runtime.shared_front import RESTART_DELAY_SECONDS, socket_address

logger = logging.getLogger("mlmodel_runtime.grpc")

LISTENING, CALL, CANCEL = 0, 1, 2
_HEAD = struct.Struct(">IIB")  # length, call id, kind or status code
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
START_SECONDS = 10.0
# Worker to front, call id 0: the worker's state (a shared front sends calls to ready workers).
LEAVING, READY, NOT_READY = (_HEAD.pack(5, 0, state) for state in (0, 1, 2))
READINESS_POLL_SECONDS = 0.1


def _string(frame: bytes, at: int) -> tuple[str, int]:
    (size,) = _U16.unpack_from(frame, at)
    at += 2
    return frame[at : at + size].decode("latin-1"), at + size


def decode_call(frame: bytes) -> tuple[str, str | None, dict[str, str], bytes]:
    """Method path, peer address, metadata and message of a call frame's payload (after the kind)."""
    method, at = _string(frame, 0)
    peer, at = _string(frame, at)
    (pairs,) = _U16.unpack_from(frame, at)
    at += 2
    metadata: dict[str, str] = {}
    for _ in range(pairs):
        key, at = _string(frame, at)
        (size,) = _U32.unpack_from(frame, at)
        at += 4
        metadata[key] = frame[at : at + size].decode("latin-1")
        at += size
    return method, peer or None, metadata, frame[at:]


def encode_answer(call_id: int, body: bytes) -> bytes:
    return _HEAD.pack(5 + len(body), call_id, 0) + body


def encode_failure(call_id: int, failed: CallFailed) -> bytes:
    message = failed.message.encode()
    payload = [_U32.pack(len(message)), message, _U16.pack(len(failed.trailer))]
    for key, value in failed.trailer:
        name, data = key.encode(), value.encode()
        payload += [_U16.pack(len(name)), name, _U32.pack(len(data)), data]
    rest = b"".join(payload)
    return _HEAD.pack(5 + len(rest), call_id, failed.code.value[0]) + rest


async def _again(start: Callable[[], Awaitable[object]], stopping: Callable[[], bool], failed: str) -> None:
    """After a front was lost: ``start`` (a front of the worker's own, or the connection to the
    shared one) every RESTART_DELAY_SECONDS until it works or ``stopping()``; each failure logged
    as ``failed``."""
    while not stopping():
        await asyncio.sleep(RESTART_DELAY_SECONDS)
        try:
            await start()
        except RuntimeError as exc:
            logger.error(failed, extra={"error": str(exc)})
            continue
        logger.info("gRPC front serving again")
        return


class FrontProtocol(asyncio.Protocol):
    """Reads call frames from the front and serves each as a task; answers as they are done."""

    def __init__(self, service: InferenceService) -> None:
        self.service = service
        loop = asyncio.get_running_loop()
        self.listening: asyncio.Future[int] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.answers: list[bytes] = []  # written together on the loop's next turn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        for task in self.tasks.values():
            task.cancel()
        if not self.listening.done():
            self.listening.set_exception(RuntimeError("the gRPC front closed its socket"))
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        at = 0
        while len(buffer) - at >= 4:
            (size,) = _U32.unpack_from(buffer, at)
            if len(buffer) - at - 4 < size:
                break
            _, call_id, kind = _HEAD.unpack_from(buffer, at)
            payload = bytes(buffer[at + 9 : at + 4 + size])
            at += 4 + size
            if kind == CALL:
                self.tasks[call_id] = asyncio.ensure_future(self._serve(call_id, payload))
            elif kind == CANCEL:
                task = self.tasks.pop(call_id, None)
                if task is not None:
                    # On the loop's next turn, after the call's first step: a call and its cancel
                    # read together would otherwise end before it began, neither counted nor logged.
                    asyncio.get_running_loop().call_soon(task.cancel)
            elif kind == LISTENING and not self.listening.done():
                self.listening.set_result(_U16.unpack_from(payload)[0])
        del buffer[:at]

    async def _serve(self, call_id: int, payload: bytes) -> None:
        try:
            method, peer, metadata, body = decode_call(payload)
            try:
                answer = encode_answer(call_id, await self.service.call(method, body, metadata, peer))
            except CallFailed as failed:
                answer = encode_failure(call_id, failed)
        finally:
            self.tasks.pop(call_id, None)
        # A batch of the model answers many calls at once: one write for all of them.
        if not self.answers:
            asyncio.get_running_loop().call_soon(self._flush)
        self.answers.append(answer)

    def _flush(self) -> None:
        answers, self.answers = self.answers, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(answers))


class GrpcFront:
    """A running ``mlmodel-grpc-front`` and its socket; restarted when it dies unasked."""

    def __init__(
        self, binary: Path, host: str, port: int, options: list[str], service: InferenceService
    ) -> None:
        self.binary = binary
        self.host = host  # as in a URL: [::1] for IPv6
        self.port = port  # 0 until the first start has picked one
        self.options = options
        self.service = service
        self.process: asyncio.subprocess.Process | None = None
        self.protocol: FrontProtocol | None = None
        self.stopping = False
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Start the front; the port it listens on. RuntimeError when it cannot listen."""
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = await asyncio.create_subprocess_exec(
                str(self.binary), f"--listen={self.host}:{self.port}", *self.options,
                f"--fd={theirs.fileno()}",
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL,
                # Its own session: a signal to the terminal's or the pod's process group reaches
                # the worker, which stops the front when its calls are done.
                start_new_session=True,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        finally:
            theirs.close()
        _, self.protocol = await loop.connect_accepted_socket(
            lambda: FrontProtocol(self.service), ours
        )
        relay = asyncio.ensure_future(self._relay_log(self.process))
        exited = asyncio.ensure_future(self.process.wait())
        done, _ = await asyncio.wait(
            {self.protocol.listening, exited}, timeout=START_SECONDS,
            return_when=asyncio.FIRST_COMPLETED,
        )  # fmt: skip
        if self.protocol.listening in done and not self.protocol.listening.exception():
            self.port = self.protocol.listening.result()  # a restart listens there again
            self._watch = asyncio.ensure_future(self._restart_when_gone(exited, relay))
            return self.port
        exited.cancel()
        await self._end_process()
        lines = await relay
        reason = lines[-1] if lines else "it did not say why"
        raise RuntimeError(f"the gRPC front did not start: {reason}")

    async def _relay_log(self, process: asyncio.subprocess.Process) -> list[str]:
        """The front's stderr as log records; returns its lines."""
        lines: list[str] = []
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            logger.warning("gRPC front: %s", line)
        return lines

    async def _restart_when_gone(self, exited: asyncio.Future[int], relay: asyncio.Future[list[str]]) -> None:
        code = await exited
        await relay
        if self.stopping:
            return
        logger.error(
            "the gRPC front exited; starting it again",
            extra={"exit_code": code, "retry_in_seconds": RESTART_DELAY_SECONDS},
        )
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()
        await _again(self.start, lambda: self.stopping, "the gRPC front did not start again")

    async def _end_process(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()

    async def stop(self, grace: float | None) -> None:
        """New calls are refused at once; calls in flight have ``grace`` seconds to finish."""
        self.stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), (grace or 0) + 2)
        await self._end_process()
        if self._watch is not None:
            await self._watch


class FrontLink:
    """A worker's connection to the front its supervisor shares among the workers (at ``path``):
    calls arrive on it as from a front of the worker's own. Made again when the front restarts."""

    def __init__(self, path: str, service: InferenceService) -> None:
        self.path = path
        self.service = service
        self.protocol: FrontProtocol | None = None
        self.stopping = False
        self._watch: asyncio.Task[None] | None = None
        self._readiness: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Connect; the port the front serves. RuntimeError when it does not answer in time."""
        port = await self._connect()
        self._watch = asyncio.ensure_future(self._connect_again_when_lost())
        self._readiness = asyncio.ensure_future(self._tell_readiness())
        return port

    async def _tell_readiness(self) -> None:
        """Tell the front when the data plane's readiness changes (and after each connect, since a
        new front takes a worker for not ready), so it sends calls where the model serves."""
        told: tuple[FrontProtocol | None, bool] = (None, False)
        while not self.stopping:
            protocol, ready = self.protocol, self.service.plane.ready
            transport = protocol.transport if protocol is not None else None
            if (protocol, ready) != told and transport is not None and not transport.is_closing():
                transport.write(READY if ready else NOT_READY)
                told = (protocol, ready)
            await asyncio.sleep(READINESS_POLL_SECONDS)

    async def _connect(self) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_SECONDS
        while True:
            transport = None
            try:
                transport, protocol = await loop.create_unix_connection(
                    lambda: FrontProtocol(self.service), socket_address(self.path)
                )
                port = await asyncio.wait_for(asyncio.shield(protocol.listening), START_SECONDS)
            except (TimeoutError, OSError, RuntimeError) as exc:
                if transport is not None:
                    transport.close()
                if loop.time() >= deadline:
                    message = f"the shared gRPC front ({self.path}) did not answer: {exc}"
                    raise RuntimeError(message) from None
                await asyncio.sleep(0.2)
                continue
            self.protocol = protocol
            return port

    async def _connect_again_when_lost(self) -> None:
        while not self.stopping:
            assert self.protocol is not None
            await self.protocol.lost
            if self.stopping:
                return
            logger.error(
                "the gRPC front's socket closed; connecting again",
                extra={"retry_in_seconds": RESTART_DELAY_SECONDS},
            )
            await _again(self._connect, lambda: self.stopping, "the gRPC front did not answer")

    async def stop(self, grace: float | None) -> None:
        """No new calls from now; calls in flight have ``grace`` seconds to finish."""
        self.stopping = True
        protocol = self.protocol
        transport = protocol.transport if protocol is not None else None
        if protocol is not None and transport is not None and not transport.is_closing():
            transport.write(LEAVING)
            if protocol.tasks:
                await asyncio.wait(set(protocol.tasks.values()), timeout=grace or 0)
            await asyncio.sleep(0)  # the answers' write (FrontProtocol._flush) runs first
            transport.close()
        for task in (self._watch, self._readiness):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
