"""The operator's one settings object, read from ``MLMODEL_OPERATOR_*`` environment variables.

Built once by ``mlmodel operator`` (or ``mlmodel render``) and passed down to every builder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from mlmodel_spec.resource import DURATION_PATTERN, QUANTITY_PATTERN
from mlmodel_store.urls import default_cache_dir, url_scheme
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "MLMODEL_OPERATOR_"


class OperatorSettings(BaseSettings):
    """Defaults the operator applies to every MLModel that does not say otherwise."""

    # hide_input_in_errors: a rejected database URL must not be echoed with its password.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", hide_input_in_errors=True
    )

    # --- what the operator watches ---------------------------------------------------------
    namespace: str = Field(
        "",
        description="Namespace whose MLModels are reconciled; empty means every namespace.",
    )
    resync_interval_seconds: float = Field(
        60.0,
        gt=0,
        description="How often every MLModel is checked again to repair drift in its children.",
    )
    api_timeout_seconds: float = Field(
        30.0, gt=0, description="Timeout of one Kubernetes API request made by the operator."
    )
    crd_check_interval_seconds: float = Field(
        60.0,
        ge=0,
        description="How long the answer to 'is the ServiceMonitor (or the HTTPRoute) CRD "
        "installed?' is reused.",
    )
    metrics_port: int = Field(
        9090,
        ge=0,
        le=65535,
        description="Port of the operator's own Prometheus /metrics endpoint; 0 turns it off.",
    )
    max_concurrent_reconciles: int = Field(
        32,
        ge=1,
        description=(
            "Reconcile passes run at once (as controller-runtime's MaxConcurrentReconciles): a "
            "thousand MLModels applied together queue here instead of all holding requests."
        ),
    )
    max_api_connections: int = Field(
        16,
        ge=1,
        description=(
            "Connections the operator's writes (Server-Side Apply, status) keep open to the API "
            "server; more requests wait for one. Each TLS connection holds about 0.3 MB: an "
            "unbounded pool opened over 70 in a burst of a thousand MLModels."
        ),
    )
    status_debounce_seconds: float = Field(
        0.5,
        ge=0,
        description=(
            "How long after a Deployment event the MLModel's status is computed, from the "
            "latest state: the events of a rollout in that time share one computation."
        ),
    )
    pod_diagnosis_interval_seconds: float = Field(
        30.0,
        ge=0,
        description=(
            "While a model's Deployment is not fully available, how often its pods are examined "
            "(container states, and the runtime's /v2/health/ready answer) to say why."
        ),
    )
    pod_probe_enabled: bool = Field(
        True,
        description=(
            "Ask not-ready runtime pods why over HTTP (GET /v2/health/ready on their http port); "
            "turn off where network policies block operator-to-pod traffic."
        ),
    )
    pod_probe_timeout_seconds: float = Field(
        2.0, gt=0, description="Timeout of one readiness question to a runtime pod."
    )
    peering_lifetime_seconds: int = Field(
        60,
        ge=2,
        description=(
            "With kopf peering: how long this operator counts as alive after its last keep-alive. "
            "A replica that dies without saying goodbye blocks the others this long."
        ),
    )
    # --- the metadata store (deployments and rollout history) -----------------------------
    database_url: SecretStr | None = Field(
        None,
        description=(
            "PostgreSQL URL (postgresql://user:password@host:5432/db) of the metadata store; "
            "unset: an SQLite file in cache_dir. Never logged."
        ),
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description=(
            "Holds the SQLite metadata file when no database_url is set; the default is the one "
            "`mlmodel history` reads, so a local operator and the CLI share it."
        ),
    )
    metadata_flush_timeout_seconds: float = Field(
        10.0,
        ge=0,
        description="At shutdown, how long queued metadata writes may take to reach the store.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of the operator."
    )
    log_format: Literal["json", "text"] | None = Field(
        None,
        description=(
            "'json': one JSON object per line; 'text': for humans. Unset: text on a terminal, "
            "JSON anywhere else (a container, a pipe, a file)."
        ),
    )

    # --- the runtime pods it creates --------------------------------------------------------
    runtime_image: str = Field(
        "ghcr.io/mlmodel-operator/runtime:0.1.0",
        min_length=1,
        description="Runtime image used when an MLModel sets no spec.runtime.image.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="imagePullPolicy of the runtime container."
    )
    runtime_user_id: int = Field(
        10001,
        ge=1,
        description="Numeric non-root user (and group) the runtime runs as; matches the runtime image.",
    )
    default_cpu_request: str = Field(
        "250m",
        pattern=QUANTITY_PATTERN,
        description="CPU request of a runtime container whose MLModel sets no spec.runtime.resources.",
    )
    default_memory_request: str = Field(
        "512Mi",
        pattern=QUANTITY_PATTERN,
        description="Memory request of a runtime container whose MLModel sets no resources.",
    )
    default_memory_limit: str = Field(
        "1Gi",
        pattern=QUANTITY_PATTERN,
        description="Memory limit of a runtime container whose MLModel sets no resources.",
    )
    cache_volume_size_limit: str = Field(
        "4Gi",
        pattern=QUANTITY_PATTERN,
        description="sizeLimit of the emptyDir holding downloaded artifacts (/var/cache/mlmodel).",
    )
    tmp_volume_size_limit: str = Field(
        "256Mi",
        pattern=QUANTITY_PATTERN,
        description="sizeLimit of the emptyDir mounted at /tmp (the root filesystem is read-only).",
    )
    progress_deadline_seconds: int = Field(
        600,
        ge=30,
        description=(
            "Deployment progressDeadlineSeconds: a rollout stuck longer than this is reported as "
            "Degraded with reason ProgressDeadlineExceeded."
        ),
    )
    startup_timeout_seconds: int = Field(
        300,
        ge=10,
        description="Longest a runtime may take to start (download and load its model) before restart.",
    )
    runtime_shutdown_grace_seconds: int = Field(
        20,
        ge=0,
        description="Time the runtime gives in-flight requests after SIGTERM (MLMODEL_SHUTDOWN_GRACE_SECONDS).",
    )
    pre_stop_sleep_seconds: int = Field(
        5,
        ge=0,
        le=60,
        description=(
            "Pause before SIGTERM so Service endpoints drop the pod before it stops accepting "
            "requests; 0 disables the preStop hook."
        ),
    )
    servicemonitor_interval: str = Field(
        "30s",
        pattern=DURATION_PATTERN,
        min_length=1,
        description="Scrape interval of a ServiceMonitor whose MLModel sets no spec.monitoring.interval.",
    )

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, url: SecretStr | None) -> SecretStr | None:
        """A wrong scheme stops the operator at start-up, not at the first write, and the
        message names the scheme only: the URL holds a password."""
        if url is None or not url.get_secret_value().strip():
            return None
        scheme = url_scheme(url.get_secret_value().strip())
        if scheme not in ("postgresql", "postgres", "sqlite"):
            raise ValueError(
                f"unsupported scheme {scheme[:20]!r}: use postgresql://user:password@host/db"
            )
        return url

    @property
    def termination_grace_period_seconds(self) -> int:
        """Pod grace period: the preStop pause plus the runtime's own drain time, plus slack."""
        return self.pre_stop_sleep_seconds + self.runtime_shutdown_grace_seconds + 10
