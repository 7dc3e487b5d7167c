"""Read an MLModel YAML file (the same one applied to a cluster) into runtime settings, for
`mlmodel serve FILE.yaml`, through the one spec model (mlmodel_spec). A relative artifact path
resolves against the YAML file's folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml
from mlmodel_spec.resource import KIND, InvalidSpec, parse_spec
from mlmodel_spec.runtime_settings import env_var, spec_settings

from mlmodel_runtime.settings import RuntimeSettings


class ManifestError(ValueError):
    """The file is not a usable MLModel; the message says what to fix."""


def read_mlmodel(text: str, source: str = "<input>") -> dict[str, Any]:
    """The one MLModel document in ``text``."""
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source} is not valid YAML: {exc}") from None
    mlmodels = [doc for doc in documents if isinstance(doc, dict) and doc.get("kind") == KIND]
    if not mlmodels:
        raise ManifestError(f"{source} holds no document with kind: {KIND}")
    if len(mlmodels) > 1:
        raise ManifestError(
            f"{source} holds {len(mlmodels)} MLModels; `mlmodel serve` serves one per file"
        )
    return mlmodels[0]


def resolve_uri(uri: str, base_dir: Path) -> str:
    """Relative paths (and relative file: URIs) become absolute paths under ``base_dir``; remote
    URIs and absolute paths are returned as they are."""
    if uri.startswith("file:"):
        parts = urlsplit(uri)
        path = (
            unquote(parts.netloc + parts.path)
            if parts.netloc not in ("", "localhost")
            else unquote(parts.path)
        )
        candidate = Path(path).expanduser()
        return str(candidate if candidate.is_absolute() else (base_dir / candidate).resolve())
    if "://" in uri:
        return uri
    candidate = Path(uri).expanduser()
    return str(candidate if candidate.is_absolute() else (base_dir / candidate).resolve())


def settings_values(mlmodel: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """RuntimeSettings keyword arguments taken from an MLModel (only the fields it sets)."""
    try:
        spec = parse_spec(mlmodel, in_cluster=False)
    except InvalidSpec as error:
        raise ManifestError(str(error)) from None
    metadata = mlmodel["metadata"]
    values: dict[str, Any] = {"model_name": metadata["name"], **spec_settings(spec, explicit_only=True)}
    values["model_uri"] = resolve_uri(spec.model.uri, base_dir)
    if spec.cache is not None and not os.environ.get(env_var("cache_redis_url")):
        # The Secret spec.cache.redis names is a cluster's; serving without the cache the file
        # asks for would hide a mistake until the load arrives.
        raise ManifestError(
            f"spec.cache is set: give the Redis URL in {env_var('cache_redis_url')} "
            "(redis://[:password@]host:6379/0); in a cluster it comes from the Secret "
            f"{spec.cache.redis.secret_ref.name!r} named by spec.cache.redis.secretRef"
        )
    if metadata.get("namespace"):
        values["namespace"] = metadata["namespace"]
    return values


def load_settings(path: Path, **overrides: Any) -> RuntimeSettings:
    """Settings for serving the MLModel in ``path``: its spec, then ``overrides`` (None ignored);
    anything neither sets still comes from MLMODEL_* variables or the defaults."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None
    values = settings_values(read_mlmodel(text, str(path)), path.resolve().parent)
    values.update({key: value for key, value in overrides.items() if value is not None})
    return RuntimeSettings(**values)
