"""Whether kopf peering has paused this operator, so the resync loop pauses with it.

kopf stops its watchers when a peer of higher (or equal) priority is alive, but it does not
expose that state to an operator's own loops. The resync loop therefore reads the peering
object kopf writes (one entry per live operator) and applies kopf's rule to it.
"""

from __future__ import annotations

import dataclasses
import datetime
import getpass
import os
import secrets
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from mlmodel_operator.kube import ResourceType

CLUSTER_PEERING = ResourceType("kopf.dev/v1", "ClusterKopfPeering", "clusterkopfpeerings", False)
NAMESPACED_PEERING = ResourceType("kopf.dev/v1", "KopfPeering", "kopfpeerings")
# kopf's name of the peering object when none is given (auto-detected, optional).
DEFAULT_PEERING_NAME = "default"


@dataclasses.dataclass(frozen=True)
class Peering:
    """This operator's place among its peers; `name` None means standalone (never paused)."""

    name: str | None
    identity: str
    priority: int = 0
    # Mandatory peering (--peering NAME): no peering object means kopf waits, and so do we.
    mandatory: bool = False
    # Cluster-wide operators use one ClusterKopfPeering, namespaced ones a KopfPeering per namespace.
    namespaces: tuple[str, ...] = ()


def own_identity(environ: Mapping[str, str]) -> str:
    """The id this process writes into the peering object: the pod's name, else user@host/random."""
    pod = environ.get("POD_ID")
    if pod:
        return pod
    return f"{getpass.getuser()}@{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


def paused_by(
    peers: Mapping[str, Any], identity: str, priority: int, now: datetime.datetime
) -> bool:
    """kopf's rule: pause while another live peer has a higher or the same priority."""
    for peer_id, info in peers.items():
        if peer_id == identity or not isinstance(info, Mapping):
            continue
        try:
            lastseen = datetime.datetime.fromisoformat(str(info["lastseen"]))
            lifetime = float(info.get("lifetime", 60))
            their_priority = int(info.get("priority", 0))
        except (KeyError, TypeError, ValueError):
            continue  # an entry kopf cannot read either; kopf ignores such peers too
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=datetime.UTC)
        alive = lastseen + datetime.timedelta(seconds=lifetime) > now
        if alive and their_priority >= priority:
            return True
    return False


def peering_objects(peering: Peering) -> Sequence[tuple[ResourceType, str | None]]:
    """Where the peers are listed: (resource type, namespace) for each object kopf uses."""
    if peering.name is None:
        return ()
    if not peering.namespaces:
        return ((CLUSTER_PEERING, None),)
    return tuple((NAMESPACED_PEERING, namespace) for namespace in peering.namespaces)


def peers_of(obj: dict[str, Any] | None) -> dict[str, Any]:
    status = (obj or {}).get("status")
    return status if isinstance(status, dict) else {}
