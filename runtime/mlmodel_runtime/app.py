"""The HTTP layer: Open Inference Protocol V2 and V1 routes, /metrics and offline /docs over the
data plane. The only module that imports FastAPI; routes do HTTP and delegate everything else."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, disable_created_metrics
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, Response

from mlmodel_runtime import __version__, schemas
from mlmodel_runtime.access import ObservabilityMiddleware
from mlmodel_runtime.auth import BearerTokens
from mlmodel_runtime.dataplane import DataPlane, build_dataplane
from mlmodel_runtime.errors import MLModelError, NotSupported
from mlmodel_runtime.logs import AccessLog, base_fields
from mlmodel_runtime.metrics import exposition
from mlmodel_runtime.pipeline import (
    V1_PREDICT,
    V2_INFER,
    Endpoint,
    PredictionEndpoints,
    PredictionPipeline,
    error_body,
)
from mlmodel_runtime.settings import RuntimeSettings

logger = logging.getLogger("mlmodel_runtime.app")

JSON = "application/json"
DOCS_STATIC = "/docs/static"


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(content), status_code=status_code, media_type=JSON, headers=headers
    )


def error_response(
    message: str, status_code: int, headers: dict[str, str] | None = None
) -> Response:
    return Response(error_body(message), status_code=status_code, media_type=JSON, headers=headers)


class PipelineResponse(Response):
    """What a documented prediction route returns: the prediction pipeline reads the request's body
    and writes the answer, exactly as when it takes the request ahead of the router."""

    def __init__(
        self, pipeline: PredictionPipeline, endpoint: Endpoint, name: str, version: str | None
    ) -> None:
        super().__init__()
        self.serve = functools.partial(pipeline.serve, endpoint, name, version)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.serve(scope, receive, send)


def _swagger_assets() -> Any:
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    return swagger_ui_path


def create_app(
    settings: RuntimeSettings,
    dataplane: DataPlane | None = None,
    *,
    log_stream: IO[str] | None = None,
) -> FastAPI:
    """Build the app for one model. ``dataplane`` defaults to one that fetches and loads the model
    named in ``settings`` in the background once the app starts."""
    # X_created series double the series count for no use on a dashboard; one switch per process.
    disable_created_metrics()
    plane = dataplane if dataplane is not None else build_dataplane(settings)
    # One dict shared by every log line of this process; the data plane adds the digest once loaded.
    log_fields = plane.log_fields
    for key, value in base_fields(
        model=settings.model_name, namespace=settings.namespace, pod_name=settings.pod_name
    ).items():
        log_fields.setdefault(key, value)
    metrics = plane.metrics
    tokens = BearerTokens(settings.auth_token_file) if settings.auth_token_file else None
    pipeline = PredictionPipeline(
        plane, tokens=tokens, limit=settings.max_request_bytes, revision=settings.revision
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await plane.start()
        yield
        await plane.stop()

    app = FastAPI(
        title="mlmodel runtime",
        version=__version__,
        description=(
            f"Serves the model **{settings.model_name}** over the Open Inference Protocol (V2) and "
            'the V1 protocol. Errors are JSON bodies `{"error": "..."}` saying what to fix.'
        ),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )

    # --- errors -----------------------------------------------------------------------------

    async def on_mlmodel_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, MLModelError)
        return error_response(exc.message, exc.status_code, exc.headers or None)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}; see /docs"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}; see /docs"
        return error_response(message, exc.status_code, dict(exc.headers or {}) or None)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.error("unhandled error", exc_info=exc, extra={"url.path": request.url.path})
        return error_response("internal server error; see the server logs", 500)

    app.add_exception_handler(MLModelError, on_mlmodel_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)

    # --- health and metadata ----------------------------------------------------------------

    @app.get("/v2/health/live", name="v2_live", tags=["health"], response_model=schemas.Liveness)
    async def live() -> Response:
        return json_response({"live": True})

    @app.get("/", name="v1_live", tags=["v1"], response_model=schemas.ServerAlive)
    async def v1_live() -> Response:
        return json_response({"status": "alive"})

    @app.get("/v1/models", name="v1_models", tags=["v1"], response_model=schemas.V1Models)
    async def v1_models() -> Response:
        return json_response({"models": [plane.name]})

    @app.get(
        "/v2/health/ready", name="v2_ready", tags=["health"], response_model=schemas.Readiness,
        responses={503: {"model": schemas.Readiness, "description": "Not ready, with the reason"}},
    )  # fmt: skip
    async def ready() -> Response:
        body = plane.readiness()
        return json_response(body, 200 if body["ready"] else 503)

    @app.get(
        "/v2", name="v2_server_metadata", tags=["metadata"], response_model=schemas.ServerMetadata
    )
    async def server_metadata() -> Response:
        return json_response(plane.server_metadata())

    @app.get(
        "/v2/models/{name}", name="v2_model_metadata", tags=["metadata"], response_model=schemas.ModelMetadata,
        responses=schemas.error_responses(404, 503),
    )  # fmt: skip
    async def model_metadata(name: str) -> Response:
        plane.check_model(name)
        return json_response(plane.model_metadata())

    @app.get(
        "/v2/models/{name}/versions/{version}", name="v2_model_metadata", tags=["metadata"],
        response_model=schemas.ModelMetadata, responses=schemas.error_responses(404, 503),
    )  # fmt: skip
    async def model_version_metadata(name: str, version: str) -> Response:
        plane.check_model(name, version)
        return json_response(plane.model_metadata())

    async def _model_ready(name: str, version: str | None) -> Response:
        plane.check_model(name, version)
        body = {"name": name, **plane.readiness()}
        return json_response(body, 200 if body["ready"] else 503)

    @app.get(
        "/v2/models/{name}/ready", name="v2_model_ready", tags=["health"], response_model=schemas.V1ModelStatus,
        responses={404: {"model": schemas.ErrorBody}, 503: {"model": schemas.V1ModelStatus}},
    )  # fmt: skip
    async def model_ready(name: str) -> Response:
        return await _model_ready(name, None)

    @app.get(
        "/v2/models/{name}/versions/{version}/ready", name="v2_model_ready", tags=["health"],
        response_model=schemas.V1ModelStatus,
        responses={404: {"model": schemas.ErrorBody}, 503: {"model": schemas.V1ModelStatus}},
    )  # fmt: skip
    async def model_version_ready(name: str, version: str) -> Response:
        return await _model_ready(name, version)

    # --- Triton extensions: statistics and the model repository -------------------------------

    @app.get(
        "/v2/models/{name}/stats", name="v2_model_stats", tags=["metadata"],
        response_model=schemas.Statistics, responses=schemas.error_responses(404),
    )  # fmt: skip
    async def model_stats(name: str) -> Response:
        plane.check_model(name)
        return json_response(plane.statistics())

    @app.get(
        "/v2/models/{name}/versions/{version}/stats", name="v2_model_stats", tags=["metadata"],
        response_model=schemas.Statistics, responses=schemas.error_responses(404),
    )  # fmt: skip
    async def model_version_stats(name: str, version: str) -> Response:
        plane.check_model(name, version)
        return json_response(plane.statistics())

    @app.post(
        "/v2/repository/index", name="v2_repository_index", tags=["metadata"],
        response_model=list[schemas.RepositoryModel],
    )  # fmt: skip
    async def repository_index() -> Response:
        return json_response(plane.repository_index())

    @app.post(
        "/v2/repository/models/{name}/{action}", name="v2_repository_control", tags=["metadata"],
        responses=schemas.error_responses(404, 501),
    )  # fmt: skip
    async def repository_control(name: str, action: str) -> Response:
        if action not in ("load", "unload"):
            raise StarletteHTTPException(404)
        raise NotSupported(
            f'cannot {action} "{name}": this runtime serves one model, "{plane.name}", loaded at '
            "start. To serve another model, deploy another MLModel (or change spec.model)."
        )

    # --- inference --------------------------------------------------------------------------

    infer_docs: dict[str, Any] = {
        "tags": ["inference"],
        "response_model": schemas.InferenceResponse,
        "responses": schemas.error_responses(400, 401, 404, 413, 503),
        "openapi_extra": schemas.request_body(schemas.InferenceRequest),
    }

    # The prediction routes document the endpoints and hand the rare request that reaches them
    # (the pipeline usually takes it first, see PredictionEndpoints) to the same pipeline.
    @app.post("/v2/models/{name}/infer", name=V2_INFER.route_name, **infer_docs)
    async def infer(name: str) -> Response:
        return PipelineResponse(pipeline, V2_INFER, name, None)

    @app.post("/v2/models/{name}/versions/{version}/infer", name=V2_INFER.route_name, **infer_docs)
    async def infer_version(name: str, version: str) -> Response:
        return PipelineResponse(pipeline, V2_INFER, name, version)

    @app.get(
        "/v1/models/{name}", name="v1_model", tags=["v1"], response_model=schemas.V1ModelStatus,
        responses={404: {"model": schemas.ErrorBody}, 503: {"model": schemas.V1ModelStatus}},
    )  # fmt: skip
    async def v1_model(name: str) -> Response:
        return await _model_ready(name, None)

    @app.post(
        "/v1/models/{name}:predict", name=V1_PREDICT.route_name, tags=["v1"],
        response_model=schemas.V1Response, responses=schemas.error_responses(400, 401, 404, 413, 503),
        openapi_extra=schemas.request_body(schemas.V1Request),
    )  # fmt: skip
    async def v1_predict(name: str) -> Response:
        return PipelineResponse(pipeline, V1_PREDICT, name, None)

    # --- metrics and docs -------------------------------------------------------------------

    @app.get("/metrics", name="metrics", tags=["metrics"], response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(exposition(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.mount(DOCS_STATIC, StaticFiles(directory=str(_swagger_assets())), name="docs_static")

    @app.get("/docs", name="docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        # Behind a prefix (root_path) the browser must ask for the prefixed URLs.
        prefix = request.scope.get("root_path", "").rstrip("/")
        static = prefix + DOCS_STATIC
        return get_swagger_ui_html(
            openapi_url=prefix + (app.openapi_url or "/openapi.json"),
            title=f"{settings.model_name} - mlmodel runtime",
            swagger_js_url=f"{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/swagger-ui.css",
            swagger_favicon_url=f"{static}/favicon-32x32.png",
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            app.openapi_schema = schemas.add_request_schemas(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    access_log = (
        AccessLog(log_fields, log_format=settings.log_format, stream=log_stream)
        if settings.access_log
        else None
    )
    # The gRPC server (server.py) serves the same model with the same tokens and access log.
    app.state.dataplane = plane
    app.state.settings = settings
    app.state.tokens = tokens
    app.state.access_log = access_log
    # Innermost first: the prediction pipeline answers its endpoints ahead of FastAPI's router;
    # the observability middleware wraps everything.
    routes = {route.name: route for route in reversed(app.router.routes) if hasattr(route, "name")}
    app.add_middleware(PredictionEndpoints, pipeline=pipeline, routes=routes)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics, access_log=access_log)
    return app
