"""A fault-injecting proxy in front of the real API server, for what a real server won't do on cue.

The operator's kubeconfig points at the proxy (plain HTTP on loopback); the proxy forwards each
request to the API server over TLS, streaming the answer (watches included), unless a fault rule
matches it first: an HTTP error (409, 429 with Retry-After, 500...), a delay, or a dropped
connection. Rules are set by the test and count what they hit. Nothing here models the server:
every answer that is not a fault is the server's own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
from aiohttp import web

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclasses.dataclass
class Fault:
    """What to do to the requests that match `method` and the `path` regex (`times` of them;
    None: every one). `status` answers instead of the server; `delay` waits before forwarding;
    `drop` closes the connection without an answer."""

    method: str
    path: str
    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    drop: bool = False
    times: int | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            (self.times is None or self.hits < self.times)
            and self.method in (method, "*")
            and re.search(self.path, path) is not None
        )


@dataclasses.dataclass
class InFlight:
    """How many requests matching `method` and the `path` regex were in the proxy at once."""

    method: str
    path: str
    now: int = 0
    peak: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.method in (method, "*") and re.search(self.path, path) is not None


class FaultProxy:
    def __init__(self, upstream: str, ca_pem: bytes) -> None:
        self.upstream = upstream.rstrip("/")
        self._ssl = ssl.create_default_context(cadata=ca_pem.decode())
        self.faults: list[Fault] = []
        # method, path, status (0: dropped), monotonic time the request arrived
        self.requests: list[tuple[str, str, int, float]] = []
        self.counters: list[InFlight] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    # ------------------------------------------------------------------ test-facing API
    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inject(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def count_in_flight(self, method: str, path: str) -> InFlight:
        """A counter of the matching requests in flight (from arrival to the answer's end)."""
        counter = InFlight(method, path)
        with self._lock:
            self.counters.append(counter)
        return counter

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def seen(self, method: str, path_pattern: str) -> list[tuple[int, float]]:
        """(status, arrival time) of the matching requests so far (status 0: dropped)."""
        with self._lock:
            return [
                (s, t) for m, p, s, t in self.requests if m == method and re.search(path_pattern, p)
            ]

    # ------------------------------------------------------------------ the proxy
    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Open watches end with the proxy: no grace period for them at shutdown.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def _record(self, method: str, path: str, status: int, arrived: float) -> None:
        with self._lock:
            self.requests.append((method, path, status, arrived))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            counting = [c for c in self.counters if c.matches(request.method, request.path_qs)]
            for counter in counting:
                counter.now += 1
                counter.peak = max(counter.peak, counter.now)
        try:
            return await self._forward(request)
        finally:
            with self._lock:
                for counter in counting:
                    counter.now -= 1

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        path = request.path_qs
        arrived = time.monotonic()
        fault = self._fault_for(request.method, path)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.drop:
                self._record(request.method, path, 0, arrived)
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError("dropped by the fault proxy")
            if fault.status is not None:
                self._record(request.method, path, fault.status, arrived)
                headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after else {}
                return web.Response(
                    status=fault.status,
                    headers=headers,
                    content_type="application/json",
                    text=json.dumps(_status_body(fault.status)),
                )
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        body = await request.read()
        async with self._session.request(
            request.method, self.upstream + path, headers=headers, data=body or None
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_HEADERS:
                    response.headers[key] = value
            await response.prepare(request)
            self._record(request.method, path, upstream.status, arrived)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (ConnectionResetError, aiohttp.ClientError):
                pass  # the client went away (a watch it closed, an operator stopped)
            return response


def _status_body(code: int) -> dict[str, Any]:
    reasons = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
    reason = reasons.get(code, "Unknown")
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": f"injected by the fault proxy: {reason}",
        "code": code,
    }


def running_proxy(upstream: str, ca_pem: bytes) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream, ca_pem).start()
    try:
        yield proxy
    finally:
        proxy.stop()
