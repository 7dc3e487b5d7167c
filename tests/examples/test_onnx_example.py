"""The ONNX sentiment example: its digest holds, it predicts what the scikit-learn model predicts,
and it is a plain protobuf graph (nothing in it runs Python code on load)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import onnx
import onnxruntime
import pytest
import yaml
from openapi_schema_validator import OAS30Validator

# Hand-picked texts where a careless export differs: capitals, accents and other scripts, one-letter
# words, bigrams whose words the vocabulary dropped ("waste of"), punctuation only, empty text.
SAMPLE_TEXTS = [
    "An absolute waste of time. I want my money back!",
    "One of the best films I have ever seen; the acting is superb.",
    "NOT GOOD AT ALL",
    "I'd say 1/10: a b c d e, the plot was a mess",
    "Café société: a charming, naïve little film — très bien",
    "Die Schauspieler waren großartig, aber die Handlung war langweilig",
    "素晴らしい映画 great great great",
    "?!... ---",
    "",
    "mediocre " * 300,
    "The first hour drags, but the ending makes it all worthwhile.",
    "Boring. Predictable. Forgettable.",
]
# The only operator domains the export uses: standard ONNX, ONNX-ML and onnxruntime's built-in
# contrib ops (the Tokenizer). A Python custom-op domain (e.g. ai.onnx.contrib's PyOp) would run code.
ALLOWED_DOMAINS = {"", "ai.onnx.ml", "com.microsoft"}
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


@pytest.fixture(scope="module")
def onnx_dir(repo_root: Path) -> Path:
    return repo_root / "examples" / "sentiment" / "onnx"


@pytest.fixture(scope="module")
def session(onnx_dir: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def sklearn_model(onnx_dir: Path):
    return joblib.load(onnx_dir.parent / "model.joblib")


def run(session: onnxruntime.InferenceSession, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return tuple(session.run(None, {"text": np.array(texts, dtype=object).reshape(-1, 1)}))


def test_digest_matches_the_file_and_the_manifest(onnx_dir: Path, repo_root: Path):
    digest = hashlib.sha256((onnx_dir / "model.onnx").read_bytes()).hexdigest()
    recorded, name = (onnx_dir / "model.onnx.sha256").read_text(encoding="utf-8").split()
    assert (recorded, name) == (digest, "model.onnx")
    manifest = yaml.safe_load((onnx_dir / "mlmodel.yaml").read_text(encoding="utf-8"))
    assert manifest["metadata"]["name"] == "sentiment-onnx"
    assert manifest["spec"]["model"] == {
        "uri": "model.onnx", "sha256": digest, "format": "onnx", "version": "1.0.0",
    }
    crd = yaml.safe_load((repo_root / "crds" / "mlmodel.yaml").read_text(encoding="utf-8"))
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert [error.message for error in OAS30Validator(schema).iter_errors(manifest)] == []


def test_predictions_agree_with_scikit_learn(session, sklearn_model):
    labels, probabilities = run(session, SAMPLE_TEXTS)
    assert labels.tolist() == sklearn_model.predict(SAMPLE_TEXTS).tolist()
    assert probabilities.shape == (len(SAMPLE_TEXTS), 2) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, sklearn_model.predict_proba(SAMPLE_TEXTS), atol=1e-5)
    # The model is not trivial: the samples get both labels.
    assert set(labels.tolist()) == {"negative", "positive"}


def test_one_row_at_a_time_matches_the_batch(session):
    labels, probabilities = run(session, SAMPLE_TEXTS)
    for index, text in enumerate(SAMPLE_TEXTS):
        one_label, one_probability = run(session, [text])
        assert one_label.tolist() == [labels[index]]
        np.testing.assert_allclose(one_probability[0], probabilities[index], atol=1e-6)


def test_the_artifact_is_a_protobuf_graph_with_no_pickle(onnx_dir: Path):
    raw = (onnx_dir / "model.onnx").read_bytes()
    assert not raw.startswith(PICKLE_MAGIC)
    model = onnx.load_from_string(raw)  # protobuf parsing: no code runs
    onnx.checker.check_model(model)
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    assert {node.domain for node in model.graph.node} <= ALLOWED_DOMAINS
    assert {opset.domain for opset in model.opset_import} <= ALLOWED_DOMAINS
    for tensor in model.graph.initializer:
        for value in tensor.string_data:
            assert not value.startswith(PICKLE_MAGIC), tensor.name
    for attribute in (a for node in model.graph.node for a in node.attribute):
        for value in [attribute.s, *attribute.strings]:
            assert not value.startswith(PICKLE_MAGIC), attribute.name

    def signature(values):
        return [
            (value.name, value.type.tensor_type.elem_type,
             [dim.dim_value or None for dim in value.type.tensor_type.shape.dim])
            for value in values
        ]

    assert signature(model.graph.input) == [("text", onnx.TensorProto.STRING, [None, 1])]
    assert signature(model.graph.output) == [
        ("label", onnx.TensorProto.STRING, [None]),
        ("probabilities", onnx.TensorProto.FLOAT, [None, 2]),
    ]


def test_the_export_is_reproducible(onnx_dir: Path, tmp_path: Path):
    """export.py run again writes the very artifact that is committed (it checks agreement too)."""
    result = subprocess.run(
        [sys.executable, str(onnx_dir / "export.py"), "--output-dir", str(tmp_path), "--check-reviews", "300"],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "agreement with scikit-learn: 1.0000 on 300 held-out reviews" in result.stdout
    assert (tmp_path / "model.onnx").read_bytes() == (onnx_dir / "model.onnx").read_bytes()
    assert (tmp_path / "mlmodel.yaml").read_text() == (onnx_dir / "mlmodel.yaml").read_text()
