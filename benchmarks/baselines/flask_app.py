"""The other usual tutorial service: Flask, `model.predict` once per request, served by gunicorn.

Run: MODEL_PATH=examples/sentiment/model.joblib gunicorn --workers 2 --chdir benchmarks/baselines flask_app:app
It accepts the same V2 infer body as the other servers in the benchmark, so all get the same bytes.
"""

from __future__ import annotations

import os

import joblib
from flask import Flask, jsonify, request

model = joblib.load(os.environ["MODEL_PATH"])
app = Flask(__name__)


@app.get("/health")
def health():  # type: ignore[no-untyped-def]
    return {"status": "ok"}


@app.post("/v2/models/sentiment/infer")
def infer():  # type: ignore[no-untyped-def]
    texts = request.get_json()["inputs"][0]["data"]
    labels = model.predict(texts).tolist()
    return jsonify(
        model_name="sentiment",
        outputs=[{"name": "label", "shape": [len(labels)], "datatype": "BYTES", "data": labels}],
    )
