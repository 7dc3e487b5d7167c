"""The gRPC front's binary, and the one front the supervisor of several workers starts for all of
them (``mlmodel serve --workers N``). The front listens on the gRPC port the supervisor holds and
on a Unix socket the workers connect to (the path in ``MLMODEL_GRPC_FRONT_SOCKET``, which the
workers inherit); it hands each call to the worker with the fewest calls unanswered, so the calls
of one gRPC channel (one HTTP/2 connection) use every worker. The supervisor starts the front
again when it exits unasked (same port, same socket: the workers connect again), and stops it
once the workers are done. Light on purpose: the supervisor imports no grpc.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlmodel_runtime.settings import RuntimeSettings

logger = logging.getLogger("mlmodel_runtime.grpc")

BINARY = "mlmodel-grpc-front"
SOCKET_ENV = "MLMODEL_GRPC_FRONT_SOCKET"
RESTART_DELAY_SECONDS = 1.0
WORKER_BACKLOG = 64


def find_front(setting: str) -> Path | None:
    """The front's binary for MLMODEL_GRPC_FRONT: ``auto`` looks beside the Python interpreter
    (a venv's bin/, the image's /opt/venv/bin) and then on PATH; ``off`` is None; anything else
    is the binary's path and must exist."""
    if setting == "off":
        return None
    if setting != "auto":
        path = Path(setting)
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"MLMODEL_GRPC_FRONT={setting}: no executable there")
        return path
    beside = Path(sys.executable).parent / BINARY
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which(BINARY)
    return Path(found) if found else None


def front_options(settings: RuntimeSettings) -> list[str]:
    """The front's flags that settings decide, for a worker's own front and the shared one alike."""
    return [
        f"--max-receive-bytes={settings.max_request_bytes}",
        f"--grace={settings.shutdown_grace_seconds}s",
    ]


def socket_address(path: str) -> str:
    """The workers' socket as bind and connect take it: "@name" is "name" in the abstract namespace."""
    return "\0" + path[1:] if path.startswith("@") else path


def front_procs(workers: int) -> int:
    """GOMAXPROCS for the front of ``workers``: one thread running Go code per four workers, at most
    the cores. The front's part of a one-text call's CPU measured 12-20% (37-70 of 270-380 µs,
    `benchmarks/grpc_vs_rest.py --workers 2`, 2026-12-04), and with two workers one thread cost
    less per call than two (37-44 against 54 µs on one connection)."""
    return max(1, min(math.ceil(workers / 4), os.cpu_count() or 1))


class SharedFront:
    """The supervisor's front: ``grpc_socket`` is the gRPC port's listening socket, ``options``
    the front's flags, ``procs`` its GOMAXPROCS unless the environment sets one."""

    def __init__(
        self, binary: Path, grpc_socket: socket.socket, options: list[str], procs: int
    ) -> None:
        self.binary = binary
        self.grpc_socket = grpc_socket
        self.options = options
        self.procs = procs
        self.workers_socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.directory: str | None = None
        try:
            self.directory = tempfile.mkdtemp(prefix="mlmodel-grpc-")  # 0700: only this user
            self.path = os.path.join(self.directory, "front.sock")
        except OSError as exc:
            # No writable temporary directory (a read-only container without a /tmp volume): a
            # name in Linux's abstract namespace, which any process in this network namespace
            # (a pod's containers) could reach; written with "@" for "\0", as ss(8) shows it.
            self.path = f"@mlmodel-grpc-front-{os.getpid()}-{secrets.token_hex(8)}"
            logger.warning(
                "no writable temporary directory: the workers reach the gRPC front by an "
                "abstract socket name",
                extra={"error": str(exc), "hint": "give the runtime a writable TMPDIR"},
            )
        self.workers_socket.bind(socket_address(self.path))
        self.workers_socket.listen(WORKER_BACKLOG)
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> int:
        """Start the front; its process id."""
        listen_fd, workers_fd = self.grpc_socket.fileno(), self.workers_socket.fileno()
        env = dict(os.environ)
        env.setdefault("GOMAXPROCS", str(self.procs))
        self.process = subprocess.Popen(
            [
                str(self.binary),
                f"--listen-fd={listen_fd}",
                f"--workers-fd={workers_fd}",
                *self.options,
            ],
            pass_fds=(listen_fd, workers_fd),
            env=env,
            # Its standard input is a pipe only the supervisor holds: when the supervisor is gone,
            # however it went, the front reads its end and stops, and frees the port.
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Its own session: a terminal's Ctrl-C reaches the supervisor, which stops the front
            # after the workers.
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        threading.Thread(target=self._relay_log, args=(self.process,), daemon=True).start()
        return self.process.pid

    def _relay_log(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            logger.warning("gRPC front: %s", raw.decode(errors="replace").rstrip())

    def restart_if_gone(self) -> None:
        """Called from the supervisor's watch loop: start the front again when it has exited."""
        if self.process is None or self.process.poll() is None:
            return
        if time.monotonic() - self.started_at < RESTART_DELAY_SECONDS:
            return
        logger.error(
            "the gRPC front exited; starting it again",
            extra={"exit_code": self.process.returncode, "retry_in_seconds": RESTART_DELAY_SECONDS},
        )
        self._close_pipes()
        self.start()

    def stop(self, grace: float) -> None:
        """Calls still in flight get ``grace`` seconds; then the front is killed."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace + 2)
            except subprocess.TimeoutExpired:
                logger.error(
                    "the gRPC front did not stop in time, killing it", extra={"pid": process.pid}
                )
                process.kill()
                process.wait()
        self._close_pipes()
        self.workers_socket.close()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _close_pipes(self) -> None:
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.close()
