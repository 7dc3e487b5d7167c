"""The ports tests start servers on: free when chosen, and out of the range the kernel hands out
to outgoing connections (which once took a test cluster's controller-manager port in CI)."""

from __future__ import annotations

import socket

from support.ports import ephemeral_range_start, free_port, free_port_block


def test_a_block_is_free_and_below_the_ephemeral_range():
    ephemeral_low = ephemeral_range_start()
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


def test_a_single_port_comes_from_the_same_range_and_binds():
    ephemeral_low = ephemeral_range_start()
    ports = {free_port() for _ in range(20)}
    assert all(1024 <= port < ephemeral_low for port in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))
