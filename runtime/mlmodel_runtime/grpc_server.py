"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``) on a port of its own,
served on the HTTP server's event loop: the same data plane (model, batching, admission limits,
statistics), bearer tokens, metrics and access log as the HTTP routes. HTTP/2 is terminated by the
gRPC front (grpc_front.py) where its binary is there, else by grpc.aio servers in this process."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from grpc import aio

from mlmodel_runtime import codec
from mlmodel_runtime.access import accepted_request_id
from mlmodel_runtime.auth import BearerTokens
from mlmodel_runtime.binary import decode_raw, encode_raw
from mlmodel_runtime.dataplane import DataPlane
from mlmodel_runtime.datatypes import CONTENTS_FIELDS
from mlmodel_runtime.errors import BadRequest, MLModelError
from mlmodel_runtime.logs import AccessLog
from mlmodel_runtime.model import Outputs, Signature
from mlmodel_runtime.protocol import open_inference_pb2 as pb
from mlmodel_runtime.settings import RuntimeSettings
from mlmodel_runtime.shared_front import SOCKET_ENV, find_front, front_options

if TYPE_CHECKING:
    from mlmodel_runtime.grpc_front import FrontLink, GrpcFront

logger = logging.getLogger("mlmodel_runtime.grpc")

SERVICE = "inference.GRPCInferenceService"

# The HTTP status each error class carries, as the gRPC status a client expects for it.
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}

Handler = Callable[[bytes, dict[str, str], str], Awaitable[bytes]]


# --- messages <-> the data plane's requests ------------------------------------------------------


def decode_infer_request(message: pb.ModelInferRequest, signature: Signature) -> codec.DecodedRequest:
    """The model's rows from a ModelInferRequest with typed contents or raw_input_contents."""
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs: give "
            "one per input, in the order of inputs"
        )
    if not message.inputs:
        raise BadRequest("the request has no inputs: send at least one")
    tensors = []
    for index, item in enumerate(message.inputs):
        datatype, shape = codec.checked_tensor(item.name, item.datatype, list(item.shape))
        where = f'input "{item.name}"'
        data: list[Any] | np.ndarray
        if raw:
            if item.HasField("contents"):
                raise BadRequest(
                    f"{where}: give its values in contents or in raw_input_contents, not both"
                )
            data = decode_raw(where, datatype, shape, raw[index])
        else:
            field = CONTENTS_FIELDS.get(datatype)
            if field is None:
                raise BadRequest(f"{where}: {datatype} values travel in raw_input_contents only")
            values = getattr(item.contents, field)
            if not values and 0 not in shape:
                raise BadRequest(
                    f"{where}: datatype {datatype} takes its values in contents.{field}, which is empty"
                )
            data = _texts(where, values) if datatype == "BYTES" else np.asarray(values)
        tensors.append(codec.Tensor(item.name, datatype, shape, data))
    return codec.request_from_tensors(
        tensors,
        signature,
        id=message.id or None,
        outputs=codec.check_output_names([output.name for output in message.outputs], signature),
    )


def _texts(where: str, values: Sequence[bytes]) -> list[str]:
    try:
        return [value.decode() for value in values]
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{where}: a BYTES element is not valid UTF-8 ({exc.reason})") from None


def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    request: codec.DecodedRequest,
    outputs: Outputs,
    signature: Signature,
    raw: bool,
) -> bytes:
    """A serialized ModelInferResponse: raw_output_contents when the request sent raw inputs (as
    Triton answers), typed contents otherwise."""
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request.id or ""
    )
    for spec, values in codec.selected_outputs(request, outputs, signature):
        tensor = response.outputs.add(name=spec.name, datatype=spec.datatype, shape=values.shape)
        field = CONTENTS_FIELDS.get(spec.datatype)
        if raw or field is None:
            response.raw_output_contents.append(encode_raw(spec.datatype, values))
        elif spec.datatype == "BYTES":
            tensor.contents.bytes_contents.extend(
                value if isinstance(value, bytes) else str(value).encode()
                for value in values.ravel().tolist()
            )
        else:
            getattr(tensor.contents, field).extend(values.ravel().tolist())
    return response.SerializeToString()


# --- the service -----------------------------------------------------------------------------------


class CallFailed(Exception):
    """A call's answer when it is not a message: its gRPC status, details and trailing metadata."""

    def __init__(
        self, code: grpc.StatusCode, message: str, trailer: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailer = trailer


Call = Callable[[bytes, dict[str, str], str | None], Awaitable[bytes]]


class InferenceService:
    """The handlers of inference.GRPCInferenceService, whatever carries the calls (grpc.aio, or the
    gRPC front): each takes the serialized request, its metadata and the caller's address, and
    returns the serialized response or raises CallFailed. ModelInfer is admitted (or shed) before
    anything is parsed, as the HTTP routes do."""

    def __init__(
        self, plane: DataPlane, *, tokens: BearerTokens | None, access_log: AccessLog | None
    ) -> None:
        self.plane = plane
        self.tokens = tokens
        self.access_log = access_log
        handlers: dict[str, Handler] = {
            "ServerLive": self.server_live,
            "ServerReady": self.server_ready,
            "ModelReady": self.model_ready,
            "ServerMetadata": self.server_metadata,
            "ModelMetadata": self.model_metadata,
            "ModelInfer": self.model_infer,
        }
        self.calls: dict[str, Call] = {
            f"/{SERVICE}/{name}": self._observed(name, handler) for name, handler in handlers.items()
        }

    async def call(
        self, path: str, body: bytes, metadata: dict[str, str], peer: str | None
    ) -> bytes:
        """Serve the call to ``path`` (``/inference.GRPCInferenceService/ModelInfer``)."""
        call = self.calls.get(path)
        if call is None:
            raise CallFailed(grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {path}")
        return await call(body, metadata, peer)

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        """The service for a grpc.aio server."""

        def served(call: Call) -> Callable[[bytes, aio.ServicerContext], Awaitable[bytes]]:
            async def handler(body: bytes, context: aio.ServicerContext) -> bytes:
                metadata = {item[0]: item[1] for item in context.invocation_metadata() or ()}
                try:
                    return await call(body, metadata, _peer_address(context.peer()))
                except CallFailed as failed:
                    await context.abort(failed.code, failed.message, failed.trailer)
                    raise  # unreachable: abort raises

            return handler

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                path.rsplit("/", 1)[1]: grpc.unary_unary_rpc_method_handler(served(call))
                for path, call in self.calls.items()
            },
        )

    def _observed(self, method: str, handler: Handler) -> Call:
        """``handler`` with the request id, error mapping, request metrics and access-log line."""
        path = f"/{SERVICE}/{method}"
        endpoint = "grpc_" + "".join(f"_{c.lower()}" if c.isupper() else c for c in method)[1:]
        metrics = self.plane.metrics

        async def call(body: bytes, metadata: dict[str, str], peer: str | None) -> bytes:
            started = time.perf_counter_ns()
            request_id = accepted_request_id(metadata.get("x-request-id"))
            observed = False

            def observe(status: int) -> None:
                # Before the answer leaves, as for a success: a client that has its error back
                # finds the call already counted and logged.
                nonlocal observed
                observed = True
                duration_ns = time.perf_counter_ns() - started
                metrics.observe_request(endpoint, status, duration_ns / 1e9)
                if self.access_log is not None:
                    self.access_log.log(
                        method="POST",
                        path=path,
                        status=status,
                        duration_ns=duration_ns,
                        request_id=request_id,
                        client=peer,
                    )

            try:
                result = await handler(body, metadata, request_id)
                observe(200)
                return result
            except MLModelError as exc:
                observe(exc.status_code)
                trailer = tuple((key.lower(), value) for key, value in exc.headers.items())
                raise CallFailed(
                    STATUS_CODES.get(exc.status_code, grpc.StatusCode.UNKNOWN), exc.message, trailer
                ) from None
            except Exception as exc:
                logger.error("unhandled error", exc_info=exc, extra={"url.path": path})
                observe(500)
                raise CallFailed(
                    grpc.StatusCode.INTERNAL, "internal server error; see the server logs"
                ) from None
            finally:
                if not observed:  # cancelled
                    observe(500)

        return call

    async def server_live(self, request: bytes, metadata: dict[str, str], request_id: str) -> bytes:
        return pb.ServerLiveResponse(live=True).SerializeToString()

    async def server_ready(self, request: bytes, metadata: dict[str, str], request_id: str) -> bytes:
        return pb.ServerReadyResponse(ready=self.plane.ready).SerializeToString()

    async def model_ready(self, body: bytes, metadata: dict[str, str], request_id: str) -> bytes:
        request = _parsed(pb.ModelReadyRequest, body)
        self.plane.check_model(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=self.plane.ready).SerializeToString()

    async def server_metadata(
        self, request: bytes, metadata: dict[str, str], request_id: str
    ) -> bytes:
        return pb.ServerMetadataResponse(**self.plane.server_metadata()).SerializeToString()

    async def model_metadata(self, body: bytes, metadata: dict[str, str], request_id: str) -> bytes:
        request = _parsed(pb.ModelMetadataRequest, body)
        self.plane.check_model(request.name, request.version or None)
        return pb.ModelMetadataResponse(**self.plane.model_metadata()).SerializeToString()

    async def model_infer(self, body: bytes, metadata: dict[str, str], request_id: str) -> bytes:
        if self.tokens is not None:
            self.tokens.check(metadata.get("authorization"))
        plane = self.plane
        with plane.admitted(len(body)):
            message = _parsed(pb.ModelInferRequest, body)
            plane.check_model(message.model_name, message.model_version or None)
            raw = bool(message.raw_input_contents)
            return await plane.infer(
                lambda signature: decode_infer_request(message, signature),
                lambda request, outputs, signature: encode_infer_response(
                    model_name=plane.name,
                    model_version=plane.version,
                    request=request,
                    outputs=outputs,
                    signature=signature,
                    raw=raw,
                ),
                request_id,
                metadata.get("cache-control"),
            )


def _parsed(message_type: Any, body: bytes) -> Any:
    try:
        return message_type.FromString(body)
    except DecodeError as exc:
        raise BadRequest(
            f"the request is not a valid {message_type.DESCRIPTOR.name}: {exc}"
        ) from None


def _peer_address(peer: str | None) -> str | None:
    """127.0.0.1 from grpc's ``ipv4:127.0.0.1:53122`` (``ipv6:[::1]:53122``)."""
    if not peer:
        return None
    address = peer.split(":", 1)[-1].rsplit(":", 1)[0]
    return address.strip("[]")


# --- the server ------------------------------------------------------------------------------------


class GrpcServers:
    """The gRPC servers of one worker, all on one port; stopped together."""

    def __init__(self, servers: Sequence[aio.Server]) -> None:
        self.servers = list(servers)

    async def stop(self, grace: float | None) -> None:
        await asyncio.gather(*(server.stop(grace) for server in self.servers))


def _check_port_free(host: str, port: int) -> None:
    """Raise RuntimeError when something listens on ``host:port``. Our own servers share the port
    through SO_REUSEPORT, which would also let them share it with a stranger's socket that set it:
    a plain bind (SO_REUSEADDR only, as for any listener) says whether anyone is there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise RuntimeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


async def start_grpc_server(
    settings: RuntimeSettings,
    plane: DataPlane,
    *,
    tokens: BearerTokens | None,
    access_log: AccessLog | None,
    reuse_port: bool = False,
    port: int | None = None,
) -> tuple[GrpcServers | GrpcFront | FrontLink, int]:
    """Serve gRPC on ``settings.host`` at ``port`` (default ``settings.grpc_port``; 0 picks one);
    returns what serves it (``.stop(grace)``) and the port bound. ``reuse_port``: the other workers
    share the port too; otherwise a port in use is an error.

    Through the supervisor's shared gRPC front when this is one of its workers, else through a
    front of this worker's own when its binary is there (``settings.grpc_front``), else through
    ``settings.grpc_acceptors`` grpc.aio servers."""
    service = InferenceService(plane, tokens=tokens, access_log=access_log)
    from mlmodel_runtime.grpc_front import FrontLink, GrpcFront  # its module needs this one

    shared = os.environ.get(SOCKET_ENV)
    if shared:  # a worker of a supervisor that started one front for all its workers
        link = FrontLink(shared, service)
        return link, await link.start()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    bound = settings.grpc_port if port is None else port
    if not reuse_port and bound:
        _check_port_free(settings.host, bound)
    binary = find_front(settings.grpc_front)
    if binary is not None:
        front = GrpcFront(binary, host, bound, front_options(settings), service)
        return front, await front.start()
    return await _start_aio_servers(settings, service, host, bound)


async def _start_aio_servers(
    settings: RuntimeSettings, service: InferenceService, host: str, port: int
) -> tuple[GrpcServers, int]:
    """``settings.grpc_acceptors`` grpc.aio servers on ``host:port``. Several, because grpc.aio's
    server takes its new calls one at a time (it asks the core for the next call only once the last
    one has reached the event loop): under load one server hands calls to the batcher two or three
    at once where HTTP hands over a dozen, and the model runs on small batches. Each server takes
    calls from the connections the kernel gives it."""
    handler = service.rpc_handler()
    servers: list[aio.Server] = []
    try:
        for _ in range(settings.grpc_acceptors):
            server = aio.server(
                options=[
                    ("grpc.so_reuseport", 1),
                    # The HTTP body limit: larger messages are refused by grpc (RESOURCE_EXHAUSTED)
                    # unread.
                    ("grpc.max_receive_message_length", settings.max_request_bytes),
                    ("grpc.max_send_message_length", -1),
                ]
            )
            server.add_generic_rpc_handlers((handler,))
            # raises RuntimeError when it cannot bind; port 0: the first server picks one
            port = server.add_insecure_port(f"{host}:{port}")
            await server.start()
            servers.append(server)
    except BaseException:
        await GrpcServers(servers).stop(None)
        raise
    return GrpcServers(servers), port
