"""The runtime's error base class: each error carries its HTTP status and a message that says what
to fix; the app turns any of them into one ``{"error": "..."}`` response."""

from __future__ import annotations


class MLModelError(Exception):
    """Base class: ``status_code`` and ``message`` become the HTTP response, ``headers`` are added."""

    status_code = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(MLModelError):
    status_code = 400


class Unauthorized(MLModelError):
    status_code = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class ModelNotFound(MLModelError):
    status_code = 404


class PayloadTooLarge(MLModelError):
    status_code = 413


class UnsupportedMediaType(MLModelError):
    status_code = 415


class NotSupported(MLModelError):
    """A protocol call this runtime understands but does not do (e.g. loading another model)."""

    status_code = 501


class ModelNotReady(MLModelError):
    status_code = 503


class Overloaded(MLModelError):
    """Shed load: the client should retry shortly, ideally on another replica."""

    status_code = 503

    def __init__(self, message: str, *, retry_after_seconds: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_seconds)})


class InferenceFailed(MLModelError):
    """The model raised on input that passed validation: a server-side fault, logged with context."""

    status_code = 500
