"""The prediction endpoints served straight from ASGI, ahead of FastAPI's router: same paths, errors
and body limit as the documented routes in app.py, without the per-request routing, dependency
solving and Request objects that cost more than the rest of a small prediction together."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from mlmodel_runtime.auth import BearerTokens
from mlmodel_runtime.dataplane import DataPlane, reserved_bytes
from mlmodel_runtime.errors import BadRequest, MLModelError, PayloadTooLarge

logger = logging.getLogger("mlmodel_runtime.app")

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

# The same paths as the FastAPI routes ({name} matches one path segment, as in Starlette).
V2_INFER = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")
V1_PREDICT = re.compile(r"/v1/models/(?P<name>[^/]+):predict")
_JSON_HEADERS = [(b"content-type", b"application/json")]
INFERENCE_HEADER = "inference-header-content-length"
_TOO_LARGE_ADVICE = "send fewer rows per request, or raise the limit (MLMODEL_MAX_REQUEST_BYTES)"


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
    return orjson.dumps({"error": message})


def binary_headers(json_length: int) -> list[tuple[bytes, bytes]]:
    """Headers of a response in the binary tensor extension's framing: a JSON header of
    ``json_length`` bytes, then the raw output tensors."""
    return [
        (b"content-type", b"application/octet-stream"),
        (INFERENCE_HEADER.encode(), str(json_length).encode()),
    ]


class PredictionEndpoints:
    """ASGI middleware answering POST on the V2 infer and V1 predict paths itself and passing every
    other request on to ``app``. ``routes`` maps the route names (v2_infer, v1_predict) to the
    documented routes, which are put in the scope for the access log and the metrics."""

    def __init__(
        self,
        app: Any,
        *,
        plane: DataPlane,
        tokens: BearerTokens | None,
        limit: int,
        routes: dict[str, Any],
    ) -> None:
        self.app = app
        self.plane = plane
        self.tokens = tokens
        self.limit = limit
        self.v2_route = routes["v2_infer"]
        self.v1_route = routes["v1_predict"]

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        root_path = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        match = V2_INFER.fullmatch(path)
        v2 = match is not None
        if match is None:
            match = V1_PREDICT.fullmatch(path)
            if match is None:
                await self.app(scope, receive, send)
                return
        scope["route"] = self.v2_route if v2 else self.v1_route
        state = scope.get("state") or {}
        headers: list[tuple[bytes, bytes]] = _JSON_HEADERS
        try:
            content_length, authorization, header_length = _header_values(scope["headers"])
            self.plane.check_model(match["name"], match["version"] if v2 else None)
            if self.tokens is not None:
                self.tokens.check(authorization)
            # Admitted (or shed) before the body is read: bounded memory under a flood.
            with self.plane.admitted(reserved_bytes(content_length, self.limit)):
                body = await read_body(content_length, receive, self.limit)
                request_id = state.get("request_id")
                if v2:
                    payload, json_length = await self.plane.infer_v2(
                        body, header_length=header_length, request_id=request_id
                    )
                    if json_length is not None:
                        headers = binary_headers(json_length)
                else:
                    payload = await self.plane.infer_v1(body, request_id=request_id)
            status = 200
        except MLModelError as exc:
            status, payload = exc.status_code, error_body(exc.message)
            headers = _JSON_HEADERS + [
                (key.lower().encode(), value.encode()) for key, value in exc.headers.items()
            ]
        except ClientGone:
            return  # nobody to answer
        except Exception as exc:
            logger.error("unhandled error", exc_info=exc, extra={"url.path": scope["path"]})
            status, payload = 500, error_body("internal server error; see the server logs")
        headers = [*headers, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _header_values(
    headers: list[tuple[bytes, bytes]],
) -> tuple[str | None, str | None, str | None]:
    """Content-Length, Authorization and Inference-Header-Content-Length, decoded as Starlette
    does (latin-1)."""
    content_length = authorization = header_length = None
    for key, value in headers:
        if key == b"content-length":
            content_length = value.decode("latin-1")
        elif key == b"authorization":
            authorization = value.decode("latin-1")
        elif key == b"inference-header-content-length":
            header_length = value.decode("latin-1")
    return content_length, authorization, header_length
