"""Copy a local artifact (plain path or file://) into the cache, hashing and size-capping as it goes.

Copied rather than verified in place: the bytes loaded are then exactly the bytes hashed, even if
the source (a mounted volume, a file being retrained) changes between the check and the load.
"""

from __future__ import annotations

from mlmodel_spec.model_uris import IMAGE_VOLUME_REQUIREMENTS, ImageVolume

from mlmodel_runtime.artifacts import errors
from mlmodel_runtime.artifacts.sink import CHUNK_BYTES, ArtifactSink, run_blocking
from mlmodel_runtime.artifacts.uris import LocalSource, MountedSource
from mlmodel_runtime.settings import RuntimeSettings


async def download_local(
    source: LocalSource | MountedSource,
    sink: ArtifactSink,
    settings: RuntimeSettings,
    shown_uri: str,
) -> None:
    await run_blocking(sink, lambda: _copy(source, sink, shown_uri))


def _copy(source: LocalSource | MountedSource, sink: ArtifactSink, shown_uri: str) -> None:
    try:
        file = source.path.open("rb")
    except FileNotFoundError as exc:
        raise errors.not_found(shown_uri, _missing(source)) from exc
    except IsADirectoryError as exc:
        raise errors.not_found(shown_uri, "it is a directory, not a file") from exc
    except PermissionError as exc:
        raise errors.unreachable(
            shown_uri,
            "permission denied: make the file readable by the runtime's user",
            retryable=False,
        ) from exc
    with file:
        try:
            sink.expect_size(source.path.stat().st_size)
            while chunk := file.read(CHUNK_BYTES):
                sink.write(chunk)
        except OSError as exc:
            raise errors.unreachable(shown_uri, f"read failed: {exc.strerror or exc}") from exc


def _missing(source: LocalSource | MountedSource) -> str:
    if not isinstance(source, MountedSource):
        return "no such file"
    volume = source.volume.describe()
    if not source.mount_dir.is_dir():
        detail = f"nothing is mounted at {source.mount_dir}, where the operator mounts the {volume}"
        if isinstance(source.volume, ImageVolume):
            detail += f"; {IMAGE_VOLUME_REQUIREMENTS}"
        return detail
    return f"no file {source.volume.path} in the {volume} mounted at {source.mount_dir}"
