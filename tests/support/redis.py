"""A real Redis server for the tests (Debian's ``redis-server``), started and stopped by pytest, with
the faults an outage test needs: stopped (connections refused), paused (SIGSTOP: connections hang)."""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.ports import free_port

STARTUP_TIMEOUT_SECONDS = 10.0


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError(
            "redis-server not found: run .ci/system-packages.sh (Debian package 'redis-server')"
        )
    return path


class RedisServer:
    """One throwaway Redis on a loopback port, with a password and no persistence. ``stop()`` and
    ``start()`` keep the port, so a client's URL stays right across an outage."""

    def __init__(self) -> None:
        self.binary = redis_server_binary()
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.folder = Path(tempfile.mkdtemp(prefix="mlmodel-redis-"))
        self.log_file = self.folder / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--requirepass", self.password,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.folder),
                "--logfile", str(self.log_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.02)

    def answers(self) -> bool:
        """Whether the server answers an authenticated PING."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                reply = b""
                while b"PONG" not in reply:
                    chunk = sock.recv(64)
                    if not chunk:
                        return False
                    reply += chunk
                return True
        except OSError:
            return False

    def command(self, *args: str) -> str:
        """One command through redis-cli, its reply as text."""
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), "--no-auth-warning", "-a", self.password, *args],
            check=True, capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip

    def stop(self) -> None:
        """Kill the server: new connections are refused, open ones reset."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused server must be able to die
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections open and requests are sent, no answer comes."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh, running Redis server for one test (it starts in milliseconds)."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.remove()
