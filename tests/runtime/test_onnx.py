"""`format: onnx`: the ONNX sentiment example served by a real `mlmodel serve` agrees with the joblib
one over V2 and V1; ONNX loads without a sha256 (no code runs) while joblib is refused without one;
tabular graphs and broken files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from mlmodel_runtime.settings import RuntimeSettings
from support.runtime import Models, running_app

TEXTS = [
    "a wonderful film, great acting and a moving story",
    "boring, awful and far too long; I hated it",
    "not bad, not great",
    "",
]


def v2_texts(texts: list[str]) -> dict:
    return {
        "id": "cmp",
        "inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}],
    }


def test_the_onnx_example_agrees_with_the_joblib_one(repo_root: Path, start_server) -> None:
    examples = repo_root / "examples" / "sentiment"
    onnx = start_server([str(examples / "onnx" / "mlmodel.yaml")])
    joblib_server = start_server([str(examples / "mlmodel.yaml")])
    onnx.wait_ready()
    joblib_server.wait_ready()
    with httpx.Client(timeout=10) as client:
        answers = {}
        for server, name in ((onnx, "sentiment-onnx"), (joblib_server, "sentiment")):
            v2 = client.post(f"{server.url}/v2/models/{name}/infer", json=v2_texts(TEXTS))
            assert v2.status_code == 200, v2.text
            v1 = client.post(f"{server.url}/v1/models/{name}:predict", json={"instances": TEXTS})
            assert v1.status_code == 200, v1.text
            answers[name] = (v2.json(), v1.json())
        metadata = client.get(f"{onnx.url}/v2/models/sentiment-onnx").json()
        metrics = client.get(f"{onnx.url}/metrics").text
    (onnx_v2, onnx_v1), (sk_v2, sk_v1) = answers["sentiment-onnx"], answers["sentiment"]
    assert onnx_v2["id"] == "cmp" and onnx_v2["model_version"] == "1.0.0"
    onnx_outputs = {output["name"]: output for output in onnx_v2["outputs"]}
    sk_outputs = {output["name"]: output for output in sk_v2["outputs"]}
    assert onnx_outputs.keys() == sk_outputs.keys() == {"label", "probabilities"}
    assert onnx_outputs["label"]["data"] == sk_outputs["label"]["data"]
    assert onnx_outputs["label"]["data"][:2] == ["positive", "negative"]
    assert onnx_outputs["probabilities"]["shape"] == sk_outputs["probabilities"]["shape"] == [4, 2]
    np.testing.assert_allclose(
        onnx_outputs["probabilities"]["data"], sk_outputs["probabilities"]["data"], atol=1e-4
    )
    assert onnx_v1 == sk_v1 == {"predictions": onnx_outputs["label"]["data"]}
    assert metadata == {
        "name": "sentiment-onnx",
        "versions": ["1.0.0"],
        "platform": "onnxruntime",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
        ],
    }
    assert 'format="onnx"' in metrics and 'mlmodel_predictions_total{label="positive"' in metrics


async def test_onnx_needs_no_sha256_but_joblib_does(
    repo_root: Path, models: Models, tmp_path: Path
) -> None:
    onnx_file = repo_root / "examples" / "sentiment" / "onnx" / "model.onnx"
    settings = RuntimeSettings(
        model_name="reviews",
        model_uri=str(onnx_file),
        model_format="onnx",
        cache_dir=tmp_path / "a",
    )
    assert settings.model_sha256 is None
    async with running_app(settings) as rt:
        response = await rt.client.post("/v1/models/reviews:predict", json={"instances": TEXTS[:2]})
        assert response.json() == {"predictions": ["positive", "negative"]}
        # The digest of what was loaded is still computed and reported.
        digest = hashlib.sha256(onnx_file.read_bytes()).hexdigest()
        assert rt.dataplane.digest == digest

    unverified = RuntimeSettings(
        model_name="reviews", model_uri=str(models.text.path), cache_dir=tmp_path / "b"
    )
    async with running_app(unverified, wait=False) as rt:
        await rt.dataplane.wait_loaded()
        ready = await rt.client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert ready.json()["reason"] == "UnverifiedArtifact"
        assert "sha256" in ready.json()["message"]

    allowed = unverified.model_copy(
        update={"cache_dir": tmp_path / "c", "allow_unverified_artifact": True}
    )
    async with running_app(allowed) as rt:
        assert (await rt.client.get("/v2/health/ready")).status_code == 200


@pytest.fixture(scope="module")
def matrix_onnx(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runtime tests' matrix classifier (3 features, labels 0/1) exported with skl2onnx."""
    import joblib
    from skl2onnx import to_onnx

    estimator = joblib.load(models.matrix.path)
    graph = to_onnx(
        estimator, np.zeros((1, 3), dtype=np.float32), options={id(estimator): {"zipmap": False}}
    )
    path = tmp_path_factory.mktemp("onnx") / "matrix.onnx"
    path.write_bytes(graph.SerializeToString())
    return path


async def test_a_tabular_graph_takes_a_float_matrix(
    models: Models, matrix_onnx: Path, tmp_path: Path
) -> None:
    import joblib

    rows = [[1.5, 0.2, -0.3], [-2.0, 0.1, 0.4]]
    expected = joblib.load(models.matrix.path).predict(np.array(rows)).tolist()
    settings = RuntimeSettings(
        model_name="matrix", model_uri=str(matrix_onnx), model_format="onnx", cache_dir=tmp_path
    )
    async with running_app(settings) as rt:
        metadata = (await rt.client.get("/v2/models/matrix")).json()
        assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 3]}]
        assert metadata["outputs"][0] == {"name": "label", "datatype": "INT64", "shape": [-1]}
        v2 = await rt.client.post(
            "/v2/models/matrix/infer",
            json={
                "inputs": [{"name": "input-0", "shape": [2, 3], "datatype": "FP32", "data": rows}]
            },
        )
        assert v2.status_code == 200, v2.text
        assert v2.json()["outputs"][0]["data"] == expected == [1, 0]
        v1 = await rt.client.post("/v1/models/matrix:predict", json={"instances": rows})
        assert v1.json() == {"predictions": expected}
        wrong = await rt.client.post("/v1/models/matrix:predict", json={"instances": [[1.0, 2.0]]})
        assert wrong.status_code == 400 and "3 numbers" in wrong.json()["error"]


async def test_a_file_that_is_not_onnx_keeps_the_server_not_ready(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not a protobuf graph")
    settings = RuntimeSettings(
        model_name="broken",
        model_uri=str(broken),
        model_format="onnx",
        cache_dir=tmp_path / "cache",
    )
    async with running_app(settings, wait=False) as rt:
        await rt.dataplane.wait_loaded()
        ready = (await rt.client.get("/v2/health/ready")).json()
        assert (
            ready["reason"] == "ModelLoadFailed" and "onnxruntime cannot load" in ready["message"]
        )
        live = await rt.client.get("/v2/health/live")
        assert live.status_code == 200
