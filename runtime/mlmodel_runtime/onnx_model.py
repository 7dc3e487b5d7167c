"""Models exported to ONNX (e.g. with skl2onnx), served with onnxruntime: loading parses a graph
and runs no code, so such an artifact is safe without a sha256. The signature is read from the
graph and the outputs renamed to the scikit-learn class's, so clients see no difference."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlmodel_runtime.model import (
    LABEL_OUTPUT,
    MATRIX_INPUT,
    PREDICT_OUTPUT,
    PROBABILITIES_OUTPUT,
    TEXT_INPUT,
    ModelLoadError,
    Outputs,
    Rows,
    Signature,
    TensorSpec,
    ThreadedModel,
)
from mlmodel_runtime.tokenization import TokenFeeds

logger = logging.getLogger("mlmodel_runtime.onnx_model")

# ONNX element types we can feed from JSON, and the V2 datatype each is documented as.
_FLOAT_INPUTS = {"tensor(float)": ("FP32", np.float32), "tensor(double)": ("FP64", np.float64)}
_STRING_INPUT = "tensor(string)"
_TENSOR_DATATYPES = {
    "tensor(string)": "BYTES", "tensor(int64)": "INT64", "tensor(int32)": "INT32",
    "tensor(float)": "FP64", "tensor(double)": "FP64", "tensor(bool)": "BOOL",
}  # fmt: skip


@dataclass(frozen=True)
class _Feeds:
    """How request rows become the session's inputs."""

    names: tuple[str, ...]  # one name: the whole matrix (or text column); several: one per column
    dtype: Any  # np.float32 / np.float64 / object
    column: bool  # the graph wants [n, 1] rather than [n]


def _rank(shape: Any) -> int:
    return len(shape) if isinstance(shape, (list, tuple)) else 0


def _width(shape: Any) -> int:
    """The fixed second dimension of a [n, k] shape, 0 when unknown."""
    if _rank(shape) == 2 and isinstance(shape[1], int) and shape[1] > 0:
        return int(shape[1])
    return 0


def _inputs(
    session_inputs: list[Any],
) -> tuple[tuple[TensorSpec, ...], _Feeds, bool, int, tuple[str, ...]]:
    """(input specs, feeds, takes_text, n_features, feature names) from the graph's inputs."""
    if len(session_inputs) == 1:
        only = session_inputs[0]
        if only.type == _STRING_INPUT:
            if _rank(only.shape) == 2 and _width(only.shape) not in (0, 1):
                raise ModelLoadError(
                    "UnsupportedInputs",
                    f'the ONNX input "{only.name}" takes {only.shape[1]} strings per row; this runtime '
                    "serves text models with one string per row (shape [None, 1] or [None])",
                )
            feeds = _Feeds((only.name,), object, _rank(only.shape) == 2)
            return (TensorSpec(only.name, "BYTES", (-1,)),), feeds, True, 0, ()
        if only.type in _FLOAT_INPUTS:
            datatype, dtype = _FLOAT_INPUTS[only.type]
            width = _width(only.shape)
            if width <= 0:
                raise ModelLoadError(
                    "UnknownInputs",
                    f'the ONNX input "{only.name}" has shape {only.shape}: export it with a fixed number '
                    "of features, e.g. skl2onnx.to_onnx(model, X[:1].astype(numpy.float32))",
                )
            feeds = _Feeds((only.name,), dtype, False)
            return (TensorSpec(MATRIX_INPUT, datatype, (-1, width)),), feeds, False, width, ()
    # One input per feature (skl2onnx exports a DataFrame's columns that way): each [n, 1] or [n].
    if session_inputs and all(
        item.type in _FLOAT_INPUTS and _width(item.shape) in (0, 1) for item in session_inputs
    ):
        types = {item.type for item in session_inputs}
        if len(types) == 1:
            datatype, dtype = _FLOAT_INPUTS[types.pop()]
            names = tuple(item.name for item in session_inputs)
            feeds = _Feeds(names, dtype, _rank(session_inputs[0].shape) == 2)
            specs = tuple(TensorSpec(name, datatype, (-1,)) for name in names)
            return specs, feeds, False, len(names), names
    described = ", ".join(f"{item.name} {item.type} {item.shape}" for item in session_inputs)
    raise ModelLoadError(
        "UnsupportedInputs",
        f"the ONNX graph takes inputs this runtime cannot feed from JSON ({described}): export one "
        "string input (text), one float matrix, or one float column per feature",
    )


class OnnxModel(ThreadedModel):
    """An ONNX graph run by onnxruntime with one intra-op thread per worker process (workers scale
    across cores; threads inside one process would fight them) on one executor thread, in order."""

    platform = "onnxruntime"

    def __init__(self, name: str, version: str = "") -> None:
        super().__init__(name, version)
        self._session: Any = None
        self._feeds: _Feeds | None = None
        self._tokens: TokenFeeds | None = None  # a transformer: texts become token ids here
        self._outputs: dict[str, str] = {}  # our output name -> the graph's
        self._zipmap = False  # probabilities come as one {label: p} dict per row

    @property
    def ready(self) -> bool:
        return self._session is not None

    def _release(self) -> None:
        self._session = None
        self._tokens = None

    def _load_sync(self, path: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: its warnings are not JSON lines
        try:
            session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # a corrupt or unsupported graph
            raise ModelLoadError(
                "ModelLoadFailed",
                f"onnxruntime cannot load {path.name} ({type(exc).__name__}: {exc}); export the model "
                "with skl2onnx (or another ONNX converter) and check it opens with "
                "onnxruntime.InferenceSession",
            ) from exc
        tokens = TokenFeeds.from_session(session)
        if tokens is None:
            specs, feeds, takes_text, n_features, feature_names = _inputs(session.get_inputs())
        else:
            specs, feeds, takes_text, n_features, feature_names = (
                (TensorSpec(TEXT_INPUT, "BYTES", (-1,)),), None, True, 0, ()
            )
        self._session, self._feeds, self._tokens = session, feeds, tokens
        self._signature = self._derive_outputs(
            session, specs, takes_text, n_features, feature_names
        )

    def _derive_outputs(
        self,
        session: Any,
        inputs: tuple[TensorSpec, ...],
        takes_text: bool,
        n_features: int,
        feature_names: tuple[str, ...],
    ) -> Signature:
        graph_outputs = session.get_outputs()
        if not graph_outputs:
            raise ModelLoadError("UnknownOutputs", "the ONNX graph has no outputs")
        first = graph_outputs[0]
        probability = graph_outputs[1] if len(graph_outputs) > 1 else None
        # A first run on a neutral row tells the class labels and the probability width, which
        # the graph's declared shapes often leave open; it also warms the session up.
        self._outputs = {PREDICT_OUTPUT: first.name}
        sample_rows: Rows = [""] if takes_text else np.zeros((1, n_features))
        try:
            sample = self._session.run(None, self._feed(sample_rows))
        except Exception as exc:  # noqa: BLE001 - only the shapes are left unknown
            logger.info("model warm-up skipped", extra={"error": str(exc)})
            sample = None
        if probability is None:
            # A regressor: one value per row, or one row of values per row.
            width = _width(first.shape)
            if sample is not None:
                width = int(np.asarray(sample[0]).reshape(1, -1).shape[1])
            shape = (-1,) if width in (0, 1) else (-1, width)
            predict = (TensorSpec(PREDICT_OUTPUT, "FP64", shape),)
            return Signature(inputs, predict, takes_text, n_features, feature_names)
        self._zipmap = probability.type.startswith("seq(map(")
        self._outputs = {LABEL_OUTPUT: first.name, PROBABILITIES_OUTPUT: probability.name}
        labels: tuple[Any, ...] = ()
        width = _width(probability.shape)
        if sample is not None and self._zipmap:
            labels = tuple(sample[1][0].keys())
            width = len(labels)
        elif sample is not None:
            width = int(np.asarray(sample[1]).shape[1])
        label_type = _TENSOR_DATATYPES.get(first.type, "BYTES")
        outputs: tuple[TensorSpec, ...] = (
            TensorSpec(LABEL_OUTPUT, label_type, (-1,)),
            TensorSpec(PROBABILITIES_OUTPUT, "FP64", (-1, width or -1)),
        )
        return Signature(inputs, outputs, takes_text, n_features, feature_names, labels)

    def _feed(self, rows: Rows) -> dict[str, np.ndarray]:
        if self._tokens is not None:
            return self._tokens(rows)  # type: ignore[arg-type]  # a text model's rows are strings
        feeds = self._feeds
        assert feeds is not None
        if len(feeds.names) == 1:
            values = np.asarray(rows, dtype=feeds.dtype)
            if feeds.dtype is object and feeds.column:
                values = values.reshape(-1, 1)
            return {feeds.names[0]: values}
        matrix = np.asarray(rows, dtype=feeds.dtype)
        return {
            name: matrix[:, index : index + 1] if feeds.column else matrix[:, index]
            for index, name in enumerate(feeds.names)
        }

    def predict_sync(self, rows: Rows) -> Outputs:
        session = self._session
        if session is None:
            raise RuntimeError("model not loaded")
        wanted = list(self._outputs.values())
        if self._tokens is not None:  # in groups of similar length: padding costs on a CPU
            ran = self._tokens.run(session.run, wanted, rows)  # type: ignore[arg-type]
        else:
            ran = session.run(wanted, self._feed(rows))
        results: dict[str, Any] = dict(zip(wanted, ran, strict=True))
        if PREDICT_OUTPUT in self._outputs:
            values = np.asarray(results[self._outputs[PREDICT_OUTPUT]], dtype=np.float64)
            if values.ndim == 2 and values.shape[1] == 1:
                values = values[:, 0]
            return {PREDICT_OUTPUT: values}
        labels = np.asarray(results[self._outputs[LABEL_OUTPUT]])
        probabilities = results[self._outputs[PROBABILITIES_OUTPUT]]
        if self._zipmap:
            classes = self.signature.labels
            if not classes and probabilities:
                classes = tuple(probabilities[0].keys())
            probabilities = [[row[label] for label in classes] for row in probabilities]
        return {
            LABEL_OUTPUT: labels,
            PROBABILITIES_OUTPUT: np.asarray(probabilities, dtype=np.float64).reshape(
                len(labels), -1
            ),
        }
