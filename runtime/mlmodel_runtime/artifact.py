"""Public entry points for pulling the model artifact; the work is done in ``mlmodel_runtime.artifacts``."""

from mlmodel_runtime.artifacts.errors import ArtifactError
from mlmodel_runtime.artifacts.fetch import (
    backoff_delay,
    fetch_artifact,
    fetch_artifact_with_retry,
)

__all__ = ["ArtifactError", "backoff_delay", "fetch_artifact", "fetch_artifact_with_retry"]
