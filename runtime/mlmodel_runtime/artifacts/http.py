"""Stream an http(s):// artifact with httpx: connect and read timeouts, redirects followed, the size
cap checked against Content-Length first and then on every chunk."""

from __future__ import annotations

import httpx

from mlmodel_runtime.artifacts import errors
from mlmodel_runtime.artifacts.sink import ArtifactSink
from mlmodel_runtime.artifacts.uris import HttpSource, redact_library_logs, redact_uris
from mlmodel_runtime.settings import RuntimeSettings

_NOT_FOUND_STATUSES = {404, 410}

# httpx logs every request's full URL at INFO.
redact_library_logs("httpx")


def build_timeout(settings: RuntimeSettings) -> httpx.Timeout:
    return httpx.Timeout(
        connect=settings.artifact_connect_timeout_seconds,
        read=settings.artifact_read_timeout_seconds,
        write=settings.artifact_read_timeout_seconds,
        pool=settings.artifact_connect_timeout_seconds,
    )


async def download_http(
    source: HttpSource, sink: ArtifactSink, settings: RuntimeSettings, shown_uri: str
) -> None:
    # identity: the digest is of the file as published, not of some transfer encoding of it.
    async with httpx.AsyncClient(
        timeout=build_timeout(settings),
        follow_redirects=True,
        headers={"Accept-Encoding": "identity"},
    ) as client:
        try:
            async with client.stream("GET", source.url) as response:
                _check_status(response, shown_uri)
                expected = _declared_length(response)
                sink.expect_size(expected)
                async for chunk in response.aiter_bytes():
                    sink.write(chunk)
        except httpx.TimeoutException as exc:
            raise _timeout_error(exc, sink, settings, shown_uri) from exc
        except httpx.UnsupportedProtocol as exc:
            raise errors.unsupported(
                shown_uri, f"it redirects to an unsupported URL ({redact_uris(str(exc))})"
            ) from exc
        except (httpx.ConnectError, httpx.TooManyRedirects) as exc:
            raise errors.unreachable(
                shown_uri, f"{type(exc).__name__}: {redact_uris(str(exc))}"
            ) from exc
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise errors.unreachable(
                shown_uri,
                f"connection broke after {sink.size} bytes ({type(exc).__name__}: {redact_uris(str(exc))})",
            ) from exc
    if expected is not None and sink.size != expected:
        raise errors.unreachable(shown_uri, f"the body ended after {sink.size} of {expected} bytes")


def _check_status(response: httpx.Response, shown_uri: str) -> None:
    status = response.status_code
    if status == 200:
        return
    if status in _NOT_FOUND_STATUSES:
        raise errors.not_found(shown_uri, f"HTTP {status}")
    if status in (401, 403):
        raise errors.unreachable(
            shown_uri,
            f"HTTP {status}: access denied; check the credentials or pre-signed URL in spec.model.uri",
        )
    raise errors.unreachable(shown_uri, f"HTTP {status} {response.reason_phrase}")


def _declared_length(response: httpx.Response) -> int | None:
    # With a content encoding, Content-Length counts encoded bytes, not the artifact's.
    if response.headers.get("content-encoding", "identity") != "identity":
        return None
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None


def _timeout_error(
    exc: httpx.TimeoutException, sink: ArtifactSink, settings: RuntimeSettings, shown_uri: str
) -> errors.ArtifactError:
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return errors.timed_out(
            shown_uri,
            f"no connection within {settings.artifact_connect_timeout_seconds}s; check the host and "
            "network policy, or raise MLMODEL_ARTIFACT_CONNECT_TIMEOUT_SECONDS",
        )
    return errors.timed_out(
        shown_uri,
        f"the server sent nothing for {settings.artifact_read_timeout_seconds}s after {sink.size} bytes; "
        "check the artifact server, or raise MLMODEL_ARTIFACT_READ_TIMEOUT_SECONDS",
    )
