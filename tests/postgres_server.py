"""A real PostgreSQL server for the tests, from Debian's packages, started and stopped by pytest.

Imported by ``tests/conftest.py`` so every test area can ask for ``postgres_server`` (session wide,
with ``stop()``/``start()`` for outage tests) or ``postgres_url`` (a fresh database per test).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support.ports import free_port
from support.processes import stop_process

SERVER_USER = "postgres"
STARTUP_TIMEOUT_SECONDS = 30.0


def find_server_binaries() -> Path:
    """The newest ``/usr/lib/postgresql/<major>/bin`` holding ``initdb`` and ``postgres``."""
    candidates = [
        Path(path)
        for path in glob.glob("/usr/lib/postgresql/*/bin")
        if Path(path, "initdb").exists() and Path(path, "postgres").exists()
    ]
    if not candidates:
        raise RuntimeError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
            "run .ci/system-packages.sh (Debian package 'postgresql')"
        )
    return max(candidates, key=lambda path: int(path.parent.name.split(".")[0]))


class PostgresServer:
    """One throwaway cluster: ``initdb`` into a temp dir, ``postgres`` on a loopback port."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_server_binaries()
        self.user = "postgres"
        self.password = secrets.token_hex(12)
        self.port = free_port()
        self.base_dir = Path(tempfile.mkdtemp(prefix="mlmodel-pg-"))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "socket"
        self.log_file = self.base_dir / "server.log"
        self._process: subprocess.Popen | None = None
        # initdb refuses to run as root: run the server as Debian's postgres user then.
        self._run_as = SERVER_USER if os.geteuid() == 0 else None
        if self._run_as:
            account = pwd.getpwnam(self._run_as)
            os.chown(self.base_dir, account.pw_uid, account.pw_gid)
        self.socket_dir.mkdir()
        if self._run_as:
            os.chown(self.socket_dir, account.pw_uid, account.pw_gid)

    # --- lifecycle ---------------------------------------------------------------------------
    def init(self) -> None:
        password_file = self.base_dir / "pwfile"
        password_file.write_text(self.password + "\n")
        if self._run_as:
            account = pwd.getpwnam(self._run_as)
            os.chown(password_file, account.pw_uid, account.pw_gid)
        subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                f"--pwfile={password_file}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            user=self._run_as,
            cwd=self.base_dir,
        )
        password_file.unlink()

    def start(self) -> None:
        if self.running:
            return
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child process
        self._process = subprocess.Popen(
            [
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-k",
                str(self.socket_dir),
                "-c",
                "listen_addresses=127.0.0.1",
                # Test data is disposable: trade durability for speed on a shared 2-core box.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=50",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=self._run_as,
            cwd=self.base_dir,
        )
        log.close()
        self._wait_until_accepting()

    def stop(self) -> None:
        """Fast shutdown (SIGINT): clients are disconnected, like a database outage."""
        if self._process is None:
            return
        stop_process(self._process, signal.SIGINT, 30)
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """Stop the server for the body of the block and always start it again afterwards."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # --- databases ---------------------------------------------------------------------------
    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        import psycopg2

        name = name or f"test_{secrets.token_hex(6)}"
        connection = psycopg2.connect(self.url(), connect_timeout=10)
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.url(name)

    def _wait_until_accepting(self) -> None:
        import psycopg2

        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            if self._process is not None and self._process.poll() is not None:
                log_tail = self.log_file.read_text()[-2000:]
                raise RuntimeError(f"postgres exited with {self._process.returncode}: {log_tail}")
            try:
                psycopg2.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres did not start: {self.log_file.read_text()[-2000:]}"
                    )
                time.sleep(0.1)


def start_postgres_server() -> PostgresServer:
    server = PostgresServer()
    try:
        server.init()
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres_server()
    try:
        yield server
    finally:
        server.destroy()


def create_database_at(server_url: str) -> str:
    """Make a fresh database on an external server (CI's service container); return its URL."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg2

    name = f"test_{secrets.token_hex(6)}"
    connection = psycopg2.connect(server_url, connect_timeout=10)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database.

    On the session's own server (started again if a test left it down), or, when
    MLMODEL_TEST_DATABASE_URL names one (the PostgreSQL service container in GitHub Actions),
    on that server. Outage tests use ``postgres_server`` directly: they must stop the server.
    """
    external = os.environ.get("MLMODEL_TEST_DATABASE_URL")
    if external:
        return create_database_at(external)
    server: PostgresServer = request.getfixturevalue("postgres_server")
    server.start()
    return server.create_database()
