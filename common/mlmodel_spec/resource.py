"""The MLModel resource's spec: the one reader of it, for the operator and `mlmodel serve` alike.

The CRD schema rejects most bad input at ``kubectl apply``; what it lets through but a cluster
cannot serve (a relative artifact path, a reserved env name...) raises ``InvalidSpec`` here, with
what to fix. ``mlmodel serve`` reads the same file with ``in_cluster=False``: only the rules about
running in a cluster are relaxed there (see ``parse_spec``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from mlmodel_spec.model_uris import OCI_URI_PATTERN, PVC_URI_PATTERN
from mlmodel_spec.runtime_settings import MANAGED_ENV

API_GROUP = "serving.mlmodel.io"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "MLModel"
PLURAL = "mlmodels"

SHA256_PATTERN = r"^[a-f0-9]{64}$"
_ANY_CASE_SHA256 = r"^[a-fA-F0-9]{64}$"
# Mirrors the CRD's rule on spec.model.uri: a supported scheme, or a path without a scheme.
URI_PATTERN = (
    rf"^((https?|file)://[^ ]+|s3://[^/ ]+/[^ ]+|{PVC_URI_PATTERN}|{OCI_URI_PATTERN}|[^ :]+)$"
)
REMOTE_OR_ABSOLUTE = re.compile(r"^((https?|s3|file|pvc|oci)://|/)")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# The Prometheus Operator accepts units only in this order; "1s1m" would be refused there.
DURATION_PATTERN = r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
# A Kubernetes resource quantity, as the CRD (and the API server's OpenAPI) spells it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


# The candidate of spec.shadow runs as Deployment and Service NAME + this suffix; the one of
# spec.canary as Deployment NAME + its suffix.
SHADOW_SUFFIX = "-shadow"
CANARY_SUFFIX = "-canary"


class InvalidSpec(ValueError):
    """An MLModel the schema let through but the operator cannot serve; the message says what to fix."""


def _in_cluster(info: ValidationInfo) -> bool:
    """Whether the rules about running in a cluster apply (``parse_spec(in_cluster=...)``)."""
    return bool((info.context or {}).get("in_cluster", True))


class _Spec(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class LocalObjectRef(_Spec):
    name: str = Field(min_length=1)


class SecretKeyRef(_Spec):
    name: str = Field(min_length=1)
    key: str = Field(min_length=1)


class SecretKeyHolder(_Spec):
    secret_ref: SecretKeyRef


class ModelSource(_Spec):
    uri: str = Field(min_length=1, max_length=2048, pattern=URI_PATTERN)
    # Any case here; a cluster takes lowercase only (the CRD's pattern), the runtime lowercases.
    sha256: str | None = Field(None, pattern=_ANY_CASE_SHA256)
    format: Literal["sklearn", "onnx"] = "sklearn"
    # A string in the CRD; a hand-written `version: 1.5` in a file for `mlmodel serve` is one too.
    version: Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int | float) else v)] = ""
    allow_unverified: bool = False
    credentials_secret: LocalObjectRef | None = None
    s3_endpoint_url: str | None = None

    @field_validator("sha256")
    @classmethod
    def _lowercase_in_cluster(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and _in_cluster(info) and not re.match(SHA256_PATTERN, value):
            raise ValueError(f"String should match pattern '{SHA256_PATTERN}'")
        return value

    @model_validator(mode="after")
    def _digest_or_opt_out(self, info: ValidationInfo) -> ModelSource:
        # Locally the runtime itself refuses an unverified pickle, and an ONNX file needs no opt-out.
        if self.sha256 is None and not self.allow_unverified and _in_cluster(info):
            raise ValueError(
                "spec.model.sha256 is required (the runtime refuses unverified artifacts); "
                "set spec.model.allowUnverified: true only for development"
            )
        return self


Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN)] | int


class RuntimeSpec(_Spec):
    image: str | None = None
    resources: dict[str, dict[str, Quantity]] | None = None
    env: list[dict[str, Any]] = []
    workers: int = Field(1, ge=1, le=64)
    image_pull_secrets: list[LocalObjectRef] = []

    @field_validator("env")
    @classmethod
    def _no_managed_names(cls, env: list[dict[str, Any]], info: ValidationInfo) -> list[dict[str, Any]]:
        # A user entry with one of these names would silently fight the spec field it comes from.
        for index, entry in enumerate(env):
            if entry.get("name") in MANAGED_ENV and _in_cluster(info):
                raise ValueError(
                    f"spec.runtime.env[{index}].name {entry['name']} is set by the operator from "
                    "the MLModel's own fields; set that field instead"
                )
        return env

    def requests_cpu(self) -> bool:
        """A CPU request (or limit) is set, or none of resources is, so the operator's default CPU
        request applies."""
        if self.resources is None:
            return True
        return any("cpu" in self.resources.get(kind, {}) for kind in ("requests", "limits"))


class Autoscaling(_Spec):
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(ge=1)
    target_cpu_utilization_percentage: int = Field(
        70, ge=1, le=100, alias="targetCPUUtilizationPercentage"
    )
    scale_down_stabilization_seconds: int | None = Field(None, ge=0, le=3600)

    @model_validator(mode="after")
    def _min_le_max(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("spec.autoscaling.minReplicas must not exceed maxReplicas")
        return self


class Batching(_Spec):
    max_batch_size: int = Field(64, ge=1, le=4096)
    max_wait_ms: float = Field(0.0, ge=0, le=1000)


class ServiceSpec(_Spec):
    port: int = Field(80, ge=1, le=65535)
    grpc_port: int = Field(8081, ge=1, le=65535)

    @model_validator(mode="after")
    def _distinct_ports(self) -> ServiceSpec:
        if self.port == self.grpc_port:
            raise ValueError("spec.service.port and spec.service.grpcPort must differ")
        return self


class Monitoring(_Spec):
    service_monitor: bool = True
    interval: str | None = Field(None, pattern=DURATION_PATTERN, min_length=1)
    labels: dict[str, str] = {}


class PredictionLogging(_Spec):
    sample_rate: float = Field(0.0, ge=0.0, le=1.0)


class CacheSpec(_Spec):
    """The prediction cache: repeat requests answered from Redis (the URL in a Secret)."""

    redis: SecretKeyHolder
    ttl_seconds: int = Field(3600, ge=1, le=30 * 86400)
    # Redis refuses values over 512 MB.
    max_entry_bytes: int = Field(1024**2, ge=1, le=512 * 1024**2)


class RolloutSpec(_Spec):
    """How a new revision replaces the one serving (docs/rollouts.md)."""

    # Serve the last Ready revision again when a new one fails (the spec is never rewritten).
    auto_rollback: bool = True
    # The Deployment's progressDeadlineSeconds; unset: the operator's setting (600 by default).
    progress_deadline_seconds: int | None = Field(None, ge=10, le=86400)


class ShadowSpec(_Spec):
    """A candidate model run in the shadow of the served one (docs/rollouts.md)."""

    model: ModelSource
    sample_rate: float = Field(0.1, ge=0.0, le=1.0)
    tolerance: float = Field(1e-3, ge=0.0)


class CanaryAnalysis(_Spec):
    """When a canary passes: after window_seconds with min_requests on each revision, its error
    rate at most max_error_rate_increase above the stable one's, its p99 at most
    max_latency_ratio times the stable one's (or within latency_margin_ms of it: below that,
    a difference is noise)."""

    window_seconds: int = Field(120, ge=10, le=3600)
    min_requests: int = Field(50, ge=1)
    max_error_rate_increase: float = Field(0.01, ge=0.0, le=1.0)
    max_latency_ratio: float = Field(1.5, ge=1.0)
    latency_margin_ms: float = Field(20.0, ge=0.0)


class CanarySpec(_Spec):
    """A candidate model taking a share of the traffic, by its share of the pods (docs/rollouts.md)."""

    model: ModelSource
    weight: int = Field(ge=1, le=99)
    analysis: CanaryAnalysis = CanaryAnalysis()


class NetworkPolicySpec(_Spec):
    enabled: bool = False
    allowed_namespaces: list[str] = []


# A host name as an Ingress rule and an HTTPRoute take it: a lowercase DNS-1123 subdomain
# (labels of at most 63 characters).
HOSTNAME_PATTERN = (
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
)
# A URL path prefix both the Ingress and the Gateway API accept: "/" or segments that are never
# "." or ".." and hold no "//", "%2F" or other character a proxy would treat specially.
PATH_PREFIX_PATTERN = r"^(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*/?$"


class IngressSpec(_Spec):
    host: str = Field(min_length=1, max_length=253, pattern=HOSTNAME_PATTERN)
    path: str = Field("/", min_length=1, max_length=1024, pattern=PATH_PREFIX_PATTERN)
    class_name: str | None = Field(None, min_length=1)
    tls_secret_name: str | None = Field(None, min_length=1)
    annotations: dict[str, str] = {}


class ParentRef(_Spec):
    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = Field(None, min_length=1, max_length=63)
    section_name: str | None = Field(None, min_length=1, max_length=253)


class GatewaySpec(_Spec):
    parent_refs: list[ParentRef] = Field(min_length=1, max_length=32)
    hostnames: list[Annotated[str, Field(max_length=253, pattern=HOSTNAME_PATTERN)]] = Field(
        [], max_length=16
    )
    path: str = Field("/", min_length=1, max_length=1024, pattern=PATH_PREFIX_PATTERN)


class MLModelSpec(_Spec):
    model: ModelSource
    runtime: RuntimeSpec = RuntimeSpec()
    replicas: int | None = Field(None, ge=0, le=1000)
    autoscaling: Autoscaling | None = None
    batching: Batching = Batching()
    service: ServiceSpec = ServiceSpec()
    monitoring: Monitoring = Monitoring()
    database: SecretKeyHolder | None = None
    prediction_logging: PredictionLogging = PredictionLogging()
    auth: SecretKeyHolder | None = None
    cache: CacheSpec | None = None
    network_policy: NetworkPolicySpec = NetworkPolicySpec()
    node_selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    service_account_name: str = ""
    ingress: IngressSpec | None = None
    gateway: GatewaySpec | None = None
    rollout: RolloutSpec = RolloutSpec()
    shadow: ShadowSpec | None = None
    canary: CanarySpec | None = None

    @model_validator(mode="after")
    def _one_candidate(self) -> MLModelSpec:
        if self.shadow is not None and self.canary is not None:
            raise ValueError(
                "set spec.shadow or spec.canary, not both: one candidate at a time"
            )
        return self

    @model_validator(mode="after")
    def _ingress_or_gateway(self) -> MLModelSpec:
        if self.ingress is not None and self.gateway is not None:
            raise ValueError(
                "set spec.ingress or spec.gateway, not both: each alone makes the model's one "
                "external route"
            )
        return self

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self, info: ValidationInfo) -> MLModelSpec:
        if self.replicas is not None and self.autoscaling is not None and _in_cluster(info):
            raise ValueError("set spec.replicas or spec.autoscaling, not both")
        return self

    @model_validator(mode="after")
    def _autoscaling_has_a_cpu_request(self, info: ValidationInfo) -> MLModelSpec:
        if self.autoscaling is not None and not self.runtime.requests_cpu() and _in_cluster(info):
            raise ValueError(
                "spec.autoscaling scales on CPU utilisation, which needs "
                "spec.runtime.resources.requests.cpu (or limits.cpu)"
            )
        return self


def _missing(loc: tuple[str, ...]) -> list[str]:
    """What to write for a missing field: the field, or the fields a missing section requires."""
    model: Any = MLModelSpec
    for part in loc:
        fields = {info.alias or name: info for name, info in model.model_fields.items()}
        model = fields[part].annotation if part in fields else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            break
    where = ".".join(["spec", *loc])
    if isinstance(model, type) and issubclass(model, BaseModel):
        required = [info.alias or name for name, info in model.model_fields.items() if info.is_required()]
        return [f"{where}.{name} is required" for name in required]
    return [f"{where} is required"]


def _describe(error: ValidationError) -> str:
    parts: list[str] = []
    for item in error.errors():
        if "int" in item["loc"]:
            continue  # a quantity is a string or an integer: the string's complaint says it all
        # Union members add their type name to the location.
        path = [str(p) for p in item["loc"] if p not in ("str", "int", "constrained-str")]
        where = ".".join(["spec", *path])
        if item["type"] == "missing":
            parts.extend(_missing(tuple(path)))
        elif item["type"] in ("model_type", "dict_type", "model_attributes_type"):
            parts.append(f"{where} must be a mapping")
        else:
            message = item["msg"].removeprefix("Value error, ")
            parts.append(message if message.startswith("spec.") else f"{where}: {message}")
    return "; ".join(dict.fromkeys(parts))


def parse_spec(mlmodel: dict, *, in_cluster: bool = True) -> MLModelSpec:
    """The MLModel's spec with defaults applied, or ``InvalidSpec`` saying what to fix.

    ``in_cluster=False``: read as `mlmodel serve` serves it, not a cluster. A relative artifact path
    (resolved against the file's folder), an uppercase digest, a missing digest (the runtime
    refuses an unverified pickle itself) and any model name the runtime takes are fine there;
    the rules about the pods a cluster runs (reserved env names, replicas beside autoscaling,
    autoscaling's CPU request) are not checked.
    """
    metadata = mlmodel.get("metadata") or {}
    name = metadata.get("name", "") if isinstance(metadata, dict) else ""
    if not in_cluster:
        if not isinstance(name, str) or not name:
            raise InvalidSpec("metadata.name is required: it names the model (/v2/models/{name})")
    elif not (isinstance(name, str) and DNS1035_LABEL.match(name) and len(name) <= 63):
        raise InvalidSpec(
            f"metadata.name {name!r} must be a DNS-1035 label (at most 63 lowercase letters, "
            "digits and '-', starting with a letter) because it names the Service"
        )
    try:
        spec = MLModelSpec.model_validate(mlmodel.get("spec") or {}, context={"in_cluster": in_cluster})
    except ValidationError as error:
        raise InvalidSpec(_describe(error)) from None
    for section, candidate, suffix in (
        ("shadow", spec.shadow, SHADOW_SUFFIX),
        ("canary", spec.canary, CANARY_SUFFIX),
    ):
        if not in_cluster or candidate is None:
            continue
        if len(name) > 63 - len(suffix):
            raise InvalidSpec(
                f"metadata.name must be at most {63 - len(suffix)} characters with spec.{section}: "
                f"the candidate's children are named NAME{suffix}"
            )
        if not REMOTE_OR_ABSOLUTE.match(candidate.model.uri):
            raise InvalidSpec(
                f"spec.{section}.model.uri {candidate.model.uri!r} is a relative path; in a cluster "
                "use an https://, s3://, pvc:// or oci:// URI, or an absolute path inside the "
                "runtime image"
            )
    if in_cluster and not REMOTE_OR_ABSOLUTE.match(spec.model.uri):
        raise InvalidSpec(
            f"spec.model.uri {spec.model.uri!r} is a relative path, which only `mlmodel serve` can "
            "read (relative to the YAML's folder); in a cluster use an https://, s3://, pvc:// or "
            "oci:// URI, or an absolute path inside the runtime image"
        )
    return spec

