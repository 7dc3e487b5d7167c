"""Whether a person is watching: `mlmodel serve` and `mlmodel operator` write readable text to a
terminal and JSON lines (for a log collector) anywhere else, unless told otherwise."""

from __future__ import annotations

import sys
from typing import IO


def log_format_for(stream: IO[str] | None = None) -> str:
    """"text" when `stream` (stdout by default) is a terminal, else "json": a container, a pipe,
    a file."""
    try:
        return "text" if (stream or sys.stdout).isatty() else "json"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return "json"
