"""The MLModels as the operator last saw them: kopf's watch, and the answers to its own writes.

A status update that follows a Deployment's rollout needs the MLModel's spec and current
status; reading both from here instead of from the API server saves a GET per Deployment event.
The copy holds at least the operator's own last status write (the answer to it is kept), and
the operator is the status's only writer; a spec change not seen here yet is reconciled when
its event arrives.
"""

from __future__ import annotations

import copy
from typing import Any

Key = tuple[str, str]  # namespace, name
# Not read by a status computation, and the bulk of a stored body.
_DROPPED_METADATA = ("managedFields",)


def _version(obj: dict[str, Any]) -> int:
    """The resourceVersion as a number (etcd's revision), -1 when it is not one."""
    text = str((obj.get("metadata") or {}).get("resourceVersion", ""))
    return int(text) if text.isdigit() else -1


class MLModels:
    def __init__(self) -> None:
        self._bodies: dict[Key, dict[str, Any]] = {}

    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        """Keep the newest copy of an MLModel (an event can arrive after our own write's answer)."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self._bodies.pop(key, None)
            return
        known = self._bodies.get(key)
        if (
            known is not None
            and known["metadata"].get("uid") == meta.get("uid")
            and _version(known) > _version(body)
        ):
            return
        kept = copy.deepcopy(dict(body))
        kept["metadata"] = {k: v for k, v in kept.get("metadata", {}).items() if k not in _DROPPED_METADATA}
        self._bodies[key] = kept

    def newest(self, body: dict[str, Any]) -> dict[str, Any]:
        """`body`, or a private copy of a newer version of the same object seen since: a resync
        pass's listing, or a handler's snapshot that waited in kopf's queue, can predate the
        operator's own last status write (and a spec change)."""
        meta = body.get("metadata") or {}
        known = self._bodies.get((meta.get("namespace", ""), meta.get("name", "")))
        if known is None or known["metadata"].get("uid") != meta.get("uid") or _version(known) <= _version(body):
            return body
        return copy.deepcopy(known)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A private copy of the MLModel as last seen, or None if it was not seen."""
        body = self._bodies.get((namespace, name))
        return copy.deepcopy(body) if body is not None else None
