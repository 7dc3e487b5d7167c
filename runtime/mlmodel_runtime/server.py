"""Run the app under uvicorn (uvloop and httptools when installed), one process or several workers
on one port, with a graceful SIGTERM: not-ready first, requests in flight finish, then exit."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import uvicorn
from mlmodel_cli.terminal import log_format_for
from prometheus_client import multiprocess

from mlmodel_runtime.app import create_app
from mlmodel_runtime.dataplane import DataPlane, build_dataplane
from mlmodel_runtime.logs import base_fields, configure_logging
from mlmodel_runtime.metrics import MULTIPROCESS_DIRECTORY
from mlmodel_runtime.settings import RuntimeSettings
from mlmodel_runtime.shared_front import (
    SOCKET_ENV,
    SharedFront,
    find_front,
    front_options,
    front_procs,
)

logger = logging.getLogger("mlmodel_runtime.server")

# Extra time a worker may take past its own grace period before the supervisor kills it.
SUPERVISOR_SLACK_SECONDS = 5.0
BACKLOG = 2048


class RuntimeServer(uvicorn.Server):
    """uvicorn's server with a drain phase: the first SIGTERM/SIGINT flips readiness to false and
    keeps serving until requests in flight are done (and, for SIGTERM, ``shutdown_drain_seconds``
    have passed so load balancers have stopped routing here), all within ``shutdown_grace_seconds``."""

    def __init__(
        self,
        config: uvicorn.Config,
        dataplane: DataPlane,
        settings: RuntimeSettings,
        *,
        app_state: Any = None,
        grpc_reuse_port: bool = False,
    ) -> None:
        super().__init__(config)
        self.dataplane = dataplane
        self.settings = settings
        self._drain_started: float | None = None
        self._drain_minimum = 0.0
        self._app_state = app_state  # tokens and access log, shared with gRPC
        self._grpc_reuse_port = grpc_reuse_port
        self.grpc_server: Any = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit and self.settings.grpc_port and self._app_state is not None:
            await self._start_grpc()

    async def _start_grpc(self) -> None:
        from mlmodel_runtime.grpc_front import FrontLink, GrpcFront  # grpc only when served
        from mlmodel_runtime.grpc_server import start_grpc_server

        try:
            self.grpc_server, port = await start_grpc_server(
                self.settings,
                self.dataplane,
                tokens=self._app_state.tokens,
                access_log=self._app_state.access_log,
                reuse_port=self._grpc_reuse_port,
            )
        except RuntimeError as exc:
            # Locally a second runtime often meets the first one's default gRPC port; in a pod
            # the port is ours. Either way HTTP keeps serving, and the log says what to change.
            logger.error(
                "gRPC not served: cannot listen on its port, serving HTTP only",
                extra={"grpc_port": self.settings.grpc_port, "error": str(exc),
                       "hint": "set another port with --grpc-port / MLMODEL_GRPC_PORT (0: off)"},
            )  # fmt: skip
            return
        if isinstance(self.grpc_server, GrpcFront):
            carrier: dict[str, Any] = {"grpc_front": str(self.grpc_server.binary)}
        elif isinstance(self.grpc_server, FrontLink):
            carrier = {"grpc_front": "shared", "grpc_front_socket": self.grpc_server.path}
        else:
            carrier = {"grpc_front": "off", "grpc_acceptors": self.settings.grpc_acceptors}
        logger.info(
            "gRPC listening", extra={"host": self.settings.host, "grpc_port": port, **carrier}
        )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.grpc_server is not None:
            # Calls in flight finish within what is left of the grace period; new ones are refused.
            await self.grpc_server.stop(self.config.timeout_graceful_shutdown)
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: set plain attributes only (locks held by the interrupted code could
        # deadlock); logging and metrics happen on the next tick.
        if self._drain_started is None:
            self._drain_started = time.monotonic()
            self._drain_minimum = (
                self.settings.shutdown_drain_seconds if sig == signal.SIGTERM else 0.0
            )
            self.dataplane.shutting_down = True
            return
        self.should_exit = True  # a second signal: stop draining
        if sig == signal.SIGINT:
            self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._drain_started is not None and not self.should_exit:
            self.dataplane.begin_shutdown()
            elapsed = time.monotonic() - self._drain_started
            grace = self.settings.shutdown_grace_seconds
            drained = self.dataplane.in_flight == 0 and elapsed >= min(self._drain_minimum, grace)
            if drained or elapsed >= grace:
                # uvicorn now closes the socket and waits for open connections: what is left of the grace.
                self.config.timeout_graceful_shutdown = max(round(grace - elapsed), 1)
                logger.info(
                    "draining done, stopping",
                    extra={"seconds": round(elapsed, 3), "in_flight": self.dataplane.in_flight},
                )
                self.should_exit = True
        return await super().on_tick(counter)


def _uvicorn_config(app: Any, settings: RuntimeSettings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="auto",  # uvloop when installed
        http="auto",  # httptools when installed
        lifespan="on",
        log_config=None,  # our handler, set up by configure_logging
        access_log=False,  # our access log (one JSON line per request) replaces uvicorn's
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=max(round(settings.shutdown_grace_seconds), 1),
        timeout_keep_alive=15,
        backlog=BACKLOG,
    )


def serve_one(settings: RuntimeSettings, sockets: list[socket.socket] | None = None) -> int:
    """Serve in this process; returns the exit code."""
    # One dict shared by every log line; the data plane adds the digest once the model is loaded.
    fields = base_fields(
        model=settings.model_name, namespace=settings.namespace, pod_name=settings.pod_name
    )
    configure_logging(level=settings.log_level, log_format=settings.log_format, fields=fields)
    dataplane = build_dataplane(settings, log_fields=fields)  # after logging: it may log
    app = create_app(settings, dataplane)
    server = RuntimeServer(
        _uvicorn_config(app, settings),
        dataplane,
        settings,
        app_state=app.state,
        grpc_reuse_port=sockets is not None,  # a worker: gRPC shares the port like HTTP
    )
    server.run(sockets=sockets)
    return 0 if server.started else 1


def _worker(settings: RuntimeSettings, sock: socket.socket | None) -> None:
    raise SystemExit(serve_one(settings, [sock or _reuseport_listener(settings)]))


def _reuseport_listener(settings: RuntimeSettings) -> socket.socket:
    """A listening socket of this worker's own on the shared port.

    With one socket shared by all workers, whichever worker wakes first accepts a whole burst of
    connections, and keep-alive clients then stay on it: measured here, all 8 connections of a
    load test landed on one of two workers in 2 runs out of 3, halving throughput. With
    SO_REUSEPORT the kernel spreads new connections over the workers' sockets.
    """
    sock = _bind_reuseport(settings.host, settings.port)
    sock.listen(BACKLOG)
    return sock


def _bind_reuseport(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def with_log_format(settings: RuntimeSettings) -> RuntimeSettings:
    """``settings`` with the log format decided: as configured (--log-format, MLMODEL_LOG_FORMAT),
    else text on a terminal and JSON lines anywhere else."""
    if "log_format" in settings.model_fields_set:
        return settings
    return settings.model_copy(update={"log_format": log_format_for(sys.stdout)})


def serve(settings: RuntimeSettings) -> int:
    """Serve with ``settings.workers`` processes; with more than one, a small supervisor owns the
    socket, restarts workers that die, and passes SIGTERM on for each worker to drain, and the
    workers share their metrics and statistics (metrics.py) so any of them answers for the server."""
    settings = with_log_format(settings)
    if settings.workers <= 1:
        return serve_one(settings)
    configure_logging(
        level=settings.log_level,
        log_format=settings.log_format,
        fields=base_fields(
            model=settings.model_name, namespace=settings.namespace, pod_name=settings.pod_name
        ),
    )
    with _shared_metrics_directory():
        return _supervise(settings)


@contextmanager
def _shared_metrics_directory() -> Iterator[None]:
    """A fresh directory for the workers' metrics, named in the environment they inherit, removed
    when they are done. Without one (no writable temporary directory) each worker answers for
    itself, as a lone worker does, and the log says so."""
    try:
        directory = tempfile.mkdtemp(prefix="mlmodel-metrics-")
    except OSError as exc:
        logger.error(
            "metrics not shared between workers: each scrape shows one worker's",
            extra={"error": str(exc), "hint": "give the runtime a writable TMPDIR"},
        )  # fmt: skip
        yield
        return
    os.environ[MULTIPROCESS_DIRECTORY] = directory
    try:
        yield
    finally:
        del os.environ[MULTIPROCESS_DIRECTORY]
        shutil.rmtree(directory, ignore_errors=True)


def _supervise(settings: RuntimeSettings) -> int:
    if hasattr(socket, "SO_REUSEPORT"):
        # The supervisor binds first without listening: it claims the port (an error shows here,
        # once) and fixes it when settings say 0; only the workers' listening sockets get
        # connections. The gRPC port likewise: the supervisor's one gRPC front listens on it and
        # hands each call to a worker; without the front's binary each worker's grpc.aio servers
        # bind it with SO_REUSEPORT and the kernel spreads connections over them.
        claim = _bind_reuseport(settings.host, settings.port)
        port = claim.getsockname()[1]
        grpc_claim = _claim_grpc_port(settings)
        update = {"port": port, "grpc_port": grpc_claim.getsockname()[1] if grpc_claim else 0}
        settings = settings.model_copy(update=update)
        try:
            with _shared_grpc_front(settings, grpc_claim) as front:
                return Supervisor(settings, claim, shared=False, front=front).run()
        finally:
            if grpc_claim is not None:
                grpc_claim.close()
    sock = _uvicorn_config("unused", settings).bind_socket()
    return Supervisor(settings, sock, shared=True).run()


def _claim_grpc_port(settings: RuntimeSettings) -> socket.socket | None:
    """The supervisor's hold on the gRPC port for its workers; None (gRPC off) when it is taken."""
    if not settings.grpc_port:
        return None
    try:
        return _bind_reuseport(settings.host, settings.grpc_port)
    except OSError as exc:
        logger.error(
            "gRPC not served: cannot listen on its port, serving HTTP only",
            extra={"grpc_port": settings.grpc_port, "error": str(exc),
                   "hint": "set another port with --grpc-port / MLMODEL_GRPC_PORT (0: off)"},
        )  # fmt: skip
        return None


@contextmanager
def _shared_grpc_front(
    settings: RuntimeSettings, grpc_socket: socket.socket | None
) -> Iterator[SharedFront | None]:
    """The one gRPC front of all the workers, started, its socket named in the environment the
    workers inherit; None where there is none to start (gRPC off, or no binary: each worker then
    serves gRPC itself, and reports a binary that is not there)."""
    try:
        binary = find_front(settings.grpc_front) if grpc_socket is not None else None
    except RuntimeError:
        binary = None
    if grpc_socket is None or binary is None:
        yield None
        return
    grpc_socket.listen(BACKLOG)
    options = front_options(settings)
    front = SharedFront(binary, grpc_socket, options, procs=front_procs(settings.workers))
    pid = front.start()
    logger.info(
        "gRPC front started for the workers",
        extra={"grpc_front": str(binary), "grpc_port": settings.grpc_port, "pid": pid},
    )
    os.environ[SOCKET_ENV] = front.path
    try:
        yield front
    finally:
        del os.environ[SOCKET_ENV]
        front.stop(settings.shutdown_grace_seconds)


class Supervisor:
    """Starts the workers and restarts any that dies, and the shared gRPC front (``front``) when it
    exits. ``shared``: the workers accept from ``sock``; otherwise ``sock`` only holds the port and
    each worker listens on a SO_REUSEPORT socket."""

    def __init__(
        self,
        settings: RuntimeSettings,
        sock: socket.socket,
        *,
        shared: bool,
        front: SharedFront | None = None,
    ) -> None:
        self.settings = settings
        self.sock = sock
        self.shared = shared
        self.front = front  # started again here when it exits; stopped by its owner
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[Any] = []
        self.stopping = threading.Event()
        self.signal_received = signal.SIGTERM

    def _start_worker(self) -> Any:
        process = self.context.Process(
            target=_worker,
            args=(self.settings, self.sock if self.shared else None),
            name="mlmodel-worker",
        )
        process.start()
        return process

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.signal_received = signal.Signals(sig)
        self.stopping.set()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.workers = [self._start_worker() for _ in range(self.settings.workers)]
        logger.info("workers started", extra={"workers": [worker.pid for worker in self.workers]})
        while not self.stopping.wait(0.5):
            if self.front is not None:
                self.front.restart_if_gone()
            for index, worker in enumerate(self.workers):
                if not worker.is_alive() and not self.stopping.is_set():
                    logger.error(
                        "worker died, restarting",
                        extra={"pid": worker.pid, "exit_code": worker.exitcode},
                    )
                    if os.environ.get(MULTIPROCESS_DIRECTORY):
                        # Its gauges (ready, in flight) leave the sums; its counters stay.
                        multiprocess.mark_process_dead(worker.pid)
                    self.workers[index] = self._start_worker()
        for worker in self.workers:
            if worker.is_alive() and worker.pid is not None:
                try:
                    os.kill(worker.pid, self.signal_received)
                except ProcessLookupError:
                    pass
        deadline = (
            time.monotonic() + self.settings.shutdown_grace_seconds + SUPERVISOR_SLACK_SECONDS
        )
        for worker in self.workers:
            worker.join(max(deadline - time.monotonic(), 0.1))
            if worker.is_alive():
                logger.error("worker did not stop in time, killing it", extra={"pid": worker.pid})
                worker.kill()
                worker.join()
        self.sock.close()
        failed = [worker.exitcode for worker in self.workers if worker.exitcode != 0]
        logger.info("stopped", extra={"failed_workers": len(failed)})
        return 0 if not failed else 1
