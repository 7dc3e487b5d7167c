"""The one prediction pipeline: the ASGI fast path and the documented FastAPI routes answer alike,
/docs and /openapi.json list every endpoint, and a deployment behind a path prefix (ASGI root_path,
as set by `uvicorn --root-path` or a proxy) serves predictions and its docs under that prefix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from mlmodel_runtime.pipeline import PredictionEndpoints
from support.ports import free_port
from support.runtime import RUNTIME_TESTS, Models, running_app, settings_for

TEXT_REQUEST = {
    "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["great, loved it"]}]
}

# Every documented endpoint: (method, path) as /openapi.json lists them.
DOCUMENTED = {
    ("post", "/v2/models/{name}/infer"),
    ("post", "/v2/models/{name}/versions/{version}/infer"),
    ("post", "/v1/models/{name}:predict"),
    ("get", "/v1/models/{name}"),
    ("get", "/v1/models"),
    ("get", "/"),
    ("get", "/v2/health/live"),
    ("get", "/v2/health/ready"),
    ("get", "/v2"),
    ("get", "/v2/models/{name}"),
    ("get", "/v2/models/{name}/versions/{version}"),
    ("get", "/v2/models/{name}/ready"),
    ("get", "/v2/models/{name}/versions/{version}/ready"),
    ("get", "/v2/models/{name}/stats"),
    ("get", "/v2/models/{name}/versions/{version}/stats"),
    ("post", "/v2/repository/index"),
    ("post", "/v2/repository/models/{name}/{action}"),
    ("get", "/metrics"),
}


async def test_openapi_and_docs_list_every_endpoint(models: Models, tmp_path: Path) -> None:
    async with running_app(settings_for(models.text, tmp_path, "sentiment")) as rt:
        document = (await rt.client.get("/openapi.json")).json()
        listed = {(method, path) for path, item in document["paths"].items() for method in item}
        assert listed == DOCUMENTED
        # Every route the app serves is in the document (none forgotten by a refactoring).
        served = {
            (method.lower(), route.path)
            for route in rt.app.routes
            if isinstance(route, APIRoute) and route.include_in_schema
            for method in route.methods
        }
        assert served == DOCUMENTED
        page = await rt.client.get("/docs")
        assert page.status_code == 200
        assert "url: '/openapi.json'" in page.text or '"url": "/openapi.json"' in page.text


def _behind_the_fast_path(app: Any) -> Any:
    """The app's middleware stack from just inside the fast path: FastAPI's router and its routes."""
    layer = app.middleware_stack
    while not isinstance(layer, PredictionEndpoints):
        layer = layer.app
    return layer.app


def _answer(response: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    kept = ("content-type", "www-authenticate", "retry-after", "inference-header-content-length")
    return (
        response.status_code,
        response.content,
        {key: response.headers[key] for key in kept if key in response.headers},
    )


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v2/models/sentiment/infer", TEXT_REQUEST, {}),
        ("/v2/models/sentiment/versions/7/infer", TEXT_REQUEST, {}),
        ("/v1/models/sentiment:predict", {"instances": ["dull"]}, {}),
        ("/v2/models/other/infer", TEXT_REQUEST, {}),
        ("/v1/models/sentiment:predict", {"instances": [1]}, {}),
        ("/v2/models/sentiment/infer", {"inputs": []}, {}),
        ("/v2/models/sentiment/infer", TEXT_REQUEST, {"authorization": "Bearer nope"}),
        ("/v2/models/sentiment/infer", b"x" * 2048, {}),
        ("/v2/models/sentiment/infer", b"{", {"inference-header-content-length": "1"}),
    ],
)
async def test_routes_and_fast_path_answer_alike(
    models: Models, tmp_path: Path, path: str, body: object, headers: dict[str, str]
) -> None:
    """The same request answered by the whole app (the pipeline ahead of the router) and without
    the fast path (the documented route, which hands it to the pipeline)."""
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n")
    settings = settings_for(
        models.text, tmp_path / "cache", "sentiment", model_version="7",
        auth_token_file=tokens if "authorization" in headers else None, max_request_bytes=1024,
    )  # fmt: skip
    async with running_app(settings) as rt:
        content = body if isinstance(body, bytes) else None
        json_body = None if isinstance(body, bytes) else body
        via_app = await rt.client.post(path, json=json_body, content=content, headers=headers)
        transport = httpx.ASGITransport(app=_behind_the_fast_path(rt.app))
        async with httpx.AsyncClient(transport=transport, base_url="http://runtime") as router:
            via_route = await router.post(path, json=json_body, content=content, headers=headers)
        assert _answer(via_route) == _answer(via_app)
        assert via_app.status_code in (200, 400, 401, 404, 413), via_app.text
        if via_app.status_code != 200:
            assert set(via_app.json()) == {"error"}


PREFIX = "/models/sentiment"


async def test_a_deployment_behind_a_prefix(models: Models, tmp_path: Path) -> None:
    """root_path as uvicorn's --root-path sets it (the proxy stripped the prefix, the server puts it
    back in front of the path): predictions, health, docs, its assets and the OpenAPI document."""
    async with running_app(settings_for(models.text, tmp_path, "sentiment")) as rt:
        transport = httpx.ASGITransport(app=rt.app, root_path=PREFIX)
        async with httpx.AsyncClient(transport=transport, base_url="http://runtime") as client:
            v2 = await client.post(f"{PREFIX}/v2/models/sentiment/infer", json=TEXT_REQUEST)
            assert v2.status_code == 200, v2.text
            assert v2.json()["outputs"][0]["data"] == ["positive"]
            v1 = await client.post(
                f"{PREFIX}/v1/models/sentiment:predict", json={"instances": ["awful, boring"]}
            )
            assert v1.json() == {"predictions": ["negative"]}
            missing = await client.post(f"{PREFIX}/v2/models/nope/infer", json=TEXT_REQUEST)
            assert missing.status_code == 404 and "nope" in missing.json()["error"]
            assert (await client.get(f"{PREFIX}/v2/health/ready")).json() == {"ready": True}

            page = await client.get(f"{PREFIX}/docs")
            assert page.status_code == 200
            assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
            assert assets and all(asset.startswith(f"{PREFIX}/docs/static/") for asset in assets)
            for asset in assets:
                assert (await client.get(asset)).status_code == 200, asset
            assert f"{PREFIX}/openapi.json" in page.text
            document = (await client.get(f"{PREFIX}/openapi.json")).json()
            assert document["servers"] == [{"url": PREFIX}]
            assert "/v2/models/{name}/infer" in document["paths"]

            metrics = (await client.get(f"{PREFIX}/metrics")).text
            assert (
                'mlmodel_requests_total{code="200",endpoint="v2_infer",model="sentiment"} 1.0'
                in metrics
            )
            assert (
                'mlmodel_requests_total{code="200",endpoint="v1_predict",model="sentiment"} 1.0'
                in metrics
            )


def test_uvicorn_root_path_behind_a_prefix_stripping_proxy(models: Models, tmp_path: Path) -> None:
    """A real uvicorn started with --root-path, asked as a proxy that strips the prefix asks it."""
    port = free_port()
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("MLMODEL_")
    }
    environment.update(
        PYTHONPATH=os.pathsep.join([str(RUNTIME_TESTS), environment.get("PYTHONPATH", "")]),
        MLMODEL_MODEL_NAME="sentiment",
        MLMODEL_MODEL_URI=str(models.text.path),
        MLMODEL_MODEL_SHA256=models.text.sha256,
        MLMODEL_CACHE_DIR=str(tmp_path / "cache"),
    )
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "runtime_asgi:app", "--root-path", PREFIX,
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    log = tmp_path / "uvicorn.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=environment, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            v2 = client.post("/v2/models/sentiment/infer", json=TEXT_REQUEST)
            assert v2.status_code == 200, v2.text
            assert v2.json()["outputs"][0]["data"] == ["positive"]
            v1 = client.post("/v1/models/sentiment:predict", json={"instances": ["awful"]})
            assert v1.json() == {"predictions": ["negative"]}
            page = client.get("/docs")
            assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
            assert assets and all(asset.startswith(f"{PREFIX}/docs/static/") for asset in assets)
            # The proxy strips the prefix from what the browser asks for.
            for asset in assets:
                assert client.get(asset.removeprefix(PREFIX)).status_code == 200, asset
            assert client.get("/openapi.json").json()["servers"] == [{"url": PREFIX}]
    finally:
        process.terminate()
        process.wait(20)


@pytest.mark.parametrize("revision", [None, "canary"])
async def test_every_prediction_says_which_revision_answered(
    models: Models, tmp_path: Path, revision: str | None
) -> None:
    """x-mlmodel-revision: `stable` unless the process serves a canary (MLMODEL_REVISION), on
    answers and on errors, V2 and V1."""
    values = {"revision": revision} if revision else {}
    settings = settings_for(models.text, tmp_path / "cache", "sentiment", **values)
    expected = revision or "stable"
    async with running_app(settings) as rt:
        request = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["good"]}]}
        answered = await rt.client.post("/v2/models/sentiment/infer", json=request)
        v1 = await rt.client.post("/v1/models/sentiment:predict", json={"instances": ["good"]})
        refused = await rt.client.post("/v2/models/sentiment/infer", json={"inputs": []})
    assert (answered.status_code, v1.status_code, refused.status_code) == (200, 200, 400)
    for response in (answered, v1, refused):
        assert response.headers["x-mlmodel-revision"] == expected
