"""Export the sentiment example (../model.joblib) to ONNX, check it agrees with scikit-learn, and
write model.onnx, model.onnx.sha256 and mlmodel.yaml (format: onnx) next to this file.

The ONNX file is a protobuf graph: loading it runs no Python code, unlike a joblib/pickle file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import onnx
import onnxruntime
import skl2onnx
import skl2onnx.sklapi.register
from onnx import helper, numpy_helper
from skl2onnx.common.data_types import StringTensorType
from skl2onnx.sklapi import TraceableTfidfVectorizer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # examples/artifact_digest.py

from artifact_digest import sha256_of, write_digest_file

SOURCE = HERE.parent / "model.joblib"
ARTIFACT = "model.onnx"
INPUT = "text"
# scikit-learn's default token pattern (?u)\b\w\w+\b in RE2 syntax, which onnxruntime's Tokenizer
# uses: Python's Unicode \w is letters, digits and "_", RE2's \w is ASCII only. skl2onnx would
# otherwise substitute [a-zA-Z0-9_]+, which also keeps one-letter words.
TOKEN_PATTERN = r"[\p{L}\p{N}_][\p{L}\p{N}_]+"
# The StringNormalizer's lower-casing needs a locale the runtime image has; C.UTF-8 is in every
# Debian-based image, en_US.UTF-8 (skl2onnx's default) often is not.
LOCALE = "C.UTF-8"
CHECK_REVIEWS = 1000
MIN_AGREEMENT = 0.999
MAX_PROBABILITY_GAP = 1e-4
# Opset 17 runs on every onnxruntime since 1.13; pinned so a newer skl2onnx exports the same graph.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 1}

MANIFEST = """\
# The sentiment example in ONNX: the same TF-IDF + logistic regression as ../model.joblib, exported
# by export.py. ONNX is a protobuf graph, so loading it runs no code (a pickle can run any code).
# `mlmodel serve examples/sentiment/onnx/mlmodel.yaml` serves it locally; in a cluster point
# spec.model.uri at a place the pods can reach.
apiVersion: serving.mlmodel.io/v1alpha1
kind: MLModel
metadata:
  name: sentiment-onnx
  namespace: default
spec:
  model:
    uri: {artifact}
    # Written by export.py; the runtime refuses an artifact whose digest differs.
    sha256: "{digest}"
    format: onnx
    version: "1.0.0"
  runtime:
    resources:
      requests: {{cpu: 500m, memory: 256Mi}}
      limits: {{memory: 512Mi}}
    workers: 1
  autoscaling:
    minReplicas: 2
    maxReplicas: 6
    targetCPUUtilizationPercentage: 70
  batching:
    maxBatchSize: 64
    maxWaitMs: 0
  service:
    port: 80
  monitoring:
    serviceMonitor: true
    interval: 30s
"""


def check_convertible(vectorizer: TfidfVectorizer) -> None:
    """The settings this export reproduces exactly; anything else needs a new look at the graph."""
    expected = {
        "analyzer": "word",
        "lowercase": True,
        "preprocessor": None,
        "tokenizer": None,
        "strip_accents": None,
        "stop_words": None,
        "token_pattern": r"(?u)\b\w\w+\b",
        "ngram_range": (1, 2),
        "binary": False,
        "norm": "l2",
        "use_idf": True,
    }
    actual = {key: vectorizer.get_params()[key] for key in expected}
    if actual != expected:
        raise SystemExit(f"unsupported TfidfVectorizer settings: {actual} (expected {expected})")


def traceable(vectorizer: TfidfVectorizer) -> TraceableTfidfVectorizer:
    """The fitted vectorizer with n-grams keyed by word tuples.

    skl2onnx splits a plain n-gram "waste of" back into words only when every word is also in the
    vocabulary; here max_df drops "of", so the bigram would silently never match. Tokens never
    contain spaces (see TOKEN_PATTERN), so splitting on " " recovers the words exactly.
    """
    result = TraceableTfidfVectorizer(**vectorizer.get_params())
    result.vocabulary_ = {tuple(term.split(" ")): index for term, index in vectorizer.vocabulary_.items()}
    result.idf_ = vectorizer.idf_
    result.fixed_vocabulary_ = False
    return result


def exact_sublinear_tf(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace skl2onnx's log(tf + 1) with scikit-learn's sublinear tf, 1 + log(tf) where tf > 0."""
    graph = model.graph
    initializers = {item.name for item in graph.initializer}
    nodes = list(graph.node)
    add = next(
        node for node in nodes
        if node.op_type == "Add" and node.input[1] in initializers and node.input[1].startswith("ones")
    )
    log = next(node for node in nodes if node.op_type == "Log" and node.input[0] == add.output[0])
    counts, ones = add.input
    zero = "sublinear_zero"
    graph.initializer.append(numpy_helper.from_array(np.zeros((1,), np.float32), zero))
    replacement = [
        helper.make_node("Log", [counts], ["sublinear_log"], name="SublinearLog"),
        helper.make_node("Add", ["sublinear_log", ones], ["sublinear_log_plus_one"], name="SublinearAdd"),
        helper.make_node("Greater", [counts, zero], ["sublinear_present"], name="SublinearPresent"),
        # log(0) is -inf; absent terms stay 0 as in scikit-learn's sparse matrix.
        helper.make_node(
            "Where", ["sublinear_present", "sublinear_log_plus_one", zero], [log.output[0]],
            name="SublinearWhere",
        ),
    ]
    rebuilt = []
    for node in nodes:
        if node is add:
            rebuilt.extend(replacement)
        elif node is not log:
            rebuilt.append(node)
    del graph.node[:]
    graph.node.extend(rebuilt)
    return model


def convert(pipeline: Pipeline, source_digest: str) -> onnx.ModelProto:
    vectorizer, classifier = pipeline.named_steps["tfidf"], pipeline.named_steps["classifier"]
    check_convertible(vectorizer)
    exportable = Pipeline([("tfidf", traceable(vectorizer)), ("classifier", classifier)])
    model = skl2onnx.convert_sklearn(
        exportable,
        name="sentiment",
        # [N, 1]: one review per row, as a string tensor.
        initial_types=[(INPUT, StringTensorType([None, 1]))],
        target_opset=TARGET_OPSET,
        options={
            TraceableTfidfVectorizer: {"tokenexp": TOKEN_PATTERN, "locale": LOCALE},
            # A plain float tensor [N, 2] instead of a list of {label: probability} maps.
            LogisticRegression: {"zipmap": False},
        },
    )
    if vectorizer.sublinear_tf:
        model = exact_sublinear_tf(model)
    # skl2onnx lists the opsets in set order (it varies with the hash seed): sort for a stable digest.
    opsets = sorted((item.domain, item.version) for item in model.opset_import)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in opsets)
    onnx.helper.set_model_props(
        model, {"source_artifact": SOURCE.name, "source_sha256": source_digest, "labels": "negative,positive"}
    )
    onnx.checker.check_model(model)
    return model


def held_out_reviews(count: int) -> list[str]:
    """Reviews train.py kept out of training (same split, same seed)."""
    sys.path.insert(0, str(HERE.parent))
    from train import SEED, load_reviews

    reviews = load_reviews()
    _, test = train_test_split(reviews, test_size=0.2, stratify=reviews["label"], random_state=SEED)
    return test["text"].tolist()[:count]


def session_for(model_bytes: bytes) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])


def predict(session: onnxruntime.InferenceSession, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(labels [N] str, probabilities [N, 2] float32) for N texts."""
    labels, probabilities = session.run(None, {INPUT: np.array(texts, dtype=object).reshape(-1, 1)})
    return labels, probabilities


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", type=Path, default=HERE)
    parser.add_argument("--check-reviews", type=int, default=CHECK_REVIEWS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out = args.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)

    pipeline = joblib.load(SOURCE)
    started = time.perf_counter()
    model = convert(pipeline, sha256_of(SOURCE))
    model_bytes = model.SerializeToString()
    print(f"converted in {time.perf_counter() - started:.1f}s: {len(model_bytes)} bytes")

    texts = held_out_reviews(args.check_reviews)
    labels, probabilities = predict(session_for(model_bytes), texts)
    agreement = float(np.mean(labels == pipeline.predict(texts)))
    gap = float(np.abs(probabilities - pipeline.predict_proba(texts)).max())
    print(f"agreement with scikit-learn: {agreement:.4f} on {len(texts)} held-out reviews; "
          f"largest probability difference {gap:.2e}")
    if agreement < MIN_AGREEMENT or gap > MAX_PROBABILITY_GAP:
        raise SystemExit("the ONNX model disagrees with scikit-learn: not written")

    artifact = out / ARTIFACT
    artifact.write_bytes(model_bytes)
    digest = write_digest_file(artifact)
    (out / "mlmodel.yaml").write_text(MANIFEST.format(artifact=ARTIFACT, digest=digest), encoding="utf-8")
    print(f"wrote {artifact} sha256 {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
