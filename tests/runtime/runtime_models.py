"""Small real models for the runtime tests, trained in seconds, plus one estimator whose predict
takes a set time (so tests can hold a request in flight). Importable by the server subprocesses
(the tests put this folder on their PYTHONPATH) because joblib pickles the class by name."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

POSITIVE_TEXTS = [
    "a wonderful film, great acting", "great story and lovely music", "i loved it, wonderful",
    "brilliant and moving, great cast", "lovely, funny and great", "wonderful direction, loved the cast",
]  # fmt: skip
NEGATIVE_TEXTS = [
    "an awful film, terrible acting", "boring plot and dull music", "i hated it, awful",
    "terrible and boring, bad cast", "dull, slow and awful", "bad direction, hated the cast",
]  # fmt: skip
FEATURES = ["area", "rooms", "age", "distance"]
COEFFICIENTS = np.array([2.0, 3.0, -1.0, 0.5])
INTERCEPT = 10.0


def house_price(rows: np.ndarray) -> np.ndarray:
    """The exact function the tabular model learns (noise-free linear data)."""
    return rows @ COEFFICIENTS + INTERCEPT


class SlowDoubler(RegressorMixin, BaseEstimator):
    """Doubles its single feature after sleeping ``delay`` seconds per call (not per row), like a
    model whose cost is per batch; raises ValueError on negative input (a request the model refuses)."""

    def __init__(self, delay: float = 0.2) -> None:
        self.delay = delay

    def fit(self, X, y=None):
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X):
        values = np.asarray(X, dtype=float)
        time.sleep(self.delay)
        if (values < 0).any():
            raise ValueError("SlowDoubler takes non-negative values only")
        return values[:, 0] * 2


@dataclass(frozen=True)
class Artifact:
    path: Path
    sha256: str


def _dump(model: object, path: Path) -> Artifact:
    joblib.dump(model, path)
    return Artifact(path, hashlib.sha256(path.read_bytes()).hexdigest())


def train_text_classifier(path: Path) -> Artifact:
    model = Pipeline([("tfidf", TfidfVectorizer()), ("classifier", LogisticRegression(C=10.0))])
    texts = POSITIVE_TEXTS + NEGATIVE_TEXTS
    labels = ["positive"] * len(POSITIVE_TEXTS) + ["negative"] * len(NEGATIVE_TEXTS)
    model.fit(texts, labels)
    return _dump(model, path)


def train_tabular_regressor(path: Path) -> Artifact:
    rows = np.random.default_rng(7).uniform(0, 10, size=(40, len(FEATURES)))
    frame = pd.DataFrame(rows, columns=FEATURES)
    model = Pipeline([("scale", StandardScaler()), ("regressor", LinearRegression())])
    model.fit(frame, house_price(rows))
    return _dump(model, path)


def train_matrix_classifier(path: Path) -> Artifact:
    """Fitted on a plain numpy array: no feature names, so one [n, 3] input named input-0."""
    rows = np.random.default_rng(3).normal(size=(60, 3))
    labels = (rows[:, 0] > 0).astype(int)
    return _dump(LogisticRegression().fit(rows, labels), path)


def slow_doubler(path: Path, delay: float) -> Artifact:
    return _dump(SlowDoubler(delay).fit(np.zeros((1, 1))), path)
