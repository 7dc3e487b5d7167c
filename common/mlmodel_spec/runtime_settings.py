"""What an MLModel tells its runtime: the RuntimeSettings fields its spec decides, and the
``MLMODEL_*`` variables the operator passes them in (``mlmodel serve FILE`` passes them directly).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlmodel_spec.resource import MLModelSpec

ENV_PREFIX = "MLMODEL_"


def env_var(field: str) -> str:
    """The variable a RuntimeSettings field is read from (pydantic-settings' own rule)."""
    return ENV_PREFIX + field.upper()


# RuntimeSettings field -> (spec section, attribute) holding it.
SPEC_FIELDS = {
    "model_uri": ("model", "uri"),
    "model_format": ("model", "format"),
    "allow_unverified_artifact": ("model", "allow_unverified"),
    "workers": ("runtime", "workers"),
    "max_batch_size": ("batching", "max_batch_size"),
    "max_batch_wait_ms": ("batching", "max_wait_ms"),
    "prediction_log_sample_rate": ("prediction_logging", "sample_rate"),
    "model_sha256": ("model", "sha256"),
    "model_version": ("model", "version"),
    "s3_endpoint_url": ("model", "s3_endpoint_url"),
    "cache_ttl_seconds": ("cache", "ttl_seconds"),
    "cache_max_entry_bytes": ("cache", "max_entry_bytes"),
}

# Every RuntimeSettings field the operator sets on a runtime container: the spec's, the model's
# name and what the operator decides itself (ports, cache, identity, secrets). In the order the
# container's env lists them: a new order would change every pod template and roll every model.
MANAGED_SETTINGS = (
    "model_name",
    "model_uri",
    "model_format",
    "allow_unverified_artifact",
    "cache_dir",
    "port",
    "grpc_port",
    "workers",
    "max_batch_size",
    "max_batch_wait_ms",
    "prediction_log_sample_rate",
    "shutdown_grace_seconds",
    "namespace",
    "pod_name",
    "model_sha256",
    "model_version",
    "s3_endpoint_url",
    "database_url",
    "auth_token_file",
    "model_mount_dir",
    "cache_redis_url",
    "cache_ttl_seconds",
    "cache_max_entry_bytes",
    "shadow_url",
    "shadow_model_name",
    "shadow_sample_rate",
    "shadow_tolerance",
    "revision",
)
# A user's spec.runtime.env entry with one of these names would fight the field it comes from.
MANAGED_ENV = frozenset(env_var(field) for field in MANAGED_SETTINGS)


def spec_settings(spec: MLModelSpec, *, explicit_only: bool = False) -> dict[str, Any]:
    """The RuntimeSettings values the spec decides, unset optional ones (digest, version, S3
    endpoint, an absent spec.cache) left out. ``explicit_only``: only what the spec's author
    wrote, so the rest still comes from MLMODEL_* variables or the runtime's defaults
    (`mlmodel serve FILE`)."""
    values: dict[str, Any] = {}
    for field, (section_name, attribute) in SPEC_FIELDS.items():
        section = getattr(spec, section_name)
        if section is None:
            continue
        if explicit_only and (
            section_name not in spec.model_fields_set or attribute not in section.model_fields_set
        ):
            continue
        value = getattr(section, attribute)
        if value is not None and value != "":
            values[field] = value
    return values
