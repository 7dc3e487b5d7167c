"""Parse spec.model.uri into a source per scheme, and redact URIs so no credential or pre-signed
query string ever reaches a message or a log line."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from mlmodel_spec.model_uris import ClaimVolume, MountedVolume, mounted_file, parse_mounted

from mlmodel_runtime.artifacts import errors


@dataclass(frozen=True)
class LocalSource:
    path: Path


@dataclass(frozen=True)
class HttpSource:
    url: str


@dataclass(frozen=True)
class S3Source:
    bucket: str
    key: str


@dataclass(frozen=True)
class MountedSource:
    """pvc:// or oci://: a file in the volume the operator mounts at ``mount_dir``."""

    path: Path
    mount_dir: Path
    volume: MountedVolume

    @property
    def rewritable(self) -> bool:
        """A claim's file can be replaced while pods read it; an image's cannot."""
        return isinstance(self.volume, ClaimVolume)


Source = LocalSource | HttpSource | S3Source | MountedSource

_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_uri(uri: str) -> str:
    """The URI with its userinfo and query replaced: safe to log, still enough to find the file."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "REDACTED" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_uris(text: str) -> str:
    """Redact every URI found in free text, such as a library's exception message."""
    return _URL_IN_TEXT.sub(lambda match: redact_uri(match.group(0)), text)


def parse_source(uri: str, mount_dir: Path, model_format: str = "sklearn") -> Source:
    """The source a URI names; pvc:// and oci:// name a file under ``mount_dir``."""
    shown = redact_uri(uri)
    if not uri:
        raise errors.unsupported(shown, "it is empty")
    if uri.startswith("/"):
        return LocalSource(Path(uri))
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise errors.unsupported(shown, "a relative path has no fixed meaning inside the runtime")
    scheme = scheme.lower()
    if scheme == "file":
        return _file_source(uri, shown)
    if scheme in ("http", "https"):
        if not urlsplit(uri).hostname:
            raise errors.unsupported(shown, "the URL has no host")
        return HttpSource(uri)
    if scheme == "s3":
        # Parsed by hand: S3 keys are not percent-encoded and may hold '?' or '#'.
        bucket, _, key = rest.partition("/")
        if not bucket or not key:
            raise errors.unsupported(shown, "an s3 URI needs a bucket and a key")
        return S3Source(bucket, key)
    if scheme in ("pvc", "oci"):
        volume = parse_mounted(uri, model_format)
        if volume is None:
            raise errors.unsupported(
                shown,
                "a volume URI is pvc://CLAIM/PATH or oci://REGISTRY/REPO:TAG[#PATH] (or "
                "@sha256:DIGEST), with a PATH that has no '.' or '..' segment",
            )
        return MountedSource(Path(mounted_file(volume, str(mount_dir))), mount_dir, volume)
    raise errors.unsupported(shown, f"scheme {scheme!r} is not supported")


def _file_source(uri: str, shown: str) -> LocalSource:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise errors.unsupported(shown, "a file URI must name a local file (file:///path)")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise errors.unsupported(shown, "a file URI needs an absolute path (file:///path)")
    return LocalSource(Path(path))


class RedactingFilter(logging.Filter):
    """Rewrites a library's log record with every URI in it redacted (httpx logs each request URL,
    which may carry userinfo or a pre-signed query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_uris(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def redact_library_logs(*logger_names: str) -> None:
    """Idempotently attach the redacting filter to the named loggers."""
    for name in logger_names:
        library_logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactingFilter) for existing in library_logger.filters):
            library_logger.addFilter(RedactingFilter())
