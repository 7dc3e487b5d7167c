"""Helpers for the artifact tests (each test module wraps them in its own fixtures): a real HTTP
artifact server on 127.0.0.1 whose misbehaviour each test chooses, and settings pointing at it."""

from __future__ import annotations

import contextlib
import hashlib
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mlmodel_runtime.settings import RuntimeSettings

ARTIFACT = random.Random(20240601).randbytes(256 * 1024)
ARTIFACT_SHA256 = hashlib.sha256(ARTIFACT).hexdigest()
OTHER_ARTIFACT = random.Random(7).randbytes(256 * 1024)


@dataclass
class Route:
    """How the server answers one path. ``mode``: 'ok', 'slow' (pause mid-body), 'drop' (close
    mid-body), 'unsized' (no Content-Length, body ends at close), 'hold' (pause mid-body until
    ``release`` is set), 'redirect' (302 to ``location``)."""

    body: bytes = ARTIFACT
    status: int = 200
    mode: str = "ok"
    pause_seconds: float = 0.0
    fail_first: int = 0
    fail_status: int = 503
    location: str = ""
    release: threading.Event = field(default_factory=threading.Event)


class ArtifactServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def hits(self, path: str) -> int:
        with self._lock:
            return sum(1 for seen in self.requests if seen.partition("?")[0] == path)

    def record(self, path: str) -> int:
        """Record a request and return how many came before it on the same path."""
        with self._lock:
            before = sum(
                1 for seen in self.requests if seen.partition("?")[0] == path.partition("?")[0]
            )
            self.requests.append(path)
            return before

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for route in self.routes.values():
            route.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


def _handler_for(server: ArtifactServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            before = server.record(self.path)
            route = server.routes.get(self.path.partition("?")[0])
            if route is None:
                self._answer(404, b"no such artifact")
                return
            if before < route.fail_first:
                self._answer(route.fail_status, b"try later")
                return
            if route.mode == "redirect":
                self.send_response(302)
                self.send_header("Location", route.location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if route.status != 200:
                self._answer(route.status, b"nope")
                return
            with contextlib.suppress(OSError):
                self._send_body(route)

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send_body(self, route: Route) -> None:
            half = len(route.body) // 2
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if route.mode != "unsized":
                self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body[:half])
            self.wfile.flush()
            if route.mode == "drop":
                self.close_connection = True
                self.connection.shutdown(2)  # the peer sees the body end early
                return
            if route.mode == "slow":
                server.stopping.wait(route.pause_seconds)
            if route.mode == "hold":
                route.release.wait(timeout=30)
            self.wfile.write(route.body[half:])

    return Handler


@contextlib.contextmanager
def running_artifact_server() -> Iterator[ArtifactServer]:
    server = ArtifactServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def make_settings(cache_dir: Path, uri: str, **overrides: Any) -> RuntimeSettings:
    values: dict[str, Any] = {
        "model_uri": uri,
        "model_sha256": ARTIFACT_SHA256,
        "model_format": "sklearn",
        "cache_dir": cache_dir,
        "artifact_connect_timeout_seconds": 2.0,
        "artifact_read_timeout_seconds": 2.0,
        "artifact_retry_max_seconds": 0.05,
    }
    values.update(overrides)
    return RuntimeSettings(**values)


def cache_listing(cache_dir: Path) -> list[str]:
    """Every name in the cache dir: partial files must never survive a failed fetch."""
    return sorted(path.name for path in cache_dir.iterdir()) if cache_dir.exists() else []


def partial_files(cache_dir: Path) -> list[Path]:
    """The download's partial files that hold something yet (it has started writing)."""
    if not cache_dir.exists():
        return []
    return [path for path in cache_dir.glob(".partial-*") if path.stat().st_size > 0]
