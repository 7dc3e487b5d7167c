"""`mlmodel operator` logs text to a person at a terminal and JSON lines anywhere else."""

from __future__ import annotations

import os
import pty

from mlmodel_operator.main import kopf_log_format


def test_a_terminal_gets_text_and_a_pipe_gets_json() -> None:
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal:
        assert kopf_log_format(None, None, terminal) == "full"
    os.close(leader)
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as pipe:
        assert kopf_log_format(None, None, pipe) == "json"
    os.close(read_end)


def test_the_setting_and_the_flag_override_the_terminal_check() -> None:
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal:
        assert kopf_log_format(None, "json", terminal) == "json"
        assert kopf_log_format("plain", "json", terminal) == "plain"
    os.close(leader)
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as pipe:
        assert kopf_log_format(None, "text", pipe) == "full"
    os.close(read_end)
