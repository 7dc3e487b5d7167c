"""Request and response shapes for the OpenAPI document only: the hot path parses JSON by hand
(codec.py), these models never validate a request."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from mlmodel_runtime import datatypes

# The protocol's datatype names, an enum in the OpenAPI document.
Datatype = Literal[datatypes.NAMES]  # type: ignore[valid-type]


class RequestInput(BaseModel):
    name: str = Field(
        description="An input from the model's metadata, e.g. 'text' or a feature name."
    )
    shape: list[int] = Field(
        description="[n] for n rows of one value; [n, k] for the 'input-0' matrix."
    )
    datatype: Datatype
    data: list[Any] = Field(description="Values in row-major order, flat or nested.")
    parameters: dict[str, Any] | None = None


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    id: str | None = Field(None, description="Echoed in the response.")
    parameters: dict[str, Any] | None = Field(None, description="Echoed in the response.")
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = Field(
        None, description="Outputs wanted; all when absent."
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": "42",
                    "inputs": [
                        {
                            "name": "text",
                            "shape": [2],
                            "datatype": "BYTES",
                            "data": ["great film", "dull"],
                        }
                    ],
                }
            ]
        }
    }


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    data: list[Any]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Readiness(BaseModel):
    ready: bool
    reason: str | None = Field(
        None, description="CamelCase reason when not ready, e.g. ChecksumMismatch."
    )
    message: str | None = Field(None, description="What is wrong and what to do about it.")


class Liveness(BaseModel):
    live: bool


class V1ModelStatus(Readiness):
    name: str


class V1Request(BaseModel):
    instances: list[Any] = Field(
        description="One string per instance (text models) or one list/object of feature values (tabular)."
    )


class V1Response(BaseModel):
    predictions: list[Any]


class ServerAlive(BaseModel):
    status: Literal["alive"]


class V1Models(BaseModel):
    models: list[str]


class Duration(BaseModel):
    count: int
    ns: int = Field(description="Cumulative nanoseconds.")


class InferenceStatistics(BaseModel):
    success: Duration
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration
    cache_hit: Duration
    cache_miss: Duration


class BatchStatistics(BaseModel):
    batch_size: int
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration


class ModelStatistics(BaseModel):
    name: str
    version: str
    last_inference: int = Field(description="Milliseconds since the epoch; 0 before the first.")
    inference_count: int = Field(description="Rows predicted.")
    execution_count: int = Field(description="Model calls (batches).")
    inference_stats: InferenceStatistics
    batch_stats: list[BatchStatistics]


class Statistics(BaseModel):
    model_stats: list[ModelStatistics]


class RepositoryModel(BaseModel):
    name: str
    version: str
    state: Literal["READY", "LOADING", "UNAVAILABLE"]
    reason: str


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong and what to fix.")


REQUEST_MODELS: tuple[type[BaseModel], ...] = (InferenceRequest, V1Request)


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """An ``openapi_extra`` documenting a JSON body the route reads itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


def add_request_schemas(openapi: dict[str, Any]) -> dict[str, Any]:
    """Put the request models (and what they refer to) into the document's components."""
    _, definitions = models_json_schema(
        [(model, "validation") for model in REQUEST_MODELS],
        ref_template="#/components/schemas/{model}",
    )
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in definitions.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    return openapi


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}
