"""The runtime's app for `uvicorn --factory runtime_asgi:app`, configured by MLMODEL_* variables:
uvicorn's own options (--root-path...) in front of the real app."""

from __future__ import annotations

from fastapi import FastAPI
from mlmodel_runtime.app import create_app
from mlmodel_runtime.settings import RuntimeSettings


def app() -> FastAPI:
    return create_app(RuntimeSettings())
