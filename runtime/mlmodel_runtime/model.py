"""The one async model interface (load / predict / unload / ready) and its scikit-learn implementation,
with the model's signature (inputs, outputs, datatypes, shapes) read from the fitted estimator."""

from __future__ import annotations

import asyncio
import functools
import logging
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("mlmodel_runtime.model")

# What one request (or one batch of requests) hands the model: texts, or a float64 matrix with
# one column per feature. Both concatenate cheaply, which is what batching needs.
Rows = list[str] | np.ndarray
Outputs = dict[str, np.ndarray]

LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"
PREDICT_OUTPUT = "predict"
MATRIX_INPUT = "input-0"
TEXT_INPUT = "text"


class ModelLoadError(Exception):
    """The artifact was fetched but is not a model this runtime can serve; ``reason`` is CamelCase."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Signature:
    """What the model takes and returns, decided once at load time."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    takes_text: bool
    n_features: int = 0  # tabular models only
    feature_names: tuple[str, ...] = ()  # empty when the model was fitted without column names
    labels: tuple[Any, ...] = ()  # classifiers only

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.outputs)


class Model(ABC):
    """A served model. ``predict`` may be awaited concurrently; implementations serialise as needed."""

    name: str
    version: str
    platform: str

    @property
    @abstractmethod
    def ready(self) -> bool: ...

    @property
    @abstractmethod
    def signature(self) -> Signature: ...

    @abstractmethod
    async def load(self, path: Path) -> None: ...

    @abstractmethod
    async def predict(self, rows: Rows) -> Outputs:
        """Predict every row; each output's first dimension is the number of rows."""

    @abstractmethod
    async def unload(self) -> None: ...


def datatype_of(dtype: np.dtype) -> str:
    """The Open Inference Protocol datatype for values of this numpy dtype."""
    kind = dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64"
    return "BYTES"


def _unwrap(estimator: Any) -> Any:
    """The first step that sees the raw input (through pipelines and target transformers)."""
    from sklearn.pipeline import Pipeline

    while True:
        if isinstance(estimator, Pipeline):
            estimator = estimator.steps[0][1]
        elif hasattr(estimator, "regressor_") and hasattr(estimator, "transformer_"):
            estimator = estimator.regressor_
        else:
            return estimator


def _takes_text(estimator: Any) -> bool:
    from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer

    return isinstance(_unwrap(estimator), (CountVectorizer, HashingVectorizer))


def derive_signature(estimator: Any) -> Signature:
    """Read inputs and outputs from a fitted estimator; raise ModelLoadError when it cannot serve."""
    from sklearn.base import is_classifier

    if not callable(getattr(estimator, "predict", None)):
        raise ModelLoadError(
            "NotAModel",
            f"the artifact holds a {type(estimator).__name__}, which has no predict(): save a fitted "
            "scikit-learn estimator or pipeline with joblib.dump",
        )
    takes_text = _takes_text(estimator)
    feature_names: tuple[str, ...] = ()
    n_features = 0
    if takes_text:
        inputs: tuple[TensorSpec, ...] = (TensorSpec(TEXT_INPUT, "BYTES", (-1,)),)
    else:
        names = getattr(estimator, "feature_names_in_", None)
        n_features = int(
            getattr(estimator, "n_features_in_", 0) or (len(names) if names is not None else 0)
        )
        if n_features <= 0:
            raise ModelLoadError(
                "UnknownInputs",
                f"cannot tell how many features {type(estimator).__name__} takes (no n_features_in_): "
                "is the model fitted?",
            )
        if names is not None and all(isinstance(name, str) for name in names):
            feature_names = tuple(str(name) for name in names)
            inputs = tuple(TensorSpec(name, "FP64", (-1,)) for name in feature_names)
        else:
            inputs = (TensorSpec(MATRIX_INPUT, "FP64", (-1, n_features)),)

    labels: tuple[Any, ...] = ()
    if is_classifier(estimator) and getattr(estimator, "classes_", None) is not None:
        classes = np.asarray(estimator.classes_)
        labels = tuple(classes.tolist())
        outputs: tuple[TensorSpec, ...] = (
            TensorSpec(LABEL_OUTPUT, datatype_of(classes.dtype), (-1,)),
        )
        if hasattr(estimator, "predict_proba"):
            outputs += (TensorSpec(PROBABILITIES_OUTPUT, "FP64", (-1, len(labels))),)
    else:
        n_targets = getattr(estimator, "n_outputs_", 1) or 1
        shape = (-1,) if n_targets == 1 else (-1, int(n_targets))
        outputs = (TensorSpec(PREDICT_OUTPUT, "FP64", shape),)
    return Signature(
        inputs=inputs,
        outputs=outputs,
        takes_text=takes_text,
        n_features=n_features,
        feature_names=feature_names,
        labels=labels,
    )


class ThreadedModel(Model):
    """A model whose loading and predictions run in order on one worker thread of its own, so
    CPU-bound work never blocks the event loop. Subclasses write the blocking halves."""

    def __init__(self, name: str, version: str = "") -> None:
        self.name = name
        self.version = version
        self._signature: Signature | None = None
        # One thread: model calls do not gain from running side by side under the GIL (and the
        # native ones get one thread per worker process), and a single queue keeps batches in order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    @property
    def signature(self) -> Signature:
        if self._signature is None:
            raise RuntimeError("model not loaded")
        return self._signature

    async def load(self, path: Path) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load_sync, path)

    async def predict(self, rows: Rows) -> Outputs:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self.predict_sync, rows
        )

    async def unload(self) -> None:
        self._release()
        self._executor.shutdown(wait=False, cancel_futures=True)

    @abstractmethod
    def _load_sync(self, path: Path) -> None:
        """Load the artifact and set the signature; raise ModelLoadError saying what is wrong."""

    @abstractmethod
    def predict_sync(self, rows: Rows) -> Outputs: ...

    @abstractmethod
    def _release(self) -> None: ...


class SKLearnModel(ThreadedModel):
    """A scikit-learn estimator or pipeline saved with joblib."""

    platform = "sklearn"

    def __init__(self, name: str, version: str = "") -> None:
        super().__init__(name, version)
        self._estimator: Any = None

    @property
    def ready(self) -> bool:
        return self._estimator is not None

    def _release(self) -> None:
        self._estimator = None

    def _load_sync(self, path: Path) -> None:
        import joblib

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                estimator = joblib.load(path)
            except Exception as exc:  # unpickling can raise almost anything on a bad file
                raise ModelLoadError(
                    "ModelLoadFailed",
                    f"cannot load {path.name} as a joblib/pickle file ({type(exc).__name__}: {exc}); "
                    "save the model with joblib.dump and the scikit-learn version this runtime pins",
                ) from exc
        for warning in caught:
            # InconsistentVersionWarning and friends: loading worked but the user should know.
            logger.warning("model load warning", extra={"warning": str(warning.message)})
        signature = derive_signature(estimator)
        self._estimator = estimator
        self._signature = signature
        self._warm_up(signature)

    def _warm_up(self, signature: Signature) -> None:
        # The first call pays for lazy imports and caches inside scikit-learn; pay it before ready.
        rows: Rows = [""] if signature.takes_text else np.zeros((1, signature.n_features))
        try:
            self.predict_sync(rows)
        except Exception as exc:  # a model may reject zeros; real requests will tell
            if signature.feature_names and not _pandas_available():
                # Fitted on a DataFrame and refusing a plain array: it selects columns by name.
                raise ModelLoadError(
                    "MissingDependency",
                    "this model was fitted on a pandas DataFrame and selects its columns by name; "
                    "install pandas in the runtime (pip install pandas) to serve it",
                ) from exc
            logger.info("model warm-up skipped", extra={"error": str(exc)})

    def predict_sync(self, rows: Rows) -> Outputs:
        estimator = self._estimator
        signature = self._signature
        if estimator is None or signature is None:
            raise RuntimeError("model not loaded")
        features: Any = rows
        if signature.feature_names:
            features = _named_columns(rows, signature.feature_names)
        if not signature.labels:
            return {PREDICT_OUTPUT: np.asarray(estimator.predict(features), dtype=np.float64)}
        final, transformed = _final_step(estimator, features)
        outputs = {LABEL_OUTPUT: np.asarray(final.predict(transformed))}
        if len(signature.outputs) > 1:
            outputs[PROBABILITIES_OUTPUT] = np.asarray(
                final.predict_proba(transformed), dtype=np.float64
            )
        return outputs


@functools.cache
def _pandas_available() -> bool:
    try:
        import pandas  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        # The runtime image leaves pandas out (it is large). Rows then go as an array in the
        # fitted column order, which is what a model using its columns by position sees at fit
        # time; the warning about the missing names says nothing new, so it is silenced once.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        return False
    return True


def _named_columns(rows: Rows, names: Sequence[str]) -> Any:
    """Rows shaped as the model saw them at fit time: a DataFrame with its column names when
    pandas is installed, otherwise an array with the columns in the fitted order."""
    if not _pandas_available():
        return np.asarray(rows, dtype=np.float64)
    import pandas as pd  # type: ignore[import-untyped]

    return pd.DataFrame(rows, columns=list(names), copy=False)


def _final_step(estimator: Any, features: Any) -> tuple[Any, Any]:
    """For a pipeline, transform once and return its final estimator with the transformed rows,
    so labels and probabilities do not each pay for the (costly) feature extraction."""
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline) and len(estimator.steps) > 1:
        return estimator.steps[-1][1], estimator[:-1].transform(features)
    return estimator, features
