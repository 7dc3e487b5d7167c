"""Schemathesis fuzzes every operation in the runtime's own OpenAPI document against a real server
on a loopback port: no request it makes may get a 500, and every response must match what the
document promises (status code, content type, body schema, headers). A bounded run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from mlmodel_runtime.app import create_app
from mlmodel_runtime.dataplane import DataPlane
from mlmodel_runtime.settings import RuntimeSettings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.runtime import Models, ServerProcess, launch_server, stop_server, write_mlmodel

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MODEL = "reviews"


@pytest.fixture(scope="module")
def fuzz_server(
    models: Models, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server for every operation (start_server is per test): the text model, a small body
    limit so the fuzzer also meets 413s."""
    folder = tmp_path_factory.mktemp("fuzz")
    manifest = write_mlmodel(folder / "model", MODEL, models.text)
    server = launch_server(
        [str(manifest)],
        folder,
        {
            "MLMODEL_MAX_REQUEST_BYTES": "4096",
            "MLMODEL_ACCESS_LOG": "false",
            "MLMODEL_GRPC_PORT": "0",  # fuzzed over HTTP only (gRPC: test_grpc.py)
        },
    )
    try:
        server.wait_ready()
        yield server
    finally:
        stop_server(server, timeout=15)
        # No request may have reached the unexpected-error handler.
        assert "unhandled error" not in server.logs(), server.logs()[-3000:]


def openapi_document() -> dict:
    """The document the server publishes at /openapi.json, built without starting anything (an
    app's document does not depend on its model), so the cases can be collected at import time."""
    settings = RuntimeSettings(model_name=MODEL)
    return create_app(settings, DataPlane(settings)).openapi()


schema = schemathesis.openapi.from_dict(openapi_document())
# Bodies that break the schema too: the decoder must refuse them with a documented 4xx.
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same cases every run: a failure here is reproducible
    suppress_health_check=list(HealthCheck),
    database=None,
)
@pytest.mark.timeout(120)
def test_every_operation_conforms_to_the_openapi_document(
    case: schemathesis.Case, fuzz_server: ServerProcess
) -> None:
    if "name" in (case.path_parameters or {}):
        # Mostly the served model, so bodies reach the decoder rather than stopping at a 404.
        case.path_parameters["name"] = MODEL
    case.call_and_validate(base_url=fuzz_server.url, checks=CHECKS, timeout=10)
