"""The log format when none is configured: readable text on a terminal (a real pseudo-terminal
here), JSON lines anywhere else (a pipe, as in a container); --log-format and MLMODEL_LOG_FORMAT
still decide when given."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from mlmodel_cli.terminal import log_format_for
from support.ports import free_port
from support.runtime import RUNTIME_TESTS, Models, write_mlmodel

# TextFormatter's lines and the access log's text lines: "2026-12-02 12:00:00,123 INFO    ..."
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(,\d{3})? (DEBUG|INFO|WARNING|ERROR) +\S")


def test_log_format_for_a_tty_a_pipe_and_memory() -> None:
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal:
        assert log_format_for(terminal) == "text"
    os.close(leader)
    reader, writer = os.pipe()
    with os.fdopen(writer, "w") as pipe:
        assert log_format_for(pipe) == "json"
    os.close(reader)
    assert log_format_for(io.StringIO()) == "json"
    closed = io.StringIO()
    closed.close()
    assert log_format_for(closed) == "json"


def _serve(manifest: Path, tmp_path: Path, args: list[str], env: dict[str, str], stdout: int):
    port = free_port()
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("MLMODEL_")
    }
    environment.update(
        PYTHONPATH=os.pathsep.join([str(RUNTIME_TESTS), environment.get("PYTHONPATH", "")]),
        MLMODEL_CACHE_DIR=str(tmp_path / "cache"),
        MLMODEL_HOST="127.0.0.1",
        MLMODEL_PORT=str(port),
        MLMODEL_GRPC_PORT="0",
        **env,
    )
    command = [sys.executable, "-m", "mlmodel_runtime.cli", "serve", str(manifest), *args]
    process = subprocess.Popen(command, env=environment, stdout=stdout, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


def _read_until(
    fd: int, needle: bytes, process: subprocess.Popen[bytes], timeout: float = 60
) -> bytes:
    """What the server wrote on ``fd`` up to and including the line holding ``needle``."""
    output = b""
    deadline = time.monotonic() + timeout
    while needle not in output or not output.endswith(b"\n"):
        if time.monotonic() > deadline or process.poll() is not None:
            raise AssertionError(
                f"no {needle!r} in the server's output:\n{output.decode(errors='replace')}"
            )
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                output += os.read(fd, 65536)
            except OSError:  # a pty whose other end is closed
                break
    return output


@pytest.mark.parametrize(
    ("terminal", "args", "env", "expected"),
    [
        (True, [], {}, "text"),
        (False, [], {}, "json"),
        (True, [], {"MLMODEL_LOG_FORMAT": "json"}, "json"),
        (True, ["--log-format", "json"], {}, "json"),
        (False, ["--log-format", "text"], {}, "text"),
    ],
    ids=["tty", "pipe", "tty-env-json", "tty-flag-json", "pipe-flag-text"],
)
def test_serve_logs_text_on_a_terminal_and_json_elsewhere(
    models: Models,
    tmp_path: Path,
    terminal: bool,
    args: list[str],
    env: dict[str, str],
    expected: str,
) -> None:
    manifest = write_mlmodel(tmp_path / "model", "reviews", models.text)
    if terminal:
        read_fd, write_fd = pty.openpty()  # the server's stdout is the terminal's follower end
    else:
        read_fd, write_fd = os.pipe()
    process, url = _serve(manifest, tmp_path, args, env, stdout=write_fd)
    os.close(write_fd)
    try:
        output = _read_until(read_fd, b"model ready", process)
        predicted = httpx.post(
            f"{url}/v1/models/reviews:predict",
            json={"instances": ["great"]},
            headers={"X-Request-ID": "log-format-1"},
            timeout=10,
        )
        assert predicted.status_code == 200, predicted.text
        output += _read_until(read_fd, b"log-format-1", process)
    finally:
        process.terminate()
        process.wait(20)
        os.close(read_fd)
    lines = [line for line in output.decode().replace("\r\n", "\n").splitlines() if line.strip()]
    assert lines
    if expected == "json":
        documents = [json.loads(line) for line in lines]
        assert any(document["message"] == "model ready" for document in documents)
        access = [d for d in documents if d.get("http.request.id") == "log-format-1"]
        assert access and access[0]["http.response.status_code"] == 200
    else:
        assert all(TEXT_LINE.match(line) for line in lines), lines
        assert any(" model ready " in line for line in lines), lines
        assert any(
            "request POST /v1/models/reviews:predict 200" in line and "log-format-1" in line
            for line in lines
        ), lines
