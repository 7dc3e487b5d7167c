"""Artifact pull: one module per URI scheme, the cache sink, and the fetch/retry entry points.

Import the public API from here.
"""

from mlmodel_runtime.artifacts.errors import ArtifactError
from mlmodel_runtime.artifacts.fetch import fetch_artifact, fetch_artifact_with_retry

__all__ = ["ArtifactError", "fetch_artifact", "fetch_artifact_with_retry"]
