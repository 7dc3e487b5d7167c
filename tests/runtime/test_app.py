"""Every endpoint of the app in-process (httpx over ASGI), with real models loaded from real files."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import numpy as np
import runtime_models
from mlmodel_runtime.artifacts import fetch_artifact_with_retry
from mlmodel_runtime.dataplane import DataPlane
from support.runtime import Models, running_app, settings_for

TEXT_REQUEST = {
    "id": "req-1",
    "parameters": {"trace": "abc"},
    "inputs": [
        {
            "name": "text",
            "shape": [2],
            "datatype": "BYTES",
            "data": ["a wonderful film, loved it", "awful and boring, terrible"],
        }
    ],
}


def tabular_request(rows: np.ndarray) -> dict:
    return {
        "inputs": [
            {
                "name": name,
                "shape": [len(rows)],
                "datatype": "FP64",
                "data": rows[:, column].tolist(),
            }
            for column, name in enumerate(runtime_models.FEATURES)
        ]
    }


async def test_v2_infer_text_classifier(models: Models, tmp_path: Path) -> None:
    async with running_app(
        settings_for(models.text, tmp_path, "sentiment", model_version="1.2.0")
    ) as rt:
        response = await rt.client.post("/v2/models/sentiment/infer", json=TEXT_REQUEST)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["model_name"] == "sentiment"
        assert body["model_version"] == "1.2.0"
        assert body["id"] == "req-1"
        assert body["parameters"] == {"trace": "abc"}
        label, probabilities = body["outputs"]
        assert label == {
            "name": "label",
            "datatype": "BYTES",
            "shape": [2],
            "data": ["positive", "negative"],
        }
        assert probabilities["name"] == "probabilities" and probabilities["shape"] == [2, 2]
        values = np.array(probabilities["data"]).reshape(2, 2)
        assert np.allclose(values.sum(axis=1), 1.0)
        assert values[0, 1] > 0.5 > values[1, 1]  # classes_ order: negative, positive

        # Versioned path, nested [n, 1] data, and only the output asked for.
        nested = {
            "inputs": [
                {"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [["great, lovely"]]}
            ],
            "outputs": [{"name": "label"}],
        }
        response = await rt.client.post("/v2/models/sentiment/versions/1.2.0/infer", json=nested)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"] == [
            {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["positive"]}
        ]
        assert "id" not in response.json()


async def test_v2_infer_tabular_regressor(models: Models, tmp_path: Path) -> None:
    rows = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 0.0, 1.0, 2.0], [9.5, 1.0, 0.0, 0.0]])
    expected = runtime_models.house_price(rows)
    async with running_app(settings_for(models.tabular, tmp_path, "houses")) as rt:
        with _no_warnings():
            response = await rt.client.post("/v2/models/houses/infer", json=tabular_request(rows))
        assert response.status_code == 200, response.text
        (output,) = response.json()["outputs"]
        assert (
            output["name"] == "predict" and output["datatype"] == "FP64" and output["shape"] == [3]
        )
        assert np.allclose(output["data"], expected)
        assert "model_version" not in response.json()

        # The same rows as one [n, 4] matrix named input-0, row-major.
        matrix = {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [3, 4],
                    "datatype": "FP32",
                    "data": rows.ravel().tolist(),
                }
            ]
        }
        response = await rt.client.post("/v2/models/houses/infer", json=matrix)
        assert response.status_code == 200, response.text
        assert np.allclose(response.json()["outputs"][0]["data"], expected)


class _no_warnings:
    """Fail if scikit-learn warns (e.g. 'X does not have valid feature names')."""

    def __enter__(self):
        import warnings

        self._catcher = warnings.catch_warnings(record=True)
        self.caught = self._catcher.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc_info):
        self._catcher.__exit__(*exc_info)
        messages = [str(w.message) for w in self.caught if "feature names" in str(w.message)]
        assert messages == []


async def test_v2_infer_matrix_model_without_feature_names(models: Models, tmp_path: Path) -> None:
    async with running_app(settings_for(models.matrix, tmp_path, "matrix")) as rt:
        metadata = (await rt.client.get("/v2/models/matrix")).json()
        assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 3]}]
        assert metadata["outputs"][0] == {"name": "label", "datatype": "INT64", "shape": [-1]}
        request = {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [2, 3],
                    "datatype": "FP64",
                    "data": [[3, 0, 0], [-3, 0, 0]],
                }
            ]
        }
        response = await rt.client.post("/v2/models/matrix/infer", json=request)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == [1, 0]


async def test_v1_predict_text_and_tabular(models: Models, tmp_path: Path) -> None:
    async with running_app(settings_for(models.text, tmp_path / "a", "sentiment")) as rt:
        response = await rt.client.post(
            "/v1/models/sentiment:predict",
            json={"instances": ["loved it, wonderful", ["terrible, awful"]]},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": ["positive", "negative"]}
        status = await rt.client.get("/v1/models/sentiment")
        assert status.status_code == 200 and status.json() == {"name": "sentiment", "ready": True}

    rows = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
    async with running_app(settings_for(models.tabular, tmp_path / "b", "houses")) as rt:
        instances = [
            rows[0].tolist(),
            dict(zip(runtime_models.FEATURES, rows[1].tolist(), strict=True)),
        ]
        response = await rt.client.post("/v1/models/houses:predict", json={"instances": instances})
        assert response.status_code == 200, response.text
        assert np.allclose(response.json()["predictions"], runtime_models.house_price(rows))


async def test_metadata_endpoints(models: Models, tmp_path: Path) -> None:
    async with running_app(
        settings_for(models.tabular, tmp_path, "houses", model_version="3")
    ) as rt:
        server = (await rt.client.get("/v2")).json()
        assert (
            server["name"] == "mlmodel-runtime"
            and server["version"]
            and server["extensions"] == ["binary_tensor_data", "statistics"]
        )
        assert (await rt.client.get("/v2/health/live")).json() == {"live": True}
        metadata = (await rt.client.get("/v2/models/houses")).json()
        assert (
            metadata["name"] == "houses"
            and metadata["versions"] == ["3"]
            and metadata["platform"] == "sklearn"
        )
        assert metadata["inputs"] == [
            {"name": name, "datatype": "FP64", "shape": [-1]} for name in runtime_models.FEATURES
        ]
        assert metadata["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
        assert (await rt.client.get("/v2/models/houses/versions/3")).json() == metadata
        ready = await rt.client.get("/v2/models/houses/ready")
        assert ready.status_code == 200 and ready.json() == {"name": "houses", "ready": True}
        assert (await rt.client.get("/v2/models/houses/versions/3/ready")).status_code == 200


async def test_readiness_before_and_after_load(models: Models, tmp_path: Path) -> None:
    settings = settings_for(models.text, tmp_path, "sentiment")
    release = asyncio.Event()

    async def fetch_when_released(settings, on_error):  # the real fetch, held back by the test
        await release.wait()
        return await fetch_artifact_with_retry(settings, on_error)

    plane = DataPlane(settings, fetch=fetch_when_released)
    async with running_app(settings, dataplane=plane, wait=False) as rt:
        response = await rt.client.get("/v2/health/ready")
        assert response.status_code == 503
        assert response.json() == {
            "ready": False,
            "reason": "Loading",
            "message": "fetching and verifying the model artifact",
        }
        assert (await rt.client.get("/v2/models/sentiment/ready")).status_code == 503
        assert (await rt.client.get("/v1/models/sentiment")).json()["ready"] is False
        infer = await rt.client.post("/v2/models/sentiment/infer", json=TEXT_REQUEST)
        assert infer.status_code == 503
        assert infer.json()["error"].startswith('model "sentiment" is not ready (Loading)')
        assert (await rt.client.get("/v2/models/sentiment")).status_code == 503
        assert (await rt.client.get("/v2/health/live")).status_code == 200
        assert (
            'mlmodel_model_ready{model="sentiment"} 0.0' in (await rt.client.get("/metrics")).text
        )

        release.set()
        await plane.wait_loaded()
        assert (await rt.client.get("/v2/health/ready")).json() == {"ready": True}
        metrics = (await rt.client.get("/metrics")).text
        assert 'mlmodel_model_ready{model="sentiment"} 1.0' in metrics
        assert (
            f'mlmodel_model_info{{digest="{models.text.sha256}",format="sklearn",model="sentiment",version=""}} 1.0'
            in metrics
        )
        load = re.search(
            r'mlmodel_model_load_duration_seconds\{model="sentiment"\} ([0-9.e+-]+)', metrics
        )
        assert load and float(load.group(1)) > 0


async def test_checksum_mismatch_keeps_server_alive_and_not_ready(
    models: Models, tmp_path: Path
) -> None:
    settings = settings_for(models.text, tmp_path, "sentiment").model_copy(
        update={"model_sha256": "0" * 64}
    )
    async with running_app(settings, wait=False) as rt:
        await rt.dataplane.wait_loaded()
        response = await rt.client.get("/v2/health/ready")
        assert response.status_code == 503
        body = response.json()
        assert body["reason"] == "ChecksumMismatch"
        assert models.text.sha256 in body["message"] and "0" * 64 in body["message"]
        assert (await rt.client.get("/v2/health/live")).status_code == 200
        metrics = (await rt.client.get("/metrics")).text
        assert (
            'mlmodel_artifact_errors_total{model="sentiment",reason="ChecksumMismatch"} 1.0'
            in metrics
        )


async def test_unreadable_model_file_is_reported(tmp_path: Path) -> None:
    junk = tmp_path / "junk.joblib"
    junk.write_bytes(b"this is not a pickle")
    import hashlib

    from runtime_models import Artifact

    artifact = Artifact(junk, hashlib.sha256(junk.read_bytes()).hexdigest())
    async with running_app(settings_for(artifact, tmp_path / "cache", "junk"), wait=False) as rt:
        await rt.dataplane.wait_loaded()
        body = (await rt.client.get("/v2/health/ready")).json()
        assert body["ready"] is False and body["reason"] == "ModelLoadFailed"
        assert "cannot load" in body["message"] and "joblib" in body["message"]


def _v2(inputs: list | None = None, **extra: object) -> dict:
    body: dict = {"inputs": inputs} if inputs is not None else {}
    body.update(extra)
    return body


TEXT_BAD_REQUESTS = [
    # (body bytes, status, message fragment)
    (b'{"inputs": [', 400, "request body is not valid JSON"),
    (b"", 400, "request body is empty"),
    (b'{"inputs": [{"name": "text", "shape": [1], "datatype": "FP64", "data": [NaN]}]}', 400, "NaN and Infinity are not JSON numbers"),
    (b"[1, 2]", 400, "request body must be a JSON object, not a JSON array"),
    (json.dumps({"input": []}).encode(), 400, 'request must have an "inputs" list'),
    (json.dumps(_v2([{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}])).encode(), 400,
     'input "text" has datatype FP32 but this model takes text: send datatype BYTES'),
    (json.dumps(_v2([{"name": "text", "shape": [1], "datatype": "STRING", "data": ["x"]}])).encode(), 400,
     'input "text": unknown datatype "STRING"; use one of BOOL'),
    (json.dumps(_v2([{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a", "b"]}])).encode(), 400,
     'input "text": shape [3] means 3 values but data holds 2'),
    (json.dumps(_v2([{"name": "text", "shape": [2, 2], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}])).encode(), 400,
     'input "text": shape [2, 2] cannot be used; expected [n] or [n, 1]'),
    (json.dumps(_v2([{"name": "text", "shape": "2", "datatype": "BYTES", "data": ["a", "b"]}])).encode(), 400,
     'input "text": shape must be a list of non-negative integers'),
    (json.dumps(_v2([{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", 5]}])).encode(), 400,
     'input "text": data[1] is a number; BYTES data must be strings'),
    (json.dumps(_v2([{"name": "review", "shape": [1], "datatype": "BYTES", "data": ["a"]}])).encode(), 400,
     'unknown input "review"; this model takes one input named "text"'),
    (json.dumps(_v2([{"shape": [1], "datatype": "BYTES", "data": ["a"]}])).encode(), 400, "inputs[0].name must be a string"),
    (json.dumps(_v2([{"name": "text", "shape": [0], "datatype": "BYTES", "data": []}])).encode(), 400, "the request holds no rows"),
    (json.dumps(_v2([{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}], outputs=[{"name": "score"}])).encode(), 400,
     'unknown output "score"; this model returns label, probabilities'),
    (json.dumps(_v2([{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}], id=5)).encode(), 400, "id must be a string"),
]  # fmt: skip


async def test_bad_requests_get_4xx_with_a_message(models: Models, tmp_path: Path) -> None:
    async with running_app(settings_for(models.text, tmp_path, "sentiment")) as rt:
        for body, status, fragment in TEXT_BAD_REQUESTS:
            response = await rt.client.post(
                "/v2/models/sentiment/infer",
                content=body,
                headers={"content-type": "application/json"},
            )
            assert response.status_code == status, (body, response.text)
            assert fragment in response.json()["error"], (body, response.text)
        v1_cases = [
            ({"instances": []}, 'request must be {"instances": [...]}'),
            (
                {"instances": [3]},
                "instances[0] is a number; this model takes one string per instance",
            ),
        ]
        for payload, fragment in v1_cases:
            response = await rt.client.post("/v1/models/sentiment:predict", json=payload)
            assert response.status_code == 400 and fragment in response.json()["error"], (
                response.text
            )

        missing = await rt.client.post("/v2/models/nope/infer", json=TEXT_REQUEST)
        assert missing.status_code == 404
        assert missing.json() == {"error": 'model "nope" not found; this server serves "sentiment"'}
        assert (await rt.client.get("/v2/models/nope")).status_code == 404
        assert (
            await rt.client.post("/v1/models/nope:predict", json={"instances": ["a"]})
        ).status_code == 404
        version = await rt.client.post("/v2/models/sentiment/versions/9/infer", json=TEXT_REQUEST)
        assert version.status_code == 200  # no version configured: any version path is this model

        no_route = await rt.client.get("/v3/anything")
        assert (
            no_route.status_code == 404
            and "no such endpoint: GET /v3/anything" in no_route.json()["error"]
        )
        wrong_method = await rt.client.get("/v2/models/sentiment/infer")
        assert (
            wrong_method.status_code == 405
            and "method GET is not allowed" in wrong_method.json()["error"]
        )


async def test_bad_tabular_requests(models: Models, tmp_path: Path) -> None:
    rows = np.ones((2, 4))
    good = tabular_request(rows)
    cases = [
        (_v2(good["inputs"][:3]), 'missing input distance; this model takes one FP64 input of shape [n] per feature (area, rooms, age, distance), or one FP64 input "input-0" of shape [n, 4]'),
        (_v2([*good["inputs"], {"name": "colour", "shape": [2], "datatype": "FP64", "data": [1, 2]}]), 'unknown input "colour"'),
        (_v2([good["inputs"][0] | {"datatype": "BYTES", "data": ["a", "b"]}, *good["inputs"][1:]]),
         'input "area" has datatype BYTES but this model takes numbers'),
        (_v2([good["inputs"][0] | {"data": ["a", "b"]}, *good["inputs"][1:]]),
         'input "area": data must hold numbers for datatype FP64'),
        (_v2([good["inputs"][0] | {"shape": [3], "data": [1, 2, 3]}, *good["inputs"][1:]]),
         'input "rooms" has 2 rows but input "area" has 3'),
        (_v2([{"name": "input-0", "shape": [2, 3], "datatype": "FP64", "data": [1] * 6}]),
         'input "input-0": shape [2, 3] cannot be used; expected [n, 4] for n rows'),
        (_v2([{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": [1] * 7}]),
         'input "input-0": shape [2, 4] means 8 values but data holds 7'),
        ({"instances": [[1, 2, 3]]}, "instances[0] must be a list of 4 numbers (area, rooms, age, distance) or an object with those keys"),
        ({"instances": [{"area": 1, "rooms": 2, "age": 3}]}, "instances[0] lacks distance"),
    ]  # fmt: skip
    async with running_app(settings_for(models.tabular, tmp_path, "houses")) as rt:
        for payload, fragment in cases:
            path = (
                "/v1/models/houses:predict" if "instances" in payload else "/v2/models/houses/infer"
            )
            response = await rt.client.post(path, json=payload)
            assert response.status_code == 400, (payload, response.text)
            assert fragment in response.json()["error"], (payload, response.text)


async def test_body_over_the_limit_is_refused_with_413(models: Models, tmp_path: Path) -> None:
    settings = settings_for(models.text, tmp_path, "sentiment", max_request_bytes=2000)
    big = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x" * 5000]}]}
    async with running_app(settings) as rt:
        response = await rt.client.post("/v2/models/sentiment/infer", json=big)
        assert response.status_code == 413
        assert response.json()["error"].startswith("request body is ")
        assert "over the limit of 2000 bytes" in response.json()["error"]

        async def chunks():  # no Content-Length: the limit is enforced while streaming
            for _ in range(10):
                yield b" " * 500

        streamed = await rt.client.post("/v1/models/sentiment:predict", content=chunks())
        assert streamed.status_code == 413
        assert streamed.json()["error"].startswith("request body is over the limit of 2000 bytes")


async def test_request_id_access_log_and_metrics(models: Models, tmp_path: Path) -> None:
    async with running_app(settings_for(models.text, tmp_path, "sentiment")) as rt:
        response = await rt.client.post(
            "/v2/models/sentiment/infer", json=TEXT_REQUEST, headers={"X-Request-ID": "trace-123"}
        )
        assert response.headers["x-request-id"] == "trace-123"
        generated = await rt.client.get("/v2/health/ready")
        assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
        await rt.client.post("/v2/models/sentiment/infer", content=b"{")

        lines = [json.loads(line) for line in rt.log.getvalue().splitlines()]
        infer = [line for line in lines if line.get("http.request.id") == "trace-123"]
        assert len(infer) == 1
        line = infer[0]
        assert line["message"] == "request" and line["log.level"] == "info"
        assert line["http.request.method"] == "POST"
        assert line["url.path"] == "/v2/models/sentiment/infer"
        assert line["http.response.status_code"] == 200
        assert isinstance(line["event.duration"], int) and line["event.duration"] > 0
        assert line["ecs.version"] and line["service.name"] == "mlmodel-runtime"
        assert line["labels.model"] == "sentiment" and line["labels.digest"] == models.text.sha256
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["@timestamp"])

        metrics = (await rt.client.get("/metrics")).text
        assert (
            'mlmodel_requests_total{code="200",endpoint="v2_infer",model="sentiment"} 1.0'
            in metrics
        )
        assert (
            'mlmodel_requests_total{code="400",endpoint="v2_infer",model="sentiment"} 1.0'
            in metrics
        )
        assert (
            'mlmodel_requests_total{code="200",endpoint="v2_ready",model="sentiment"} 1.0'
            in metrics
        )
        assert (
            'mlmodel_request_duration_seconds_count{endpoint="v2_infer",model="sentiment"} 2.0'
            in metrics
        )
        assert 'mlmodel_predictions_total{label="positive",model="sentiment"} 1.0' in metrics
        assert 'mlmodel_predictions_total{label="negative",model="sentiment"} 1.0' in metrics
        assert 'mlmodel_inference_duration_seconds_count{model="sentiment"}' in metrics
        assert 'mlmodel_requests_in_flight{model="sentiment"} 0.0' in metrics


async def test_docs_work_offline(models: Models, tmp_path: Path) -> None:
    async with running_app(settings_for(models.text, tmp_path, "sentiment")) as rt:
        page = await rt.client.get("/docs")
        assert page.status_code == 200
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        assert assets and all(asset.startswith("/docs/static/") for asset in assets), assets
        assert "cdn" not in page.text.lower()
        for asset in assets:
            assert (await rt.client.get(asset)).status_code == 200, asset
        openapi = (await rt.client.get("/openapi.json")).json()
        infer = openapi["paths"]["/v2/models/{name}/infer"]["post"]
        ref = infer["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/InferenceRequest"
        schemas = openapi["components"]["schemas"]
        assert {
            "InferenceRequest",
            "RequestInput",
            "InferenceResponse",
            "V1Request",
            "ErrorBody",
        } <= set(schemas)
        assert "/v1/models/{name}:predict" in openapi["paths"]


async def test_bearer_tokens_guard_predictions(models: Models, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# one per line\ns3cret\nother\n")
    settings = settings_for(models.text, tmp_path / "cache", "sentiment", auth_token_file=tokens)
    async with running_app(settings) as rt:
        missing = await rt.client.post("/v2/models/sentiment/infer", json=TEXT_REQUEST)
        assert missing.status_code == 401 and "missing bearer token" in missing.json()["error"]
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await rt.client.post(
            "/v1/models/sentiment:predict",
            json={"instances": ["a"]},
            headers={"Authorization": "Bearer nope"},
        )
        assert wrong.status_code == 401 and wrong.json() == {"error": "invalid bearer token"}
        right = await rt.client.post(
            "/v2/models/sentiment/infer",
            json=TEXT_REQUEST,
            headers={"Authorization": "Bearer other"},
        )
        assert right.status_code == 200
        assert (await rt.client.get("/v2/health/ready")).status_code == 200  # probes need no token


async def test_overload_is_shed_with_retry_after(models: Models, tmp_path: Path) -> None:
    settings = settings_for(models.slow, tmp_path, "slow", max_concurrent_requests=1)
    request = {"inputs": [{"name": "input-0", "shape": [1, 1], "datatype": "FP64", "data": [1.0]}]}
    async with running_app(settings) as rt:
        first = asyncio.create_task(rt.client.post("/v2/models/slow/infer", json=request))
        while rt.dataplane.in_flight == 0:
            await asyncio.sleep(0.005)
        second = await rt.client.post("/v2/models/slow/infer", json=request)
        assert second.status_code == 503 and second.headers["retry-after"] == "1"
        assert "already in flight (limit 1)" in second.json()["error"]
        assert (await first).status_code == 200
        assert (
            'mlmodel_requests_shed_total{model="slow"} 1.0'
            in (await rt.client.get("/metrics")).text
        )


async def test_input_the_model_refuses_is_a_400(models: Models, tmp_path: Path) -> None:
    request = {"inputs": [{"name": "input-0", "shape": [1, 1], "datatype": "FP64", "data": [-1.0]}]}
    async with running_app(settings_for(models.slow, tmp_path, "slow")) as rt:
        response = await rt.client.post("/v2/models/slow/infer", json=request)
        assert response.status_code == 400
        assert (
            response.json()["error"]
            == "the model rejected the input: SlowDoubler takes non-negative values only"
        )
