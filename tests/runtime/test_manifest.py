"""Reading an MLModel YAML into runtime settings, and the `mlmodel` command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlmodel_runtime.manifest import (
    ManifestError,
    load_settings,
    read_mlmodel,
    resolve_uri,
    settings_values,
)

FULL = """
apiVersion: serving.mlmodel.io/v1alpha1
kind: MLModel
metadata: {name: sentiment, namespace: shop}
spec:
  model:
    uri: models/model.joblib
    sha256: "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
    format: sklearn
    version: 1.5
    allowUnverified: false
    s3EndpointUrl: http://minio:9000
  runtime: {workers: 3}
  batching: {maxBatchSize: 16, maxWaitMs: 4}
  predictionLogging: {sampleRate: 0.25}
  service: {port: 80}
"""


def test_settings_values_map_the_spec(tmp_path: Path) -> None:
    values = settings_values(read_mlmodel(FULL), tmp_path)
    assert values == {
        "model_name": "sentiment",
        "model_uri": str(tmp_path / "models" / "model.joblib"),
        "namespace": "shop",
        "model_sha256": "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
        "model_format": "sklearn",
        "model_version": "1.5",
        "allow_unverified_artifact": False,
        "s3_endpoint_url": "http://minio:9000",
        "max_batch_size": 16,
        "max_batch_wait_ms": 4,
        "workers": 3,
        "prediction_log_sample_rate": 0.25,
    }


def test_rules_about_running_in_a_cluster_do_not_apply_to_serve(tmp_path: Path) -> None:
    """The operator refuses these (tests/operator); `mlmodel serve` runs no pods of its own."""
    text = """
kind: MLModel
metadata: {name: My_Model}
spec:
  model: {uri: model.onnx, format: onnx}
  replicas: 2
  autoscaling: {maxReplicas: 3}
  runtime:
    resources: {limits: {memory: 1Gi}}
    env: [{name: MLMODEL_PORT, value: "9000"}]
"""
    values = settings_values(read_mlmodel(text), tmp_path)
    assert values == {
        "model_name": "My_Model",
        "model_uri": str(tmp_path / "model.onnx"),
        "model_format": "onnx",
    }


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("model.joblib", "{base}/model.joblib"),
        ("./sub/../model.joblib", "{base}/model.joblib"),
        ("/abs/model.joblib", "/abs/model.joblib"),
        ("file:model.joblib", "{base}/model.joblib"),
        ("file:///abs/model.joblib", "/abs/model.joblib"),
        ("https://models.example.com/a/model.joblib", "https://models.example.com/a/model.joblib"),
        ("s3://bucket/key/model.joblib", "s3://bucket/key/model.joblib"),
    ],
)
def test_relative_uris_resolve_against_the_yaml_folder(
    tmp_path: Path, uri: str, expected: str
) -> None:
    assert resolve_uri(uri, tmp_path) == expected.format(base=tmp_path.resolve())


def test_load_settings_with_overrides_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "m.yaml").write_text(FULL)
    monkeypatch.setenv("MLMODEL_MAX_REQUEST_BYTES", "1234")
    settings = load_settings(tmp_path / "m.yaml", port=9999, workers=None)
    assert settings.port == 9999
    assert settings.workers == 3  # None overrides nothing
    assert settings.max_request_bytes == 1234  # what the file does not set still comes from env
    assert (
        settings.model_sha256 == "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
    )
    assert settings.model_uri == str(tmp_path.resolve() / "models" / "model.joblib")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Deployment\n", "holds no document with kind: MLModel"),
        ("kind: MLModel\nspec: {model: {uri: a}}\n", "metadata.name is required"),
        ("kind: MLModel\nmetadata: {name: a}\nspec: {model: {}}\n", "spec.model.uri is required"),
        (
            "kind: MLModel\nmetadata: {name: a}\nspec: {model: {uri: x}}\n---\nkind: MLModel\n",
            "holds 2 MLModels",
        ),
        ("kind: [unclosed\n", "is not valid YAML"),
        (
            "kind: MLModel\nmetadata: {name: a}\nspec: {model: {uri: x}, batching: 3}\n",
            "spec.batching must be a mapping",
        ),
        # The operator's spec model reads the file: what a cluster would refuse, serve refuses.
        (
            "kind: MLModel\nmetadata: {name: a}\nspec: {model: {uri: x, checksum: y}}\n",
            "spec.model.checksum: Extra inputs are not permitted",
        ),
        (
            "kind: MLModel\nmetadata: {name: a}\nspec: {model: {uri: x}, runtime: {workers: many}}\n",
            "spec.runtime.workers: Input should be a valid integer",
        ),
    ],
)
def test_bad_manifests_say_what_to_fix(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message.replace("[", r"\[")):
        settings_values(read_mlmodel(text), Path("/"))


def test_serve_help_documents_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlmodel_runtime.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for fragment in (
        "FILE.yaml",
        "--port",
        "--host",
        "--workers",
        "MLMODEL_",
        "/v2/models/NAME/infer",
    ):
        assert fragment in result.stdout


def test_serve_reports_a_bad_file_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("kind: MLModel\nmetadata: {name: a}\n")
    result = subprocess.run(
        [sys.executable, "-m", "mlmodel_runtime.cli", "serve", str(tmp_path / "bad.yaml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "spec.model.uri is required" in result.stderr and "Traceback" not in result.stderr


def test_delegated_subcommands_receive_their_arguments() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlmodel_cli", "render", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "mlmodel render" in result.stdout  # the operator's own parser answered
