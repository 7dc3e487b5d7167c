"""The one module that calls the Kubernetes API (besides kopf's own watching and bookkeeping).

It is a thin layer over kubernetes_asyncio's DynamicClient: the client brings the logins
kubeconfigs use (tokens, client certificates, exec plugins, in-cluster service accounts), and
children are written with Server-Side Apply under one field manager, so the API server tracks
what the operator owns, prunes what it stopped setting and normalises quantities itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import email.utils
import enum
import hashlib
import json
import time
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.dynamic import DynamicClient
from kubernetes_asyncio.dynamic.exceptions import ResourceNotFoundError
from kubernetes_asyncio.dynamic.resource import Resource

from mlmodel_operator import __version__, metrics

FIELD_MANAGER = "mlmodel-operator"
# Holds a Deployment's replicas for the moment between the operator letting go of them and its
# HPA's first scale (see KubeClient.hand_over_replicas).
REPLICAS_HANDOVER_MANAGER = "mlmodel-operator-replicas-handover"
USER_AGENT = f"mlmodel-operator/{__version__}"
MERGE_PATCH = "application/merge-patch+json"
# Codes worth retrying as they are: throttling, server trouble, a lost race on a precondition.
TRANSIENT_CODES = frozenset({0, 401, 409, 429, 500, 502, 503, 504})
# A Retry-After longer than this is taken as this: a confused server must not stall us for hours.
MAX_RETRY_AFTER = 300.0
# Where the client-side apply of versions before 0.2 kept what it wrote; removed on sight.
LAST_APPLIED_ANNOTATION = "serving.mlmodel.io/last-applied"
# The API server's refusal of a second controlling owner reference.
ONE_CONTROLLER = "Only one reference can have Controller set to true"


@dataclasses.dataclass(frozen=True)
class ResourceType:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True


MLMODEL = ResourceType("serving.mlmodel.io/v1alpha1", "MLModel", "mlmodels")
DEPLOYMENT = ResourceType("apps/v1", "Deployment", "deployments")
SERVICE = ResourceType("v1", "Service", "services")
POD = ResourceType("v1", "Pod", "pods")  # only listed, to say why a model is not ready
HPA = ResourceType("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers")
PDB = ResourceType("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
SERVICEMONITOR = ResourceType("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors")
NETWORKPOLICY = ResourceType("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")
INGRESS = ResourceType("networking.k8s.io/v1", "Ingress", "ingresses")
HTTPROUTE = ResourceType("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes")
CRD = ResourceType(
    "apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False
)

# Every kind of child the operator may create, in the order stale ones are removed.
CHILD_TYPES = (HTTPROUTE, INGRESS, SERVICEMONITOR, PDB, HPA, NETWORKPOLICY, DEPLOYMENT, SERVICE)
_BY_KIND = {(rt.api_version, rt.kind): rt for rt in (MLMODEL, CRD, *CHILD_TYPES)}


# Kinds whose controllers write their status often (a Deployment's, a dozen times in a rollout)
# and whose `metadata.generation` moves with every spec change: for these the cache compares
# generation and metadata, so a status write by the controller is not mistaken for drift.
GENERATION_KINDS = frozenset({"Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"})
# Annotations that controllers other than ours write on our children (the Deployment's revision).
_FOREIGN_ANNOTATION_PREFIXES = ("deployment.kubernetes.io/",)


def change_marker(obj: dict[str, Any]) -> str:
    """What changes when someone else changes the object's spec or metadata.

    The resourceVersion, except for the GENERATION_KINDS: their generation plus a digest of
    the metadata the operator applies (labels, annotations, owners)."""
    meta = obj.get("metadata") or {}
    if obj.get("kind") not in GENERATION_KINDS or not meta.get("generation"):
        return str(meta.get("resourceVersion", ""))
    annotations = {
        key: value
        for key, value in (meta.get("annotations") or {}).items()
        if not key.startswith(_FOREIGN_ANNOTATION_PREFIXES)
    }
    shape = [meta.get("labels") or {}, annotations, meta.get("ownerReferences") or []]
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()
    return f"g{meta['generation']}:{digest[:16]}"


def applies_field(obj: dict[str, Any], path: tuple[str, ...], manager: str = FIELD_MANAGER) -> bool:
    """Whether `manager` applies (owns through an Apply entry) the field at `path` of `obj`."""
    for entry in (obj.get("metadata") or {}).get("managedFields") or ():
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        fields: Any = entry.get("fieldsV1") or {}
        for key in path:
            fields = fields.get(key) if isinstance(fields, dict) else None
        if fields is not None:
            return True
    return False


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
    """kubernetes_asyncio's DynamicClient, logged in on first use."""

    def __init__(
        self,
        *,
        timeout_seconds: float,
        crd_check_interval_seconds: float,
        max_connections: int = 16,
    ) -> None:
        self._timeout = timeout_seconds
        self._max_connections = max_connections
        self._crd_ttl = crd_check_interval_seconds
        self._crd_answers: dict[str, tuple[float, bool]] = {}
        self._crd_locks: dict[str, asyncio.Lock] = {}
        self._configuration: k8s_client.Configuration | None = None
        self._api: k8s_client.ApiClient | None = None
        self._retired: list[k8s_client.ApiClient] = []
        self._dynamic: DynamicClient | None = None
        self._resources: dict[ResourceType, Resource] = {}
        # Logins and discovery happen once, however many reconciles ask for them at once.
        self._discovering = asyncio.Lock()
        # When the server last said Retry-After, no request of ours goes out before this time.
        self._not_before = 0.0

    async def login(self) -> None:
        """Credentials as kubectl finds them: the pod's service account in a cluster, else
        $KUBECONFIG or ~/.kube/config (tokens, client certificates, exec plugins...)."""
        configuration = k8s_client.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            try:
                await k8s_config.load_kube_config(client_configuration=configuration)
            except (k8s_config.ConfigException, OSError) as error:
                raise ApiError("login", 0, "NoCredentials", str(error)) from error
        configuration.connection_pool_maxsize = self._max_connections
        self._configuration = configuration
        if self._api is not None:
            self._retired.append(self._api)
            self._api, self._dynamic = None, None

    async def close(self) -> None:
        for api in [*self._retired, self._api]:
            if api is not None:
                await api.close()
        self._retired, self._api, self._dynamic = [], None, None

    async def _client(self) -> DynamicClient:
        if self._dynamic is not None:
            return self._dynamic
        async with self._discovering:
            return await self._new_client()

    async def _new_client(self) -> DynamicClient:
        if self._dynamic is None:
            if self._configuration is None:
                await self.login()
            assert self._configuration is not None
            for retired in self._retired:
                await retired.close()
            self._retired = []
            self._api = k8s_client.ApiClient(self._configuration)
            self._api.user_agent = USER_AGENT
            # Discovery is cached in the temporary directory, in a file named after the server
            # and the user (the client's default).
            self._dynamic = await self._call("discovery", DynamicClient(self._api))
        return self._dynamic

    async def _resource(self, rtype: ResourceType) -> Resource:
        """The discovered API resource; a kind the server does not serve is a 404."""
        resource = self._resources.get(rtype)
        if resource is not None:
            return resource
        dynamic = await self._client()
        async with self._discovering:
            resource = self._resources.get(rtype)
            if resource is not None:
                return resource
            try:
                resource = await self._call(
                    "discovery", dynamic.resources.get(api_version=rtype.api_version, kind=rtype.kind)
                )
            except ResourceNotFoundError:
                raise ApiError(
                    "discovery", 404, "NotFound", f"the server does not serve {rtype.kind}"
                ) from None
            self._resources[rtype] = resource
        return resource

    async def _call(self, verb: str, awaitable: Any) -> Any:
        """Await one step (discovery), turning the client's failures into ApiError."""
        return await self._guarded(verb, awaitable)

    async def _send(self, verb: str, awaitable: Any) -> tuple[int, str, dict[str, Any]]:
        """Await one request made with `serialize=False`: (status, Date header, JSON body).

        The DynamicClient reads answers unparsed, and then does not raise for error statuses
        itself: a status of 400 or more is turned into ApiError here.
        """

        async def read() -> tuple[int, str, Any, dict[str, Any]]:
            response = await awaitable
            body = await response.json(content_type=None) if response.status != 204 else {}
            return response.status, response.headers.get("Date", ""), response.headers, body

        code, date, headers, body = await self._guarded(verb, read())
        body = body if isinstance(body, dict) else {}
        if code >= 400:
            metrics.API_ERRORS.labels(verb=verb, code=str(code)).inc()
            retry_after = _seconds(headers.get("Retry-After"))
            if retry_after:
                self._not_before = max(
                    self._not_before, time.monotonic() + min(retry_after, MAX_RETRY_AFTER)
                )
            if code == 401:
                # Expired credentials (an exec plugin's token, say): log in again next time.
                self._forget_login()
            raise ApiError(
                verb,
                code,
                str(body.get("reason") or ""),
                str(body.get("message") or ""),
                retry_after=retry_after,
            )
        return code, date, body

    def _forget_login(self) -> None:
        self._configuration = None
        if self._api is not None:
            self._retired.append(self._api)
            self._api, self._dynamic = None, None

    async def _guarded(self, verb: str, awaitable: Any) -> Any:
        wait = self._not_before - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            return await asyncio.wait_for(awaitable, self._timeout)
        except ApiException as error:  # raised by discovery, which reads its answers
            code = int(error.status or 0)
            metrics.API_ERRORS.labels(verb=verb, code=str(code) if code else "network").inc()
            if code == 401:
                self._forget_login()
            reason, message = _status_of(error)
            raise ApiError(verb, code, reason, message) from error
        except (TimeoutError, OSError, ValueError, aiohttp.ClientError) as error:
            metrics.API_ERRORS.labels(verb=verb, code="network").inc()
            raise ApiError(verb, 0, type(error).__name__, str(error) or repr(error)) from error

    # --------------------------------------------------------------------------- plain verbs
    async def get(
        self, rtype: ResourceType, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            resource = await self._resource(rtype)
            dynamic = await self._client()
            _, _, body = await self._send(
                "get", dynamic.get(resource, name=name, namespace=namespace, serialize=False)
            )
            return body
        except ApiError as error:
            if error.code == 404:
                return None
            raise

    async def list(
        self, rtype: ResourceType, namespace: str | None = None, label_selector: str | None = None
    ) -> dict[str, Any]:
        resource = await self._resource(rtype)
        dynamic = await self._client()
        _, _, body = await self._send(
            "list",
            dynamic.get(resource, namespace=namespace, label_selector=label_selector, serialize=False),
        )
        return body

    async def delete(self, rtype: ResourceType, namespace: str | None, name: str) -> bool:
        """Delete with background propagation; False when it was already gone."""
        resource = await self._resource(rtype)
        dynamic = await self._client()
        try:
            await self._send(
                "delete",
                dynamic.delete(
                    resource,
                    name=name,
                    namespace=namespace,
                    propagation_policy="Background",
                    serialize=False,
                ),
            )
        except ApiError as error:
            if error.code == 404:
                return False
            raise
        return True

    # --------------------------------------------------------------------------- writes
    async def apply(
        self, desired: dict[str, Any], *, seen_version: str | None = None
    ) -> tuple[Applied, dict[str, Any]]:
        """Server-Side Apply of `desired` (the whole of what the operator owns in it).

        `seen_version` is the child's change_marker as last seen (None: not seen), which tells
        a real change from a no-op. A child controlled by another owner is refused by the server
        (one controller per object) and reported as NotOurs; it is never forced.
        """
        rtype = resource_of(desired)
        meta = desired["metadata"]
        resource = await self._resource(rtype)
        dynamic = await self._client()

        try:
            code, server_date, live = await self._send(
                "apply",
                dynamic.server_side_apply(
                    resource,
                    body=desired,
                    name=meta["name"],
                    namespace=meta.get("namespace"),
                    field_manager=FIELD_MANAGER,
                    force_conflicts=True,
                    serialize=False,
                ),
            )
        except ApiError as error:
            if error.code == 422 and ONE_CONTROLLER in error.message:
                raise NotOurs(
                    f"{rtype.kind} {meta.get('namespace')}/{meta['name']} is controlled by "
                    "another owner"
                ) from None
            raise
        if code == 201:
            return Applied.CREATED, live
        if seen_version is not None:
            changed = change_marker(live) != seen_version
        else:
            changed = _changed_by_this_apply(live, server_date)
        return (Applied.PATCHED if changed else Applied.UNCHANGED), live

    async def hand_over_replicas(self, desired: dict[str, Any], replicas: int) -> None:
        """Keep a Deployment at `replicas` while the operator stops applying them (its HPA takes
        them over): with this manager their only owner, dropping them from the apply would reset
        the Deployment to one replica until the HPA scales it back. A second manager applies the
        current value first (Kubernetes' documented transfer of ownership); the HPA's first scale
        takes the field from it."""
        meta = desired["metadata"]
        keep = {
            "apiVersion": DEPLOYMENT.api_version,
            "kind": DEPLOYMENT.kind,
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "spec": {"replicas": replicas},
        }
        resource = await self._resource(DEPLOYMENT)
        dynamic = await self._client()
        await self._send(
            "apply",
            dynamic.server_side_apply(
                resource,
                body=keep,
                name=meta["name"],
                namespace=meta["namespace"],
                field_manager=REPLICAS_HANDOVER_MANAGER,
                serialize=False,
            ),
        )

    async def create_if_missing(self, rtype: ResourceType, obj: dict[str, Any]) -> bool:
        """Create `obj` unless an object of that name exists; True if it was created."""
        resource = await self._resource(rtype)
        dynamic = await self._client()
        try:
            await self._send("create", dynamic.create(resource, body=obj, serialize=False))
        except ApiError as error:
            if error.code == 409:
                return False
            raise
        return True

    async def delete_owned(
        self, rtype: ResourceType, namespace: str, name: str, owner_uid: str
    ) -> bool:
        """Delete a child no longer wanted, only if this owner controls it; True if deleted."""
        live = await self.get(rtype, namespace, name)  # None too when the type is not served
        if live is None or controller_uid(live) != owner_uid:
            return False
        return await self.delete(rtype, namespace, name)

    async def forget_client_side_apply(self, live: dict[str, Any]) -> dict[str, Any] | None:
        """Hand a child written by the client-side apply of earlier versions over to SSA.

        The fields that version set belong to an Update entry of our manager name, which an
        apply never prunes; as client-go's csaupgrade does, they are moved into our Apply
        entry, and the last-applied annotation it kept is removed. Returns the object as changed,
        or None when there was nothing to hand over.
        """
        operations = legacy_upgrade(live)
        if not operations:
            return None
        rtype = resource_of(live)
        meta = live["metadata"]
        resource = await self._resource(rtype)
        dynamic = await self._client()
        _, _, upgraded = await self._send(
            "patch",
            dynamic.patch(
                resource,
                # A JSON patch is a list; the client passes any body through unchanged.
                body=operations,  # type: ignore[arg-type]
                name=meta["name"],
                namespace=meta.get("namespace"),
                content_type="application/json-patch+json",
                field_manager=f"{FIELD_MANAGER}-upgrade",
                serialize=False,
            ),
        )
        return upgraded

    async def patch_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """Write `status` through /status, as a merge patch from the status in `obj`.

        The patch names the object's uid (a recreated namesake is not written to) but not its
        resourceVersion: kopf's own annotation writes would turn most status writes into 409s
        and fresh reads. The operator is the status's only writer and writes it one pass at a
        time per MLModel, and the conditions carry the generation they were computed for."""
        rtype = resource_of(obj)
        meta = obj["metadata"]
        resource = await self._resource(rtype)
        dynamic = await self._client()
        path = resource.path(name=meta["name"], namespace=meta.get("namespace")) + "/status"
        patch = {
            "metadata": {"uid": meta["uid"]},
            "status": merge_patch(obj.get("status") or {}, status),
        }
        _, _, body = await self._send(
            "patch",
            dynamic.request("patch", path, body=patch, content_type=MERGE_PATCH, serialize=False),
        )
        return body

    async def crd_installed(self, name: str) -> bool:
        """Whether the cluster serves CRD `name`; the answer is reused for a short while, and
        the passes that need it at once share one request."""
        async with self._crd_locks.setdefault(name, asyncio.Lock()):
            return await self._crd_installed(name)

    async def _crd_installed(self, name: str) -> bool:
        now = time.monotonic()
        cached = self._crd_answers.get(name)
        if cached is not None and now - cached[0] < self._crd_ttl:
            return cached[1]
        installed = await self.get(CRD, None, name) is not None
        if installed and not (cached and cached[1]):
            # Served from now on: forget what discovery said before it existed.
            self._resources = {
                k: v for k, v in self._resources.items()
                if f"{k.plural}.{k.api_version.split('/')[0]}" != name
            }
        self._crd_answers[name] = (now, installed)
        return installed


def _changed_by_this_apply(live: dict[str, Any], server_date: str) -> bool:
    """Whether the apply just answered changed the object, when its earlier version is unknown.

    A no-op apply leaves the manager's managedFields time alone; a change sets it to the
    server's clock, which the answer's Date header also reads (both to the second).
    """
    try:
        now = email.utils.parsedate_to_datetime(server_date)
    except (TypeError, ValueError):
        return False
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply":
            try:
                written = datetime.datetime.fromisoformat(entry.get("time", ""))
            except ValueError:
                return False
            return abs((now - written).total_seconds()) <= 1.0
    return False


def controller_uid(obj: dict[str, Any]) -> str | None:
    """The uid of the object's controlling owner, if it has one."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref.get("uid")
    return None


def legacy_upgrade(live: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch that moves our client-side-apply ownership into our SSA entry (pure).

    Empty when the object carries neither the last-applied annotation nor an Update entry of
    our manager, or when we have no Apply entry yet to move it into.
    """
    meta = live.get("metadata") or {}
    entries = meta.get("managedFields") or []
    ours = [e for e in entries if e.get("manager") == FIELD_MANAGER]
    applied = next((e for e in ours if e.get("operation") == "Apply"), None)
    updates = [e for e in ours if e.get("operation") == "Update"]
    annotated = LAST_APPLIED_ANNOTATION in (meta.get("annotations") or {})
    if applied is None or not (updates or annotated):
        return []
    operations: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}
    ]
    if updates:
        fields = applied.get("fieldsV1") or {}
        for update in updates:
            if update.get("apiVersion") == applied.get("apiVersion"):
                fields = _union(fields, update.get("fieldsV1") or {})
        upgraded = [
            {**e, "fieldsV1": fields} if e is applied else e
            for e in entries
            if not (e.get("manager") == FIELD_MANAGER and e.get("operation") == "Update")
        ]
        operations.append({"op": "replace", "path": "/metadata/managedFields", "value": upgraded})
    if annotated:
        escaped = LAST_APPLIED_ANNOTATION.replace("~", "~0").replace("/", "~1")
        operations.append({"op": "remove", "path": f"/metadata/annotations/{escaped}"})
    return operations


def _union(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    """Two fieldsV1 sets (nested maps of field paths) as one."""
    merged = dict(left)
    for key, value in right.items():
        merged[key] = _union(merged[key], value) if isinstance(merged.get(key), dict) else value
    return merged


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The smallest JSON merge patch (RFC 7386) that turns `old` into `new`."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if key in old and before == value:
            continue
        if isinstance(value, dict) and isinstance(before, dict):
            patch[key] = merge_patch(before, value)
        else:
            patch[key] = value
    return patch


def _status_of(error: ApiException) -> tuple[str, str]:
    """The reason and message of the server's Status body, if it sent one."""
    try:
        body = json.loads(error.body) if error.body else {}
    except (TypeError, ValueError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    return str(body.get("reason") or error.reason or ""), str(body.get("message") or "")


def _seconds(header: str | None) -> float | None:
    """Retry-After in its delay-seconds form (the API server's); an HTTP date is ignored."""
    try:
        return max(0.0, float(header)) if header else None
    except ValueError:
        return None
