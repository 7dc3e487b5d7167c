"""Pure ASGI middleware for every HTTP request: request id (X-Request-ID in and out), the access-log
line and the request metrics, at a fraction of the cost of a BaseHTTPMiddleware."""

from __future__ import annotations

import os
import time
from typing import Any

from mlmodel_runtime.logs import AccessLog
from mlmodel_runtime.metrics import RuntimeMetrics

REQUEST_ID_HEADER = b"x-request-id"
MAX_REQUEST_ID_LENGTH = 128


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for key, value in headers:
        if key == REQUEST_ID_HEADER:
            if 0 < len(value) <= MAX_REQUEST_ID_LENGTH and value.isascii():
                return value.decode()
            break
    return os.urandom(16).hex()  # 32 hex digits like uuid4().hex, at a third of the cost


class ObservabilityMiddleware:
    def __init__(self, app: Any, *, metrics: RuntimeMetrics, access_log: AccessLog | None) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter_ns()
        request_id = _request_id(scope["headers"])
        scope.setdefault("state", {})["request_id"] = request_id
        encoded_id = request_id.encode()
        status = 500

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, encoded_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration_ns = time.perf_counter_ns() - started
            route = scope.get("route")
            endpoint = getattr(route, "name", None) or "other"
            self.metrics.observe_request(endpoint, status, duration_ns / 1e9)
            if self.access_log is not None:
                client = scope.get("client")
                self.access_log.log(
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ns=duration_ns,
                    request_id=request_id,
                    client=client[0] if client else None,
                )
