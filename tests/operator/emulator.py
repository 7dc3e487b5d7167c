"""A Kubernetes API server for the operator tests: kmock's emulator plus the API semantics it lacks.

kmock 0.8 stores objects and serves discovery; this subclass adds what the operator relies on in
a real cluster (uid, resourceVersion, generation, an isolated /status, watches that resume from a
resourceVersion, garbage collection, finalizers, 409/422 answers), a request log for assertions,
fault injection, and a stand-in for the Deployment controller.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal.dicts import merge_patch_dict

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
SYSTEM_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp")
# How often an idle watch stream wakes up to notice a client that went away.
WATCH_POLL_SECONDS = 0.5


class ApiError(Exception):
    """An answer the API server gives as a `Status` object."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.retry_after: int | None = None

    def as_status(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "code": self.code,
            "reason": self.reason,
            "message": self.message,
        }


@dataclasses.dataclass(frozen=True)
class Kind:
    """What the server knows about one resource (the discovery document, in short)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: frozenset[str] = frozenset()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.plural)

    @property
    def kmock_resource(self) -> kmock.resource:
        return kmock.resource(group=self.group, version=self.version, plural=self.plural)


BUILTIN_KINDS = (
    Kind("", "v1", "namespaces", "Namespace", namespaced=False, subresources=frozenset({"status"})),
    Kind("", "v1", "events", "Event"),
    Kind("", "v1", "services", "Service", subresources=frozenset({"status"})),
    Kind("", "v1", "pods", "Pod", subresources=frozenset({"status"})),
    Kind("", "v1", "secrets", "Secret"),
    Kind("", "v1", "configmaps", "ConfigMap"),
    Kind("events.k8s.io", "v1", "events", "Event"),
    Kind("apps", "v1", "deployments", "Deployment", subresources=frozenset({"status", "scale"})),
    Kind(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        subresources=frozenset({"status"}),
    ),
    Kind(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        subresources=frozenset({"status"}),
    ),
    Kind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
    Kind(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        subresources=frozenset({"status"}),
    ),
)
CRD_KIND = BUILTIN_KINDS[-1]


@dataclasses.dataclass(frozen=True)
class ApiPath:
    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclasses.dataclass
class ApiCall:
    """One request the server received, in the terms RBAC rules use (verb, group, resource)."""

    method: str
    path: str
    query: dict[str, str]
    verb: str
    group: str | None
    resource: str | None
    subresource: str | None
    namespace: str | None
    name: str | None
    body: Any
    content_type: str
    user_agent: str
    user: str = ""  # the bearer token: tells two operator processes apart
    code: int = 0
    at: float = 0.0

    @property
    def is_write(self) -> bool:
        return self.verb in WRITE_VERBS


@dataclasses.dataclass
class Fault:
    """An answer forced on the requests `matches` selects, `times` times (None: until removed)."""

    matches: Callable[[ApiCall], bool]
    code: int  # 0: carry the request out, then hold the reply for `delay` seconds
    times: int | None = None
    delay: float = 0.0
    retry_after: int | None = None  # a Retry-After header on the error answer
    hits: int = 0


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    rv: int
    kind: Kind
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None


def canonicalise_quantities(kind: Kind, obj: Any) -> Any:
    """Rewrite the pod quantities as the API server stores them (1024Mi -> 1Gi, 0.5 -> 500m).

    The operator's own canonicaliser is checked against apimachinery's spellings in
    test_quantity.py; here it plays the API server, so an operator that sent non-canonical
    quantities would see a difference on every resync."""
    from mlmodel_operator.quantity import canonical_quantity, canonical_resources

    if not isinstance(obj, dict):
        return obj
    if kind.kind == "Pod":
        pod_spec = obj.get("spec")
    elif kind.kind == "Deployment":
        pod_spec = ((obj.get("spec") or {}).get("template") or {}).get("spec")
    else:
        return obj
    if not isinstance(pod_spec, dict):
        return obj
    for container in [*(pod_spec.get("containers") or []), *(pod_spec.get("initContainers") or [])]:
        if isinstance(container, dict) and isinstance(container.get("resources"), dict):
            container["resources"] = canonical_resources(container["resources"])
    for volume in pod_spec.get("volumes") or []:
        empty_dir = volume.get("emptyDir") if isinstance(volume, dict) else None
        if isinstance(empty_dir, dict) and "sizeLimit" in empty_dir:
            empty_dir["sizeLimit"] = canonical_quantity(empty_dir["sizeLimit"])
    return obj


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_api_path(path: str, known: Callable[[str, str, str], Kind | None]) -> ApiPath | None:
    """Split a resource URL; None for discovery and other non-resource URLs."""
    parts = [part for part in path.strip("/").split("/") if part]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    # /api/v1/namespaces/NS/PLURAL/... unless it is /api/v1/namespaces/NAME[/status].
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespaced_kind = known(group, version, rest[2])
        if namespaced_kind is not None and namespaced_kind.namespaced:
            namespace, rest = rest[1], rest[2:]
    return ApiPath(
        group=group,
        version=version,
        plural=rest[0],
        namespace=namespace,
        name=rest[1] if len(rest) > 1 else None,
        subresource="/".join(rest[2:]) or None,
    )


def parse_label_selector(selector: str) -> list[Callable[[dict[str, str]], bool]]:
    """Equality, inequality, set and existence requirements, joined by commas."""
    rules: list[Callable[[dict[str, str]], bool]] = []
    for term in re.split(r",(?![^()]*\))", selector):
        term = term.strip()
        if not term:
            continue
        if match := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", term):
            key, op, values = match[1], match[2], {v.strip() for v in match[3].split(",")}
            if op == "in":
                rules.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                rules.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            rules.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            rules.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif term.startswith("!"):
            rules.append(lambda labels, k=term[1:]: k not in labels)
        else:
            rules.append(lambda labels, k=term: k in labels)
    return rules


def matches_selectors(obj: dict[str, Any], label_selector: str, field_selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    if not all(rule(labels) for rule in parse_label_selector(label_selector)):
        return False
    for term in filter(None, (t.strip() for t in field_selector.split(","))):
        negate = "!=" in term
        field, value = term.split("!=" if negate else "=", 1)
        actual: Any = obj
        for part in field.lstrip("=").split("."):
            actual = actual.get(part) if isinstance(actual, dict) else None
        if (str(actual) == value) == negate:
            return False
    return True


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    """An in-memory API server with the semantics of a real one where the operator depends on them."""

    calls: list[ApiCall] = attrs.field(factory=list, init=False)
    faults: list[Fault] = attrs.field(factory=list, init=False)
    _kinds: dict[tuple[str, str, str], Kind] = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=1000, init=False)
    _events: list[WatchEvent] = attrs.field(factory=list, init=False)
    _changed: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for kind in BUILTIN_KINDS:
            self.register_kind(kind)
        for namespace in ("default", "kube-system"):
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})

    # ----------------------------------------------------------------------------- registry
    def register_kind(self, kind: Kind) -> None:
        self._kinds[kind.key] = kind
        self.resources[kind.kmock_resource] = kmock.ResourceInfo(
            kind=kind.kind,
            singular=kind.kind.lower(),
            namespaced=kind.namespaced,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            subresources=set(kind.subresources),
        )

    def kind_of(self, group: str, version: str, plural: str) -> Kind | None:
        return self._kinds.get((group, version, plural))

    def kind_named(self, api_version: str, kind_name: str) -> Kind:
        group, _, version = api_version.rpartition("/")
        for kind in self._kinds.values():
            if (kind.group, kind.version, kind.kind) == (group, version, kind_name):
                return kind
        raise ApiError(404, "NotFound", f"the server doesn't have a resource type {kind_name!r}")

    def install_crd(self, crd: dict[str, Any]) -> None:
        """Store a CustomResourceDefinition and serve the resource it declares, as the API server does."""
        names = crd["spec"]["names"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                self.register_kind(
                    Kind(
                        group=crd["spec"]["group"],
                        version=version["name"],
                        plural=names["plural"],
                        kind=names["kind"],
                        namespaced=crd["spec"].get("scope", "Namespaced") == "Namespaced",
                        subresources=frozenset((version.get("subresources") or {}).keys()),
                    )
                )
        if self.get(CRD_KIND, None, crd["metadata"]["name"]) is None:
            self.create(crd)

    def uninstall_crd(self, name: str) -> None:
        crd = self.get(CRD_KIND, None, name)
        if crd is None:
            return
        self.delete(CRD_KIND, None, name)
        for version in crd["spec"]["versions"]:
            key = (crd["spec"]["group"], version["name"], crd["spec"]["names"]["plural"])
            kind = self._kinds.pop(key, None)
            if kind is not None:
                del self.resources[kind.kmock_resource]

    # ----------------------------------------------------------------------------- request log
    def operator_calls(self, since: int = 0) -> list[ApiCall]:
        """Requests made by the operator process (kmock's own test client excluded)."""
        return [call for call in self.calls[since:] if not call.user_agent.startswith("kmock/")]

    def writes(self, since: int = 0) -> list[ApiCall]:
        return [call for call in self.operator_calls(since) if call.is_write]

    # ----------------------------------------------------------------------------- HTTP entry
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's own parser fails on valid URLs such as GET /api/v1/namespaces (its 500):
        # such requests are parsed here, and every answer comes from _handle().
        try:
            request = await kmock.Request._parse(raw_request, id=len(self._requests))
        except ValueError:
            body = await raw_request.read()
            request = kmock.Request(
                id=len(self._requests),
                raw_request=raw_request,
                url=raw_request.url,
                method=raw_request.method,
                params=dict(raw_request.query),
                headers=dict(raw_request.headers),
                body=body,
                text=body.decode("utf-8", "replace"),
                data=json.loads(body) if body else None,
            )
        self._requests.append(request)
        try:
            return await self._handle(request)
        except Exception as error:  # noqa: BLE001 - an emulator bug: answer 500, keep it for the test
            if self._errors:
                self._errors[-1].append(error)
            return await self._render_error(error)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        path = parse_api_path(request.url.path, self.kind_of)
        call = self._record(request, path)
        held = 0.0  # a reply held back after the request was carried out (code 0 faults)
        try:
            for fault in self.faults:
                if (fault.times is None or fault.hits < fault.times) and fault.matches(call):
                    fault.hits += 1
                    if fault.code == 0:
                        held = fault.delay
                        break
                    if fault.delay:
                        await asyncio.sleep(fault.delay)
                    error = ApiError(
                        fault.code, "InjectedFault", f"fault injected by the test: {fault.code}"
                    )
                    error.retry_after = fault.retry_after
                    raise error
            if path is None:
                # Discovery and /version: kmock's scaffold answers those.
                response = await kmock.RawHandler._handle(self, request)
            elif call.verb == "watch":
                return await self._serve_watch_stream(request, path, call)
            else:
                code, payload = self._serve(call, path, request)
                response = aiohttp.web.json_response(payload, status=code)
        except ApiError as error:
            response = aiohttp.web.json_response(error.as_status(), status=error.code)
            if error.retry_after is not None:
                response.headers["Retry-After"] = str(error.retry_after)
        call.code = response.status
        if held:
            # Done, but the answer is late: a client that gives up (or dies) never learns it.
            await asyncio.sleep(held)
        return response

    def _record(self, request: kmock.Request, path: ApiPath | None) -> ApiCall:
        method = str(request.method.value).upper()
        headers = (
            request._raw_request.headers if request._raw_request is not None else request.headers
        )
        query = dict(request.params)
        if path is None:
            verb = method.lower()
        elif method == "GET":
            verb = (
                "watch" if query.get("watch") in ("true", "1") else "get" if path.name else "list"
            )
        else:
            verb = {
                "POST": "create",
                "PUT": "update",
                "PATCH": "patch",
                "DELETE": "delete" if path.name else "deletecollection",
            }.get(method, method.lower())
        call = ApiCall(
            method=method,
            path=request.url.path,
            query=query,
            verb=verb,
            group=None if path is None else path.group,
            resource=None if path is None else path.plural,
            subresource=None if path is None else path.subresource,
            namespace=None if path is None else path.namespace,
            name=None if path is None else path.name,
            body=request.data,
            content_type=headers.get("Content-Type", ""),
            user_agent=headers.get("User-Agent", ""),
            user=headers.get("Authorization", "").removeprefix("Bearer "),
            at=asyncio.get_running_loop().time(),
        )
        self.calls.append(call)
        return call

    def _serve(self, call: ApiCall, path: ApiPath, request: kmock.Request) -> tuple[int, Any]:
        kind = self.kind_of(path.group, path.version, path.plural)
        if kind is None:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({call.path})"
            )
        if path.subresource not in (None, *kind.subresources):
            raise ApiError(404, "NotFound", f"no subresource {path.subresource!r} on {kind.plural}")
        if call.verb == "list":
            items, rv = self.list_objects(
                kind,
                path.namespace,
                call.query.get("labelSelector", ""),
                call.query.get("fieldSelector", ""),
            )
            return 200, {
                "apiVersion": kind.api_version,
                "kind": f"{kind.kind}List",
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            }
        if call.verb == "create":
            if not isinstance(call.body, dict):
                raise ApiError(400, "BadRequest", "the body of a create must be a JSON object")
            return 201, self._create(kind, path.namespace, call.body)
        if call.verb == "get":
            obj = self.get(kind, path.namespace, path.name)
            if obj is None:
                raise self._not_found(kind, path.name)
            return 200, obj
        if call.verb == "patch":
            patch_type = call.content_type.split(";")[0].strip()
            return 200, self._patch(
                kind, path.namespace, path.name, call.body, patch_type, path.subresource
            )
        if call.verb == "update":
            return 200, self._replace(kind, path.namespace, path.name, call.body, path.subresource)
        if call.verb == "delete":
            options = call.body if isinstance(call.body, dict) else {}
            return 200, self._delete(kind, path.namespace, path.name, options)
        raise ApiError(405, "MethodNotAllowed", f"{call.method} is not supported on {call.path}")

    # ----------------------------------------------------------------------------- the store
    def _key(
        self, kind: Kind, namespace: str | None, name: str
    ) -> tuple[kmock.resource, str | None, str]:
        return (kind.kmock_resource, namespace if kind.namespaced else None, name)

    def _resolve(self, kind: Kind | str) -> Kind:
        if isinstance(kind, Kind):
            return kind
        group_version, _, plural = kind.rpartition("/")
        group, _, version = group_version.rpartition("/")
        found = self.kind_of(group, version, plural)
        if found is None:
            raise KeyError(f"unknown resource {kind!r}")
        return found

    def get(self, kind: Kind | str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object (a copy), or None."""
        kind = self._resolve(kind)
        key = self._key(kind, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def list_objects(
        self,
        kind: Kind | str,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> tuple[list[dict[str, Any]], int]:
        kind = self._resolve(kind)
        items = [
            copy.deepcopy(obj.raw)
            for (resource, obj_namespace, _), obj in self.objects.items()
            if resource == kind.kmock_resource
            and not obj.deleted
            and (namespace is None or obj_namespace == namespace)
            and matches_selectors(obj.raw, label_selector, field_selector)
        ]
        return items, self._rv

    def _not_found(self, kind: Kind, name: str | None) -> ApiError:
        return ApiError(404, "NotFound", f'{kind.plural}.{kind.group or "core"} "{name}" not found')

    def _commit(
        self, kind: Kind, new: dict[str, Any] | None, old: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Store a new version (None: removed), bump resourceVersion and tell the watchers."""
        self._rv += 1
        current = new if new is not None else copy.deepcopy(old)
        assert current is not None
        current.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
        meta = current["metadata"]
        key = self._key(kind, meta.get("namespace"), meta["name"])
        if new is None:
            self.objects[key].history.append(None)
            event_type = "DELETED"
        elif key not in self.objects:
            self.objects[key] = copy.deepcopy(current)
            event_type = "ADDED"
        else:
            event_type = "ADDED" if self.objects[key].deleted else "MODIFIED"
            self.objects[key].history.append(copy.deepcopy(current))
        self._events.append(WatchEvent(self._rv, kind, event_type, copy.deepcopy(current), old))
        self._changed.set()
        self._changed = asyncio.Event()
        return copy.deepcopy(current)

    def _create(self, kind: Kind, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        obj = canonicalise_quantities(kind, copy.deepcopy(body))
        meta = obj.setdefault("metadata", {})
        if kind.namespaced:
            namespace = namespace or meta.get("namespace")
            if not namespace:
                raise ApiError(400, "BadRequest", "the namespace of the object must be set")
            if meta.get("namespace", namespace) != namespace:
                raise ApiError(
                    400, "BadRequest", "the namespace of the object does not match the URL"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        if self.get(kind, meta.get("namespace"), meta["name"]) is not None:
            raise ApiError(409, "AlreadyExists", f'{kind.plural} "{meta["name"]}" already exists')
        if meta.get("resourceVersion"):
            raise ApiError(422, "Invalid", "metadata.resourceVersion: must be empty on create")
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=now_iso())
        meta.pop("deletionTimestamp", None)
        if "status" in kind.subresources:
            obj.pop("status", None)  # status is only written through /status
        return self._commit(kind, obj, None)

    def _write(
        self, kind: Kind, old: dict[str, Any], new: dict[str, Any], subresource: str | None
    ) -> dict[str, Any]:
        """Keep what the target (main resource or /status) may not change, then store if changed."""
        if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
            raise ApiError(422, "Invalid", "the object must be a JSON object with metadata")
        wanted_rv = (new.get("metadata") or {}).get("resourceVersion")
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kind.plural} "{old["metadata"]["name"]}": '
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        if subresource == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
        else:
            result = canonicalise_quantities(kind, copy.deepcopy(new))
            result["apiVersion"], result["kind"] = kind.api_version, kind.kind
            if "status" in kind.subresources:  # the main resource ignores status changes
                if "status" in old:
                    result["status"] = old["status"]
                else:
                    result.pop("status", None)
            meta = result.setdefault("metadata", {})
            for field in SYSTEM_METADATA + ("name", "namespace"):
                if field in old["metadata"]:
                    meta[field] = old["metadata"][field]
                else:
                    meta.pop(field, None)
            if old["metadata"].get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(
                    old["metadata"].get("finalizers") or []
                )
                if added:
                    raise ApiError(
                        422,
                        "Invalid",
                        "no new finalizers can be added if the object is being deleted",
                    )
            if self._essence(result) != self._essence(old):
                meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        result["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if result == old:
            return old  # a no-op write changes nothing, not even resourceVersion
        meta = result["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(kind, result)
            return result
        return self._commit(kind, result, old)

    @staticmethod
    def _essence(obj: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in obj.items() if key not in ("metadata", "status")}

    def _existing(self, kind: Kind, namespace: str | None, name: str | None) -> dict[str, Any]:
        obj = self.get(kind, namespace, name or "")
        if obj is None:
            raise self._not_found(kind, name)
        return obj

    def _patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str | None,
        patch: Any,
        patch_type: str,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        old = self._existing(kind, namespace, name)
        if patch_type == "application/json-patch+json":
            if not isinstance(patch, list):
                raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
            try:
                new = jsonpatch.apply_patch(old, patch, in_place=False)
            except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict) as error:
                raise ApiError(
                    422, "Invalid", f"the JSON patch cannot be applied: {error}"
                ) from None
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
                raise ApiError(400, "BadRequest", f"invalid JSON patch: {error}") from None
        elif patch_type in (
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ):
            # Strategic merge is treated as a JSON merge patch: lists are replaced, not merged.
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
            try:
                new = dict(merge_patch_dict(old, patch))
            except ValueError as error:
                raise ApiError(422, "Invalid", str(error)) from None
        else:
            raise ApiError(
                415, "UnsupportedMediaType", f"the patch type {patch_type!r} is not supported"
            )
        new = json.loads(json.dumps(new))  # plain dicts and lists, no views
        return self._write(kind, old, new, subresource)

    def _replace(
        self,
        kind: Kind,
        namespace: str | None,
        name: str | None,
        body: Any,
        subresource: str | None,
    ) -> dict[str, Any]:
        old = self._existing(kind, namespace, name)
        if not isinstance(body, dict) or not (body.get("metadata") or {}).get("resourceVersion"):
            raise ApiError(
                422, "Invalid", "metadata.resourceVersion: must be specified for an update"
            )
        return self._write(kind, old, copy.deepcopy(body), subresource)

    def _delete(
        self, kind: Kind, namespace: str | None, name: str | None, options: dict[str, Any]
    ) -> dict[str, Any]:
        obj = self._existing(kind, namespace, name)
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            return obj
        if meta.get("finalizers"):
            marked = copy.deepcopy(obj)
            marked["metadata"]["deletionTimestamp"] = now_iso()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._commit(kind, marked, obj)
        self._remove(kind, obj, orphan=options.get("propagationPolicy") == "Orphan")
        return obj

    def _remove(self, kind: Kind, obj: dict[str, Any], *, orphan: bool = False) -> None:
        """Remove for good, then collect the garbage: dependents whose owners are all gone."""
        self._commit(kind, None, obj)
        if orphan:
            return
        gone_uid = obj["metadata"]["uid"]
        live_uids = {o.raw["metadata"]["uid"] for o in self.objects.values() if not o.deleted}
        for (resource, namespace, name), stored in list(self.objects.items()):
            if stored.deleted:
                continue
            owners = stored.raw["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") == gone_uid for ref in owners) and not any(
                ref.get("uid") in live_uids for ref in owners
            ):
                dependent_kind = self.kind_of(resource.group, resource.version, resource.plural)
                if (
                    dependent_kind is not None
                    and self.get(dependent_kind, namespace, name) is not None
                ):
                    self._delete(dependent_kind, namespace, name, {})

    # ----------------------------------------------------------------------------- watching
    async def _serve_watch_stream(
        self, request: kmock.Request, path: ApiPath, call: ApiCall
    ) -> aiohttp.web.StreamResponse:
        kind = self.kind_of(path.group, path.version, path.plural)
        if kind is None:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({call.path})"
            )
        label_selector = call.query.get("labelSelector", "")
        field_selector = call.query.get("fieldSelector", "")
        since = call.query.get("resourceVersion", "")
        timeout = float(call.query.get("timeoutSeconds", "0") or 0)
        if since and not since.isdigit():
            raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}")

        def selected(obj: dict[str, Any] | None) -> bool:
            if obj is None:
                return False
            namespace = obj.get("metadata", {}).get("namespace")
            if path.namespace is not None and namespace != path.namespace:
                return False
            if path.name is not None and obj["metadata"]["name"] != path.name:
                return False
            return matches_selectors(obj, label_selector, field_selector)

        pending: list[dict[str, Any]] = []
        if since in ("", "0"):
            items, _ = self.list_objects(kind, path.namespace, label_selector, field_selector)
            pending = [{"type": "ADDED", "object": item} for item in items if selected(item)]
            position = len(self._events)
        else:
            position = next(
                (i for i, e in enumerate(self._events) if e.rv > int(since)), len(self._events)
            )

        response = aiohttp.web.StreamResponse(
            status=200, headers={"Content-Type": "application/json"}
        )
        raw = request._raw_request
        assert raw is not None
        await response.prepare(raw)
        call.code = 200
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        try:
            while True:
                while position < len(self._events):
                    event = self._events[position]
                    position += 1
                    if event.kind.key != kind.key:
                        continue
                    now_in, was_in = selected(event.obj), selected(event.old)
                    if event.type == "DELETED" and was_in:
                        pending.append({"type": "DELETED", "object": event.obj})
                    elif event.type != "DELETED" and now_in:
                        pending.append(
                            {"type": "ADDED" if not was_in else event.type, "object": event.obj}
                        )
                    elif event.type != "DELETED" and was_in:  # left the selection
                        pending.append({"type": "DELETED", "object": event.obj})
                for item in pending:
                    await response.write(json.dumps(item).encode() + b"\n")
                pending = []
                if deadline is not None and loop.time() >= deadline:
                    break
                transport = raw.transport
                if transport is None or transport.is_closing():
                    break
                changed = self._changed
                try:
                    await asyncio.wait_for(changed.wait(), WATCH_POLL_SECONDS)
                except TimeoutError:
                    pass
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response

    # ----------------------------------------------------------------------------- test helpers
    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create as `kubectl create` would (not recorded as an operator request)."""
        kind = self.kind_named(obj["apiVersion"], obj["kind"])
        return self._create(kind, obj.get("metadata", {}).get("namespace"), obj)

    def patch(
        self,
        kind: Kind | str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        subresource: str | None = None,
        patch_type: str = "application/merge-patch+json",
    ) -> dict[str, Any]:
        """Patch as `kubectl patch --type=merge` would."""
        return self._patch(self._resolve(kind), namespace, name, patch, patch_type, subresource)

    def delete(self, kind: Kind | str, namespace: str | None, name: str) -> None:
        """Delete as `kubectl delete` would (background propagation)."""
        self._delete(self._resolve(kind), namespace, name, {})

    def fail(
        self,
        matches: Callable[[ApiCall], bool],
        code: int = 500,
        *,
        times: int | None = None,
        delay: float = 0.0,
        retry_after: int | None = None,
    ) -> Fault:
        """Answer the matching requests with `code` (`times` times); remove with `faults.remove()`.

        `delay` answers late (longer than the client's timeout: a timeout); code 0 carries the
        request out and then holds the reply for `delay` seconds."""
        fault = Fault(matches, code, times, delay, retry_after)
        self.faults.append(fault)
        return fault

    def set_deployment_rollout(
        self,
        namespace: str,
        name: str,
        *,
        ready: int | None = None,
        stalled: bool = False,
        replica_failure: str | None = None,
    ) -> dict[str, Any]:
        """Write the status the Deployment controller would report with `ready` replicas ready.

        `ready` defaults to all desired replicas; `stalled` marks the rollout as past its
        progress deadline; `replica_failure` is a ReplicaFailure message (pods cannot be created).
        """
        deployment = self.get("apps/v1/deployments", namespace, name)
        if deployment is None:
            raise KeyError(f"no deployment {namespace}/{name}")
        desired = int(deployment["spec"].get("replicas", 1))
        ready = desired if ready is None else min(ready, desired)
        stamp = now_iso()

        def condition(type_: str, status: bool, reason: str, message: str) -> dict[str, Any]:
            return {
                "type": type_,
                "status": "True" if status else "False",
                "reason": reason,
                "message": message,
                "lastUpdateTime": stamp,
                "lastTransitionTime": stamp,
            }

        if stalled:
            progressing = condition(
                "Progressing",
                False,
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{name}-5d8f7c9b4" has timed out progressing.',
            )
        elif ready == desired:
            progressing = condition(
                "Progressing",
                True,
                "NewReplicaSetAvailable",
                f'ReplicaSet "{name}-5d8f7c9b4" has successfully progressed.',
            )
        else:
            progressing = condition(
                "Progressing",
                True,
                "ReplicaSetUpdated",
                f'ReplicaSet "{name}-5d8f7c9b4" is progressing.',
            )
        minimum = desired - max(1, desired // 4) if desired > 1 else desired  # maxUnavailable 25%
        available = ready >= minimum
        conditions = [
            condition(
                "Available",
                available,
                "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
            ),
            progressing,
        ]
        if replica_failure:
            conditions.append(condition("ReplicaFailure", True, "FailedCreate", replica_failure))
        status: dict[str, Any] = {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": desired,
            "updatedReplicas": desired,
            "conditions": conditions,
        }
        # The controller omits zero counts (omitempty), so do we.
        if ready:
            status.update(readyReplicas=ready, availableReplicas=ready)
        if desired - ready:
            status["unavailableReplicas"] = desired - ready
        return self.patch(
            "apps/v1/deployments", namespace, name, {"status": status}, subresource="status"
        )


def load_documents(paths: Iterable[str]) -> list[dict[str, Any]]:
    import yaml

    documents: list[dict[str, Any]] = []
    for path in paths:
        with open(path, encoding="utf-8") as stream:
            documents.extend(doc for doc in yaml.safe_load_all(stream) if doc)
    return documents
