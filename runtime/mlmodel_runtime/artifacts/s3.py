"""Stream an s3://bucket/key artifact with boto3 in a worker thread: endpoint from settings (MinIO and
other S3-compatible stores), credentials from the usual AWS_* variables, size cap on every chunk."""

from __future__ import annotations

from typing import Any

from mlmodel_runtime.artifacts import errors
from mlmodel_runtime.artifacts.sink import CHUNK_BYTES, ArtifactSink, run_blocking
from mlmodel_runtime.artifacts.uris import S3Source, redact_library_logs, redact_uris
from mlmodel_runtime.settings import RuntimeSettings

_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
# urllib3 logs each request line; a custom endpoint URL may carry userinfo.
redact_library_logs("urllib3.connectionpool")

_DENIED_CODES = {
    "AccessDenied",
    "403",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
}


def build_client(settings: RuntimeSettings) -> Any:
    import boto3  # heavy: only runtimes that pull from S3 pay for it
    from botocore.config import Config

    config = Config(
        connect_timeout=settings.artifact_connect_timeout_seconds,
        read_timeout=settings.artifact_read_timeout_seconds,
        # One attempt per fetch: our own backoff owns retries and reports each failure.
        retries={"total_max_attempts": 1},
        # Custom endpoints (MinIO) rarely have wildcard DNS for virtual-hosted buckets.
        s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.s3_endpoint_url, config=config
    )


async def download_s3(
    source: S3Source, sink: ArtifactSink, settings: RuntimeSettings, shown_uri: str
) -> None:
    await run_blocking(sink, lambda: _download(source, sink, settings, shown_uri))


def _download(
    source: S3Source, sink: ArtifactSink, settings: RuntimeSettings, shown_uri: str
) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client = build_client(settings)
        response = client.get_object(Bucket=source.bucket, Key=source.key)
        body = response["Body"]
        try:
            expected = response.get("ContentLength")
            sink.expect_size(expected)
            for chunk in body.iter_chunks(CHUNK_BYTES):
                sink.write(chunk)
        finally:
            body.close()
    except ClientError as exc:
        raise _client_error(exc, shown_uri) from exc
    except BotoCoreError as exc:
        raise _transport_error(exc, sink, settings, shown_uri) from exc
    except ValueError as exc:  # botocore's answer to a malformed endpoint URL
        raise errors.unreachable(
            shown_uri,
            f"invalid S3 endpoint ({redact_uris(str(exc))}): fix spec.model.s3EndpointUrl (MLMODEL_S3_ENDPOINT_URL)",
            retryable=False,
        ) from exc
    if expected is not None and sink.size != expected:
        raise errors.unreachable(
            shown_uri, f"the object ended after {sink.size} of {expected} bytes"
        )


def _client_error(exc: Any, shown_uri: str) -> errors.ArtifactError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in _NOT_FOUND_CODES:
        return errors.not_found(shown_uri, f"S3 {code}")
    if code in _DENIED_CODES:
        return errors.unreachable(
            shown_uri,
            f"S3 {code}: check the credentials (spec.model.credentialsSecret) and the bucket policy",
        )
    return errors.unreachable(
        shown_uri, f"S3 error {code or status}: {redact_uris(str(error.get('Message', '')))}"
    )


def _transport_error(
    exc: Exception, sink: ArtifactSink, settings: RuntimeSettings, shown_uri: str
) -> errors.ArtifactError:
    from botocore import exceptions as boto

    if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
        # Credentials come from the pod's environment, which cannot change while it runs.
        return errors.unreachable(
            shown_uri,
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(spec.model.credentialsSecret)",
            retryable=False,
        )
    if isinstance(exc, boto.ConnectTimeoutError):
        return errors.timed_out(
            shown_uri,
            f"no connection within {settings.artifact_connect_timeout_seconds}s; check "
            "spec.model.s3EndpointUrl and network policy, or raise MLMODEL_ARTIFACT_CONNECT_TIMEOUT_SECONDS",
        )
    if isinstance(exc, boto.ReadTimeoutError):
        return errors.timed_out(
            shown_uri,
            f"the store sent nothing for {settings.artifact_read_timeout_seconds}s after {sink.size} bytes; "
            "raise MLMODEL_ARTIFACT_READ_TIMEOUT_SECONDS if the store is just slow",
        )
    if isinstance(exc, boto.EndpointConnectionError):
        return errors.unreachable(
            shown_uri,
            f"cannot connect to the S3 endpoint ({redact_uris(str(exc))}); check spec.model.s3EndpointUrl",
        )
    return errors.unreachable(
        shown_uri,
        f"connection broke after {sink.size} bytes ({type(exc).__name__}: {redact_uris(str(exc))})",
    )
