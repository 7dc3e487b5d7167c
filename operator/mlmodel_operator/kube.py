"""The one module that calls the Kubernetes API (besides kopf's own watching and bookkeeping).

Writes are idempotent: create-or-patch treats 409 as "already there", a patch is sent only when
a field the operator owns differs from the live object, and the status is patched through the
/status subresource with the object's resourceVersion as a precondition.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import time
import warnings
from typing import Any

import aiohttp
import kopf

from mlmodel_operator import __version__, metrics
from mlmodel_operator.diffing import (
    apply_patch,
    controller_uid,
    merge_patch,
    owned_fields,
    record_applied,
)

USER_AGENT = f"mlmodel-operator/{__version__}"
MERGE_PATCH = "application/merge-patch+json"
# Codes worth retrying as they are: throttling, server trouble, a lost race on a precondition.
TRANSIENT_CODES = frozenset({0, 401, 409, 429, 500, 502, 503, 504})
# A Retry-After longer than this is taken as this: a confused server must not stall us for hours.
MAX_RETRY_AFTER = 300.0


@dataclasses.dataclass(frozen=True)
class ResourceType:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = (
            f"/apis/{self.api_version}" if "/" in self.api_version else f"/api/{self.api_version}"
        )
        parts = [base]
        if self.namespaced and namespace:
            parts += ["namespaces", namespace]
        parts.append(self.plural)
        if name:
            parts.append(name)
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


MLMODEL = ResourceType("serving.mlmodel.io/v1alpha1", "MLModel", "mlmodels")
DEPLOYMENT = ResourceType("apps/v1", "Deployment", "deployments")
SERVICE = ResourceType("v1", "Service", "services")
POD = ResourceType("v1", "Pod", "pods")  # only listed, to say why a model is not ready
HPA = ResourceType("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers")
PDB = ResourceType("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
SERVICEMONITOR = ResourceType("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors")
NETWORKPOLICY = ResourceType("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")
CRD = ResourceType(
    "apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False
)

# Every kind of child the operator may create, in the order stale ones are removed.
CHILD_TYPES = (SERVICEMONITOR, PDB, HPA, NETWORKPOLICY, DEPLOYMENT, SERVICE)
_BY_KIND = {(rt.api_version, rt.kind): rt for rt in (MLMODEL, CRD, *CHILD_TYPES)}


def resource_of(obj: dict[str, Any]) -> ResourceType:
    try:
        return _BY_KIND[(obj["apiVersion"], obj["kind"])]
    except KeyError:
        raise ValueError(
            f"the operator does not manage {obj.get('apiVersion')}/{obj.get('kind')}"
        ) from None


class ApiError(Exception):
    """A failed API request: `code` is the HTTP status (0 when no answer came)."""

    def __init__(
        self, verb: str, code: int, reason: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{verb} failed: {code} {reason}: {message}")
        self.verb, self.code, self.reason, self.message = verb, code, reason, message
        # Seconds the server asked us to wait (Retry-After on 429 and 503), if it said.
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return self.code in TRANSIENT_CODES


class NotOurs(Exception):
    """A child with our name is controlled by another owner: never take it over."""


class Applied(enum.Enum):
    CREATED = "Created"
    PATCHED = "Patched"
    UNCHANGED = "Unchanged"


class KubeClient:
    """An aiohttp client authenticated with the credentials kopf resolved at login."""

    def __init__(self, *, timeout_seconds: float, crd_check_interval_seconds: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._crd_ttl = crd_check_interval_seconds
        self._crd_answers: dict[str, tuple[float, bool]] = {}
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None
        self._retired: list[aiohttp.ClientSession] = []
        # When the server last said Retry-After, no request of ours goes out before this time.
        self._not_before = 0.0

    def use_credentials(self, info: kopf.ConnectionInfo) -> None:
        """Called on every (re-)login; the next request opens a session with the new credentials."""
        self._info = info
        if self._session is not None:
            self._retired.append(self._session)
            self._session = None

    async def close(self) -> None:
        for session in [*self._retired, self._session]:
            if session is not None:
                await session.close()
        self._retired, self._session = [], None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._info is None:
            raise ApiError("login", 0, "NotLoggedIn", "no credentials yet: kopf has not logged in")
        info = self._info
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            auth = info.as_aiohttp_basic_auth()
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
            headers={**info.as_http_headers(), "User-Agent": USER_AGENT},
            auth=auth,
            proxy=info.proxy_url,
            trust_env=info.trust_env,
            timeout=self._timeout,
        )

    async def _request(
        self,
        verb: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        if self._session is None:
            self._session = self._open_session()
            for retired in self._retired:
                await retired.close()
            self._retired = []
        assert self._info is not None
        wait = self._not_before - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        url = self._info.server.rstrip("/") + path
        headers = {"Content-Type": content_type} if body is not None else {}
        try:
            async with self._session.request(
                method,
                url,
                params=params,
                headers=headers,
                data=None if body is None else _json_bytes(body),
            ) as response:
                payload = (
                    await response.json(content_type=None) if response.content_length != 0 else {}
                )
                if response.status >= 400:
                    metrics.API_ERRORS.labels(verb=verb, code=str(response.status)).inc()
                    payload = payload if isinstance(payload, dict) else {}
                    retry_after = _seconds(response.headers.get("Retry-After"))
                    if retry_after:
                        self._not_before = max(
                            self._not_before, time.monotonic() + min(retry_after, MAX_RETRY_AFTER)
                        )
                    raise ApiError(
                        verb,
                        response.status,
                        payload.get("reason") or response.reason or "",
                        payload.get("message") or "",
                        retry_after=retry_after,
                    )
                return payload if isinstance(payload, dict) else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            metrics.API_ERRORS.labels(verb=verb, code="network").inc()
            raise ApiError(verb, 0, type(error).__name__, str(error) or repr(error)) from error

    # --------------------------------------------------------------------------- plain verbs
    async def get(
        self, rtype: ResourceType, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            return await self._request("get", "GET", rtype.path(namespace, name))
        except ApiError as error:
            if error.code == 404:
                return None
            raise

    async def list(
        self, rtype: ResourceType, namespace: str | None = None, label_selector: str | None = None
    ) -> dict[str, Any]:
        params = {"labelSelector": label_selector} if label_selector else None
        return await self._request("list", "GET", rtype.path(namespace), params=params)

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        rtype = resource_of(obj)
        return await self._request(
            "create", "POST", rtype.path(obj["metadata"].get("namespace")), body=obj
        )

    async def patch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        return await self._request(
            "patch",
            "PATCH",
            rtype.path(namespace, name, subresource),
            body=patch,
            content_type=MERGE_PATCH,
        )

    async def delete(self, rtype: ResourceType, namespace: str | None, name: str) -> bool:
        """Delete with background propagation; False when it was already gone."""
        try:
            await self._request(
                "delete",
                "DELETE",
                rtype.path(namespace, name),
                body={
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "propagationPolicy": "Background",
                },
            )
        except ApiError as error:
            if error.code == 404:
                return False
            raise
        return True

    # --------------------------------------------------------------------------- idempotent writes
    async def apply(self, desired: dict[str, Any]) -> tuple[Applied, dict[str, Any]]:
        """Create `desired`, or patch the fields the operator owns when they differ from the live object."""
        rtype = resource_of(desired)
        namespace, name = desired["metadata"].get("namespace"), desired["metadata"]["name"]
        live = await self.get(rtype, namespace, name)
        if live is None:
            try:
                return Applied.CREATED, await self.create(with_last_applied(desired))
            except ApiError as error:
                if error.code != 409:
                    raise
            # Someone created it between our read and our write: treat it as already there.
            live = await self.get(rtype, namespace, name)
            if live is None:
                raise ApiError(
                    "create", 409, "AlreadyExists", f"{rtype.kind} {name} exists but cannot be read"
                )
        ours = controller_uid(desired)
        theirs = controller_uid(live)
        if theirs is not None and ours is not None and theirs != ours:
            raise NotOurs(
                f"{rtype.kind} {namespace}/{name} is controlled by another owner (uid {theirs})"
            )
        patch = apply_patch(desired, live)
        if patch is None:
            return Applied.UNCHANGED, live
        return Applied.PATCHED, await self.patch(rtype, namespace, name, patch)

    async def delete_owned(
        self, rtype: ResourceType, namespace: str, name: str, owner_uid: str
    ) -> bool:
        """Delete a child no longer wanted, only if this owner controls it; True if deleted."""
        live = await self.get(rtype, namespace, name)  # None too when the type is not served
        if live is None or controller_uid(live) != owner_uid:
            return False
        return await self.delete(rtype, namespace, name)

    async def patch_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """Write `status` through /status, failing with 409 if the object changed since it was read."""
        rtype = resource_of(obj)
        meta = obj["metadata"]
        patch = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "status": merge_patch(obj.get("status") or {}, status),
        }
        return await self.patch(
            rtype, meta.get("namespace"), meta["name"], patch, subresource="status"
        )

    async def crd_installed(self, name: str) -> bool:
        """Whether the cluster serves CRD `name`; the answer is reused for a short while."""
        now = time.monotonic()
        cached = self._crd_answers.get(name)
        if cached is not None and now - cached[0] < self._crd_ttl:
            return cached[1]
        installed = await self.get(CRD, None, name) is not None
        self._crd_answers[name] = (now, installed)
        return installed


def with_last_applied(desired: dict[str, Any]) -> dict[str, Any]:
    """`desired` as created: its metadata annotated with the owned fields it sets."""
    recorded = record_applied(owned_fields(desired))["metadata"]["annotations"]
    metadata = {**desired["metadata"], "annotations": recorded}
    return {**desired, "metadata": metadata}


def _seconds(header: str | None) -> float | None:
    """Retry-After in its delay-seconds form (the API server's); an HTTP date is ignored."""
    try:
        return max(0.0, float(header)) if header else None
    except ValueError:
        return None


def _json_bytes(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
