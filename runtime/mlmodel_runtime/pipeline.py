"""The one prediction pipeline of the HTTP API: find the model, authorise, admit (or shed), read the
body, infer, render errors. Served straight from ASGI ahead of FastAPI's router, without the
per-request routing, dependency solving and Request objects that cost more than the rest of a small
prediction; the documented FastAPI routes (app.py) hand the requests they get to it as well."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from mlmodel_runtime.auth import BearerTokens
from mlmodel_runtime.dataplane import DataPlane, reserved_bytes
from mlmodel_runtime.errors import BadRequest, MLModelError, PayloadTooLarge

logger = logging.getLogger("mlmodel_runtime.app")

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
INFERENCE_HEADER = "inference-header-content-length"
REVISION_HEADER = b"x-mlmodel-revision"
_TOO_LARGE_ADVICE = "send fewer rows per request, or raise the limit (MLMODEL_MAX_REQUEST_BYTES)"


@dataclass(frozen=True)
class Endpoint:
    """A prediction endpoint: the name of the FastAPI route documenting it (the ``endpoint`` label
    of the metrics) and its path ({name} matches one path segment, as in Starlette)."""

    route_name: str
    path: re.Pattern[str]
    v2: bool


V2_INFER = Endpoint(
    "v2_infer",
    re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer"),
    v2=True,
)
V1_PREDICT = Endpoint("v1_predict", re.compile(r"/v1/models/(?P<name>[^/]+):predict"), v2=False)
ENDPOINTS = (V2_INFER, V1_PREDICT)


class ClientGone(Exception):
    """The client closed the connection before its request body arrived."""


async def read_body(content_length: str | None, receive: Receive, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes: from
    Content-Length before reading anything, else while streaming."""
    if content_length is not None:
        try:
            size = int(content_length)
        except ValueError:
            raise BadRequest(f"Content-Length {content_length!r} is not a number") from None
        if size > limit:
            raise PayloadTooLarge(
                f"request body is {size} bytes, over the limit of {limit} bytes: {_TOO_LARGE_ADVICE}"
            )
    message = await receive()
    if message["type"] != "http.request":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False) and len(body) <= limit:
        return body  # the common case: the whole body in one message
    chunks = [body]
    received = len(body)
    while True:
        if received > limit:
            raise PayloadTooLarge(
                f"request body is over the limit of {limit} bytes: {_TOO_LARGE_ADVICE}"
            )
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        received += len(chunk)
        chunks.append(chunk)


def error_body(message: str) -> bytes:
    """The body of every error response: ``{"error": "..."}``."""
    return orjson.dumps({"error": message})


def error_headers(exc: MLModelError) -> Headers:
    return JSON_HEADERS + [
        (key.lower().encode(), value.encode()) for key, value in exc.headers.items()
    ]


def binary_headers(json_length: int) -> Headers:
    """Headers of a response in the binary tensor extension's framing: a JSON header of
    ``json_length`` bytes, then the raw output tensors."""
    return [
        (b"content-type", b"application/octet-stream"),
        (INFERENCE_HEADER.encode(), str(json_length).encode()),
    ]


class PredictionPipeline:
    """Serves one prediction request on ASGI ``receive``/``send``, whoever routed it."""

    def __init__(
        self, plane: DataPlane, *, tokens: BearerTokens | None, limit: int, revision: str = "stable"
    ) -> None:
        self.plane = plane
        self.tokens = tokens
        self.limit = limit
        # Which revision answered (a canary's pods say so), on every prediction response.
        self.revision_header = (REVISION_HEADER, revision.encode("latin-1"))

    async def serve(
        self,
        endpoint: Endpoint,
        name: str,
        version: str | None,
        scope: MutableMapping[str, Any],
        receive: Receive,
        send: Send,
    ) -> None:
        plane = self.plane
        headers = JSON_HEADERS
        try:
            content_length, authorization, header_length, cache_control = _header_values(
                scope["headers"]
            )
            plane.check_model(name, version)
            if self.tokens is not None:
                self.tokens.check(authorization)
            # Admitted (or shed) before the body is read: bounded memory under a flood.
            with plane.admitted(reserved_bytes(content_length, self.limit)):
                body = await read_body(content_length, receive, self.limit)
                binary = header_length is not None
                request_id = (scope.get("state") or {}).get("request_id")
                if endpoint.v2:
                    payload, json_length = await plane.infer_v2(
                        body,
                        header_length=header_length,
                        request_id=request_id,
                        cache_control=cache_control,
                    )
                    if json_length is not None:
                        headers = binary_headers(json_length)
                        binary = True
                else:
                    payload = await plane.infer_v1(
                        body, request_id=request_id, cache_control=cache_control
                    )
            status = 200
        except MLModelError as exc:
            status, payload, headers = exc.status_code, error_body(exc.message), error_headers(exc)
        except ClientGone:
            return  # nobody to answer
        except Exception as exc:
            logger.error("unhandled error", exc_info=exc, extra={"url.path": scope["path"]})
            status, payload = 500, error_body("internal server error; see the server logs")
        headers = [*headers, self.revision_header, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        if plane.shadow is not None and status == 200:
            # After the client has its answer; binary tensors are not compared.
            if binary:
                plane.shadow.skipped()
            else:
                path, root_path = scope["path"], scope.get("root_path", "")
                if root_path and path.startswith(root_path):
                    path = path[len(root_path) :]
                plane.shadow.mirror(path, body, scope["headers"], payload, v2=endpoint.v2)


class PredictionEndpoints:
    """ASGI middleware: POSTs to a prediction endpoint go straight to the pipeline; every other
    request goes on to ``app``. ``routes`` maps route names to the documented routes, put in the
    scope for the access log and the metrics as the router would."""

    def __init__(self, app: Any, *, pipeline: PredictionPipeline, routes: dict[str, Any]) -> None:
        self.app = app
        self.pipeline = pipeline
        self.routes = {endpoint: routes[endpoint.route_name] for endpoint in ENDPOINTS}

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            root_path = scope.get("root_path", "")
            if root_path and path.startswith(root_path):
                path = path[len(root_path) :]
            for endpoint, route in self.routes.items():
                match = endpoint.path.fullmatch(path)
                if match is not None:
                    scope["route"] = route
                    await self.pipeline.serve(
                        endpoint, match["name"], match["version"] if endpoint.v2 else None,
                        scope, receive, send,
                    )  # fmt: skip
                    return
        await self.app(scope, receive, send)


def _header_values(headers: Headers) -> tuple[str | None, str | None, str | None, str | None]:
    """Content-Length, Authorization, Inference-Header-Content-Length and Cache-Control, decoded
    as Starlette does (latin-1)."""
    content_length = authorization = header_length = cache_control = None
    for key, value in headers:
        if key == b"content-length":
            content_length = value.decode("latin-1")
        elif key == b"authorization":
            authorization = value.decode("latin-1")
        elif key == b"inference-header-content-length":
            header_length = value.decode("latin-1")
        elif key == b"cache-control":
            cache_control = value.decode("latin-1")
    return content_length, authorization, header_length, cache_control
