"""The usual tutorial service: FastAPI, a pydantic request model, `model.predict` once per request.

Run: MODEL_PATH=examples/sentiment/model.joblib uvicorn fastapi_app:app --app-dir benchmarks/baselines
It accepts the same V2 infer body as the other servers in the benchmark, so all get the same bytes.
"""

from __future__ import annotations

import os

import joblib
from fastapi import FastAPI
from pydantic import BaseModel

model = joblib.load(os.environ["MODEL_PATH"])
app = FastAPI(title="sentiment (tutorial FastAPI)")


class InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[str]


class InferRequest(BaseModel):
    inputs: list[InferInput]


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


# A plain `def`: FastAPI runs it in its thread pool, as the tutorials do.
@app.post("/v2/models/sentiment/infer")
def infer(request: InferRequest) -> dict[str, object]:
    labels = model.predict(request.inputs[0].data).tolist()
    return {
        "model_name": "sentiment",
        "outputs": [{"name": "label", "shape": [len(labels)], "datatype": "BYTES", "data": labels}],
    }
