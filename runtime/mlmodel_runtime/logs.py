"""Log lines as JSON objects with Elastic Common Schema field names (or plain text for a terminal),
plus a cheap access-log writer that skips the logging machinery on the request path."""

from __future__ import annotations

import functools
import io
import logging
import os
import sys
import time
from typing import IO, Any

import orjson

ECS_VERSION = "8.11.0"
SERVICE_NAME = "mlmodel-runtime"

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is context.
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


def ecs_timestamp(seconds: float) -> str:
    return _second_prefix(int(seconds)) + f".{int(seconds * 1000) % 1000:03d}Z"


@functools.lru_cache(maxsize=4)
def _second_prefix(second: int) -> str:
    # Formatted once per second instead of once per line: strftime shows in request profiles.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def base_fields(*, model: str, namespace: str = "", pod_name: str = "") -> dict[str, Any]:
    """Fields every line carries; ``labels.digest`` is added once the model is loaded."""
    fields: dict[str, Any] = {
        "ecs.version": ECS_VERSION,
        "service.name": SERVICE_NAME,
        "labels.model": model,
        "process.pid": os.getpid(),
    }
    if namespace:
        fields["labels.namespace"] = namespace
    if pod_name:
        fields["host.name"] = pod_name
    return fields


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _RECORD_FIELDS}


def _duration_ns(seconds: Any) -> Any:
    return round(seconds * 1e9) if isinstance(seconds, (int, float)) else seconds


def _redacted_uri(uri: Any) -> str:
    from mlmodel_runtime.artifacts.uris import redact_uri  # lazy: logs must import cheaply

    return redact_uri(str(uri))


# The short context keys our code passes in ``extra=`` and the ECS field each one is. Any other
# key without a dot goes under ``mlmodel.``: at the top level it could clash with a future ECS field.
_ECS_NAMES: dict[str, tuple[str, Any]] = {
    "seconds": ("event.duration", _duration_ns),  # ECS durations are integer nanoseconds
    "uri": ("url.original", _redacted_uri),
    "path": ("file.path", str),
    "bytes": ("file.size", None),
    "reason": ("event.reason", None),
    "error": ("error.message", str),
}


def ecs_context(context: dict[str, Any]) -> dict[str, Any]:
    """``extra=`` context under ECS names: dotted keys (``url.path``) are already ECS and stay."""
    fields: dict[str, Any] = {}
    for key, value in context.items():
        if "." in key:
            fields[key] = value
        elif key in _ECS_NAMES:
            name, convert = _ECS_NAMES[key]
            fields[name] = convert(value) if convert is not None else value
        else:
            fields[f"mlmodel.{key}"] = value
    return fields


class EcsJsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra=`` keys are added as they are (fixed message, key-value context)."""

    def __init__(self, fields: dict[str, Any]) -> None:
        super().__init__()
        self.fields = fields  # shared and updated in place (labels.digest after load)

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "@timestamp": ecs_timestamp(record.created),
            "log.level": record.levelname.lower(),
            "message": record.getMessage(),
            "log.logger": record.name,
            **self.fields,
            **ecs_context(_context(record)),
        }
        if record.exc_info and record.exc_info[0] is not None:
            document["error.type"] = record.exc_info[0].__name__
            # An explicit error= (already scrubbed of secrets by the caller) wins over the raw text.
            document.setdefault("error.message", str(record.exc_info[1]))
            document["error.stack_trace"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


class TextFormatter(logging.Formatter):
    """For a terminal: time, level, message, then the context as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = _context(record)
        if context:
            line += " " + " ".join(f"{key}={value}" for key, value in context.items())
        return line


def configure_logging(
    *, level: str, log_format: str, fields: dict[str, Any], stream: IO[str] | None = None
) -> None:
    """Route every logger (ours, uvicorn's, libraries') to one handler on ``stream`` (stdout)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(EcsJsonFormatter(fields) if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.captureWarnings(True)


class AccessLog:
    """Writes one line per HTTP request without LogRecords or formatters: a dict, orjson, one write."""

    def __init__(
        self, fields: dict[str, Any], *, log_format: str = "json", stream: IO[str] | None = None
    ) -> None:
        self.fields = fields
        self.json = log_format == "json"
        self._stream = stream or sys.stdout
        self._fd: int | None = None
        try:
            self._stream.flush()
            self._fd = self._stream.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
            self._fd = None  # an in-memory stream (tests): write through it

    def log(
        self,
        *,
        method: str,
        path: str,
        status: int,
        duration_ns: int,
        request_id: str,
        client: str | None,
    ) -> None:
        if self.json:
            document = {
                "@timestamp": ecs_timestamp(time.time()),
                "log.level": "info" if status < 500 else ("warning" if status == 503 else "error"),
                "message": "request",
                "log.logger": "mlmodel_runtime.access",
                **self.fields,
                "http.request.method": method,
                "url.path": path,
                "http.response.status_code": status,
                "event.duration": duration_ns,
                "http.request.id": request_id,
            }
            if client:
                document["client.address"] = client
            line = orjson.dumps(document, option=orjson.OPT_APPEND_NEWLINE)
        else:
            line = (
                f"{time.strftime('%Y-%m-%d %H:%M:%S')} INFO    request {method} {path} {status} "
                f"{duration_ns / 1e6:.1f}ms request_id={request_id}\n"
            ).encode()
        self._write(line)

    def _write(self, line: bytes) -> None:
        if self._fd is not None:
            try:
                os.write(self._fd, line)  # one syscall: whole lines even with several writers
                return
            except OSError:
                self._fd = None
        self._stream.write(line.decode())
        self._stream.flush()
