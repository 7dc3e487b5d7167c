"""The runtime's one settings object, read from ``MLMODEL_*`` environment variables.

The operator passes exactly these variables to every runtime container (see
``mlmodel_spec.runtime_settings``), and ``mlmodel serve`` builds them from an MLModel YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from mlmodel_spec.model_uris import MODEL_MOUNT_DIR
from mlmodel_spec.runtime_settings import ENV_PREFIX
from mlmodel_store.urls import default_cache_dir
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ENV_PREFIX", "RuntimeSettings", "default_cache_dir"]


class RuntimeSettings(BaseSettings):
    """Everything one runtime process needs; built once at the entry point and passed down."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", protected_namespaces=())

    # --- the model -----------------------------------------------------------------------
    model_name: str = Field(
        "model",
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,252}$",
        description="Name the model is served under (/v2/models/{name}); the MLModel's metadata.name.",
    )
    model_version: str = Field("", description="Free-form version reported in metadata and metrics.")
    model_uri: str = Field(
        "",
        description=(
            "Where the artifact lives: a local path, file://, http(s)://, s3://bucket/key, or a file "
            "in the volume mounted at model_mount_dir: pvc://claim/path, oci://registry/repo:tag[#path]."
        ),
    )
    model_mount_dir: Path = Field(
        Path(MODEL_MOUNT_DIR),
        description=(
            "Where the volume a pvc:// or oci:// model_uri names is mounted (the operator mounts "
            "it here read-only); point it at a local copy to serve such a URI outside a cluster."
        ),
    )
    model_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="Expected sha256 of the artifact, checked before anything is loaded.",
    )
    model_format: Literal["sklearn", "onnx"] = Field(
        "sklearn", description="Artifact format: 'sklearn' (joblib/pickle) or 'onnx'."
    )
    allow_unverified_artifact: bool = Field(
        False,
        description=(
            "Load a pickle-based artifact that has no sha256. Loading a pickle runs code, so this "
            "is refused by default; switch it on for development only."
        ),
    )

    # --- artifact pull -----------------------------------------------------------------------
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="Writable folder where artifacts are downloaded (the only place the runtime writes).",
    )
    artifact_max_bytes: int = Field(
        2 * 1024**3, gt=0, description="Refuse artifacts larger than this many bytes."
    )
    artifact_connect_timeout_seconds: float = Field(
        10.0, gt=0, description="Timeout to connect to the artifact store."
    )
    artifact_read_timeout_seconds: float = Field(
        60.0, gt=0, description="Timeout between two chunks of an artifact download."
    )
    artifact_download_timeout_seconds: float = Field(
        3600.0,
        gt=0,
        description=(
            "Longest one download attempt may take in total, so a server trickling bytes just under "
            "the read timeout cannot hold the runtime forever."
        ),
    )
    artifact_retry_max_seconds: float = Field(
        60.0,
        gt=0,
        description="Longest wait between two attempts to fetch an unreachable artifact (backoff cap).",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description=(
            "S3 endpoint for s3:// URIs (MinIO or another S3-compatible store); credentials come from "
            "the usual AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION variables."
        ),
    )

    # --- serving -----------------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="Address to listen on.")
    port: int = Field(8080, ge=1, le=65535, description="HTTP port for predictions, health and metrics.")
    grpc_port: int = Field(
        8081,
        ge=0,
        le=65535,
        description=(
            "Port of the Open Inference Protocol's gRPC service (inference.GRPCInferenceService), "
            "served beside HTTP by every worker; 0 turns gRPC off. A port already in use is logged "
            "as an error and the runtime serves HTTP only."
        ),
    )
    grpc_front: str = Field(
        "auto",
        description=(
            "The gRPC front (mlmodel-grpc-front, a Go binary that terminates HTTP/2 and hands each "
            "call to a worker over a Unix socket; one for all the workers): auto uses it when it is "
            "beside the Python "
            "interpreter or on PATH (the image has it), off serves gRPC with grpc.aio, a path "
            "names the binary. See docs/protocols.md."
        ),
    )
    grpc_acceptors: int = Field(
        16,
        ge=1,
        le=64,
        description=(
            "grpc.aio only (without the gRPC front): servers each worker runs on the gRPC port "
            "(SO_REUSEPORT; the kernel spreads "
            "connections over them). grpc.aio takes a server's new calls one after another, so one "
            "server lets few calls reach the batcher together; see docs/protocols.md."
        ),
    )
    workers: int = Field(1, ge=1, le=64, description="Worker processes (one per core on multi-core nodes).")
    max_request_bytes: int = Field(
        10 * 1024**2, gt=0, description="Largest request body accepted; larger ones get 413."
    )
    max_batch_size: int = Field(
        64, ge=1, le=4096, description="Most rows coalesced into one model call by adaptive batching."
    )
    max_batch_wait_ms: float = Field(
        0.0,
        ge=0,
        description=(
            "Longest the batcher waits for more requests to fill a batch once several are queued. "
            "0 (the default): a batch is whatever queued while the model was busy, which measured "
            "best on CPU models (docs/performance.md)."
        ),
    )
    max_instances_per_request: int = Field(
        10_000,
        ge=1,
        description=(
            "Most rows (V2 tensor rows or V1 instances) one request may hold; more get 413 with a "
            "message, so one client cannot monopolise the model or its memory."
        ),
    )
    max_concurrent_requests: int = Field(
        1024,
        ge=1,
        description="Predictions in flight beyond this are shed with 503 and Retry-After.",
    )
    max_request_bytes_in_flight: int = Field(
        64 * 1024**2,
        gt=0,
        description=(
            "Request bytes the prediction endpoints hold at once (a body of unknown length counts "
            "as max_request_bytes); beyond it new requests are shed with 503 and Retry-After "
            "before their bodies are read, which bounds memory under a flood of large requests."
        ),
    )
    shutdown_grace_seconds: float = Field(
        20.0, ge=0, description="On SIGTERM, time allowed for in-flight requests before exit."
    )
    shutdown_drain_seconds: float = Field(
        2.0,
        ge=0,
        description=(
            "On SIGTERM, keep accepting requests (readiness already false) for at least this long, "
            "so load balancers stop routing here before the port closes; capped by "
            "shutdown_grace_seconds. Ctrl-C (SIGINT) skips it."
        ),
    )
    auth_token_file: Path | None = Field(
        None,
        description="File holding bearer tokens (one per line) required on prediction endpoints.",
    )

    # --- identity (set by the operator through the downward API) --------------------------------
    namespace: str = Field("default", description="Namespace of the MLModel this runtime serves.")
    pod_name: str = Field("", description="Name of this pod (defaults to the host name).")

    # --- metadata store ------------------------------------------------------------------------
    database_url: SecretStr | None = Field(
        None,
        description=(
            "PostgreSQL URL for deployment metadata (postgresql://...). Empty: SQLite in the cache dir."
        ),
    )
    metadata_heartbeat_seconds: float = Field(
        30.0, gt=0, description="How often this process refreshes its last-seen time in the store."
    )
    prediction_log_sample_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="Fraction of predictions recorded in the metadata store."
    )

    # --- prediction cache (spec.cache) ----------------------------------------------------------
    cache_redis_url: SecretStr | None = Field(
        None,
        description=(
            "Redis URL (redis://[:password@]host:6379/0, rediss:// or unix://) of the prediction "
            "cache; unset: no cache. Repeat requests are answered from it until cache_ttl_seconds."
        ),
    )
    cache_ttl_seconds: int = Field(3600, ge=1, description="How long a cached answer is kept.")
    cache_max_entry_bytes: int = Field(
        1024**2, ge=1, description="Answers larger than this many bytes are not cached."
    )
    cache_timeout_ms: float = Field(
        100.0,
        gt=0,
        description=(
            "Longest one Redis call may take; past it the model answers and the cache is left "
            "alone for a moment (0.5 s, doubling to 5 s while it keeps failing)."
        ),
    )

    revision: str = Field(
        "stable",
        description=(
            "Which revision this process serves, said in the x-mlmodel-revision header of every "
            "prediction: 'canary' for the pods of spec.canary's candidate."
        ),
    )

    # --- shadow traffic (spec.shadow) -----------------------------------------------------------
    shadow_url: str | None = Field(
        None,
        description=(
            "Base URL of a shadow runtime (http://HOST:PORT) that sampled predictions are mirrored "
            "to after the client is answered; unset: none. Its agreement is in the metrics."
        ),
    )
    shadow_model_name: str | None = Field(
        None,
        description=(
            "The name the shadow runtime serves its model under (/v2/models/NAME); unset: "
            "model_name. A candidate deployed as an MLModel of its own has its own name."
        ),
    )
    shadow_sample_rate: float = Field(
        0.1, ge=0.0, le=1.0, description="Fraction of predictions mirrored to the shadow."
    )
    shadow_tolerance: float = Field(
        1e-3,
        ge=0.0,
        description="Relative error within which numeric predictions agree (labels must be equal).",
    )
    shadow_timeout_seconds: float = Field(
        2.0, gt=0, description="Longest a mirrored request may take before it counts as failed."
    )
    shadow_max_in_flight: int = Field(
        16, ge=1, description="Mirrored requests at once; past it predictions are not mirrored."
    )

    # --- logs ----------------------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["json", "text"] = Field(
        "json", description="'json': one ECS JSON object per line; 'text': for humans at a terminal."
    )
    access_log: bool = Field(True, description="Log one line per HTTP request.")

    @field_validator("model_sha256")
    @classmethod
    def _lowercase_digest(cls, value: str | None) -> str | None:
        return value.lower() if value else value
