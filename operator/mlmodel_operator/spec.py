"""A typed, defaulted view of an MLModel as the operator serves it in a cluster.

The CRD schema rejects most bad input at ``kubectl apply``; what it lets through but a cluster
cannot serve (a relative artifact path, say) raises ``InvalidSpec`` here, with what to fix.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

API_GROUP = "serving.mlmodel.io"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "MLModel"
PLURAL = "mlmodels"

SHA256_PATTERN = r"^[a-f0-9]{64}$"
# Mirrors the CRD's rule on spec.model.uri: a supported scheme, or a path without a scheme.
URI_PATTERN = r"^((https?|file)://[^ ]+|s3://[^/ ]+/[^ ]+|[^ :]+)$"
REMOTE_OR_ABSOLUTE = re.compile(r"^((https?|s3|file)://|/)")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# The Prometheus Operator accepts units only in this order; "1s1m" would be refused there.
DURATION_PATTERN = r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"


class InvalidSpec(ValueError):
    """An MLModel the schema let through but the operator cannot serve; the message says what to fix."""


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
    sha256: str | None = Field(None, pattern=SHA256_PATTERN)
    format: Literal["sklearn", "onnx"] = "sklearn"
    version: str = ""
    allow_unverified: bool = False
    credentials_secret: LocalObjectRef | None = None
    s3_endpoint_url: str | None = None

    @model_validator(mode="after")
    def _digest_or_opt_out(self) -> ModelSource:
        if self.sha256 is None and not self.allow_unverified:
            raise ValueError(
                "spec.model.sha256 is required (the runtime refuses unverified artifacts); "
                "set spec.model.allowUnverified: true only for development"
            )
        return self


class RuntimeSpec(_Spec):
    image: str | None = None
    resources: dict[str, dict[str, str | int]] | None = None
    env: list[dict[str, Any]] = []
    workers: int = Field(1, ge=1, le=64)
    image_pull_secrets: list[LocalObjectRef] = []


class Autoscaling(_Spec):
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(ge=1)
    target_cpu_utilization_percentage: int = Field(
        70, ge=1, le=100, alias="targetCPUUtilizationPercentage"
    )

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


class NetworkPolicySpec(_Spec):
    enabled: bool = False
    allowed_namespaces: list[str] = []


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
    network_policy: NetworkPolicySpec = NetworkPolicySpec()
    node_selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    service_account_name: str = ""

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> MLModelSpec:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("set spec.replicas or spec.autoscaling, not both")
        return self


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in ("spec", *item["loc"]))
        message = item["msg"].removeprefix("Value error, ")
        parts.append(message if message.startswith("spec.") else f"{where}: {message}")
    return "; ".join(parts)


def parse_spec(mlmodel: dict) -> MLModelSpec:
    """The MLModel's spec with defaults applied, or ``InvalidSpec`` saying what to fix."""
    name = mlmodel.get("metadata", {}).get("name", "")
    if not (DNS1035_LABEL.match(name) and len(name) <= 63):
        raise InvalidSpec(
            f"metadata.name {name!r} must be a DNS-1035 label (at most 63 lowercase letters, "
            "digits and '-', starting with a letter) because it names the Service"
        )
    try:
        spec = MLModelSpec.model_validate(mlmodel.get("spec") or {})
    except ValidationError as error:
        raise InvalidSpec(_describe(error)) from None
    if not REMOTE_OR_ABSOLUTE.match(spec.model.uri):
        raise InvalidSpec(
            f"spec.model.uri {spec.model.uri!r} is a relative path, which only `mlmodel serve` can "
            "read (relative to the YAML's folder); in a cluster use an https://, s3:// or file:// "
            "URI, or an absolute path inside the runtime image"
        )
    return spec


# Spec parts that change what a pod runs; a change to any of them must roll the pods.
_ROLLOUT_FIELDS = (
    "model",
    "runtime",
    "batching",
    "database",
    "prediction_logging",
    "auth",
    "node_selector",
    "tolerations",
    "service_account_name",
)


def rollout_hash(spec: MLModelSpec) -> str:
    """Short, stable digest of the spec parts that require new pods (defaults applied)."""
    parts = spec.model_dump(include=set(_ROLLOUT_FIELDS), by_alias=True, mode="json")
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
