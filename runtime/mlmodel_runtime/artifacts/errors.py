"""The one error an artifact fetch raises: a CamelCase reason, a message that says what to fix, and
whether trying again later can help."""

from __future__ import annotations

CHECKSUM_MISMATCH = "ChecksumMismatch"
ARTIFACT_UNREACHABLE = "ArtifactUnreachable"
ARTIFACT_NOT_FOUND = "ArtifactNotFound"
ARTIFACT_TOO_LARGE = "ArtifactTooLarge"
ARTIFACT_TIMEOUT = "ArtifactTimeout"
UNSUPPORTED_SCHEME = "UnsupportedScheme"
UNVERIFIED_ARTIFACT = "UnverifiedArtifact"
CACHE_UNWRITABLE = "CacheUnwritable"


class ArtifactError(Exception):
    """A failed fetch; ``reason`` feeds status conditions and the artifact-errors metric label."""

    def __init__(self, reason: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retryable = retryable

    def __repr__(self) -> str:
        return f"ArtifactError(reason={self.reason!r}, retryable={self.retryable}, message={self.message!r})"


def too_large(uri: str, limit: int, size: int | None = None) -> ArtifactError:
    found = f"is {size} bytes" if size is not None else "grew past the limit while downloading"
    return ArtifactError(
        ARTIFACT_TOO_LARGE,
        f"artifact {uri} {found}, over the limit of {limit} bytes: ship a smaller artifact or raise "
        "the runtime's limit (MLMODEL_ARTIFACT_MAX_BYTES)",
        retryable=False,
    )


def checksum_mismatch(uri: str, expected: str, actual: str, *, retryable: bool) -> ArtifactError:
    return ArtifactError(
        CHECKSUM_MISMATCH,
        f"artifact {uri} has sha256 {actual} but spec.model.sha256 is {expected}: the file was not "
        "loaded; publish the intended artifact or correct spec.model.sha256 (sha256sum FILE)",
        retryable=retryable,
    )


def not_found(uri: str, detail: str) -> ArtifactError:
    # Retryable: the artifact may be published after the MLModel that names it.
    return ArtifactError(
        ARTIFACT_NOT_FOUND,
        f"artifact {uri} not found ({detail}): check spec.model.uri or upload the artifact",
        retryable=True,
    )


def unreachable(uri: str, detail: str, *, retryable: bool = True) -> ArtifactError:
    return ArtifactError(
        ARTIFACT_UNREACHABLE, f"cannot fetch artifact {uri}: {detail}", retryable=retryable
    )


def timed_out(uri: str, detail: str) -> ArtifactError:
    return ArtifactError(
        ARTIFACT_TIMEOUT, f"timed out fetching artifact {uri}: {detail}", retryable=True
    )


def unsupported(uri: str, detail: str) -> ArtifactError:
    return ArtifactError(
        UNSUPPORTED_SCHEME,
        f"spec.model.uri {uri!r} cannot be used: {detail}; use an absolute path, file:///path, "
        "http(s)://host/path, s3://bucket/key, pvc://claim/path or oci://registry/repo:tag[#path]",
        retryable=False,
    )


def unverified(model_format: str) -> ArtifactError:
    return ArtifactError(
        UNVERIFIED_ARTIFACT,
        f"refusing to fetch a {model_format} artifact without a sha256: loading it unpickles, which "
        "runs code; set spec.model.sha256 to the artifact's digest (sha256sum FILE), or set "
        "spec.model.allowUnverified: true for development only",
        retryable=False,
    )


def cache_unwritable(cache_dir: str, detail: str) -> ArtifactError:
    # Retryable: a full disk frees up; a read-only mount does not, but retrying it costs nothing.
    return ArtifactError(
        CACHE_UNWRITABLE,
        f"cannot write to the artifact cache {cache_dir}: {detail}; make MLMODEL_CACHE_DIR a writable "
        "folder with room for the artifact",
        retryable=True,
    )
