"""Loopback ports, who listens on them, and waiting for a condition: the one copy the test areas
share."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def ephemeral_range_start() -> int:
    """The first port of the range the kernel gives the local ends of outgoing connections."""
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def free_port_block(size: int, host: str = "127.0.0.1") -> int:
    """The first of `size` consecutive ports free on `host` now (checked, not reserved; the caller
    binds them soon after).

    They are taken at random below the kernel's ephemeral range: between the check and the bind a
    port in that range can become the local end of any outgoing connection (CI once saw a test
    cluster's controller manager, started seconds after the check, find its port taken so), while
    below it only an explicit bind can take one.
    """
    ephemeral_low = ephemeral_range_start()
    for first in random.Random().sample(range(10000, ephemeral_low - size), 100):
        sockets = []
        try:
            for port in range(first, first + size):
                sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
                sockets.append(sock)
                sock.bind((host, port))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no block of {size} free ports on {host} below {ephemeral_low}")


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now (the caller binds it soon after): `free_port_block` of one."""
    return free_port_block(1, host)


def _attempts(timeout: float) -> Iterator[None]:
    """Yields once, then again each time while `timeout` seconds have not passed."""
    deadline = time.monotonic() + timeout
    yield
    while time.monotonic() <= deadline:
        yield


def wait_until(
    predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition", every: float = 0.2
) -> Any:
    """Poll `predicate` until it returns something truthy; that value is returned."""
    for _ in _attempts(timeout):
        if result := predicate():
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def wait_until_async(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    what: str = "condition",
    every: float = 0.02,
) -> Any:
    """`wait_until` for a test on the event loop: the loop keeps running while it waits."""
    for _ in _attempts(timeout):
        if result := predicate():
            return result
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def listening_sockets(port: int) -> int:
    """How many distinct sockets listen on ``port``, from /proc/net/tcp and tcp6 (grpc listens on
    IPv4 addresses through v4-mapped IPv6 sockets)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
            if local_port == port and state == "0A":  # 0A: LISTEN
                inodes.add(inode)
    return len(inodes)
