"""Optional bearer-token check for prediction endpoints; tokens come from a mounted file (one per
line) that is re-read when it changes, so a rotated Secret takes effect without a restart."""

from __future__ import annotations

import hmac
import logging
import time
from pathlib import Path

from mlmodel_runtime.errors import Unauthorized

logger = logging.getLogger("mlmodel_runtime.auth")

RECHECK_SECONDS = 5.0


def parse_tokens(text: str) -> tuple[bytes, ...]:
    return tuple(
        line.strip().encode()
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    )


class BearerTokens:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._tokens: tuple[bytes, ...] = ()
        self._mtime: float | None = None
        self._checked = 0.0
        self._reload()

    def _reload(self) -> None:
        self._checked = time.monotonic()
        try:
            mtime = self.path.stat().st_mtime
            if mtime != self._mtime:
                self._tokens = parse_tokens(self.path.read_text())
                self._mtime = mtime
                logger.info(
                    "auth tokens loaded",
                    extra={"path": str(self.path), "tokens": len(self._tokens)},
                )
        except OSError as exc:
            # Keep the tokens we had: a Secret being re-mounted must not open the door.
            logger.error(
                "auth token file unreadable", extra={"path": str(self.path), "error": str(exc)}
            )

    def check(self, authorization: str | None) -> None:
        if time.monotonic() - self._checked > RECHECK_SECONDS:
            self._reload()
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized(
                "missing bearer token: send the header 'Authorization: Bearer <token>'"
            )
        offered = authorization[7:].strip().encode()
        # Compare against every token so the time taken does not reveal which one nearly matched.
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(offered, token)
        if not matched:
            raise Unauthorized("invalid bearer token")
