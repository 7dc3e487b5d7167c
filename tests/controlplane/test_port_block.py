"""The ports a test cluster is started on: free when chosen, and out of the range the kernel
hands out to outgoing connections (which took the controller manager's port once in CI)."""

from __future__ import annotations

import socket
from pathlib import Path

from support.cluster import free_port_block


def test_a_block_is_free_and_below_the_ephemeral_range():
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(20):
        first = free_port_block(11)
        assert 1024 <= first and first + 11 <= ephemeral_low
        held = []
        try:
            for port in range(first, first + 11):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        finally:
            for sock in held:
                sock.close()

