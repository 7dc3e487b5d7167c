"""The servers the serving benchmark compares, each described as the command that starts it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from benchkit.procs import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO_ROOT / "benchmarks"
MANIFEST = REPO_ROOT / "examples" / "sentiment" / "mlmodel.yaml"
ARTIFACT = REPO_ROOT / "examples" / "sentiment" / "model.joblib"
MODEL_NAME = "sentiment"
INFER_PATH = f"/v2/models/{MODEL_NAME}/infer"


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where things are for one benchmark run."""

    project_venv: Path
    workdir: Path  # scratch space for logs and the files servers write into their cwd


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    name: str
    description: str
    # None: the project's own environment; else a folder under benchmarks/ built from `requirements`.
    venv: str | None
    requirements: str | None
    command: Callable[[Path, int], list[str]]  # (bin dir, port) -> argv
    env: Callable[[int], Mapping[str, str]]  # port -> extra environment
    ready_path: str
    startup_timeout: float = 120.0
    is_ours: bool = False
    # How to put its gRPC service on a given port (extra argv, extra environment); None: no gRPC.
    grpc_args: Callable[[int], list[str]] | None = None
    grpc_env: Callable[[int], Mapping[str, str]] | None = None

    @property
    def serves_grpc(self) -> bool:
        return self.grpc_args is not None or self.grpc_env is not None

    def bin_dir(self, layout: Layout) -> Path:
        venv = layout.project_venv if self.venv is None else BENCHMARKS / self.venv
        return venv / "bin"


def ours(workers: int, grpc_acceptors: int | None = None) -> ServerSpec:
    """``grpc_acceptors``: gRPC by grpc.aio without the gRPC front (MLMODEL_GRPC_FRONT=off), with
    MLMODEL_GRPC_ACCEPTORS servers; None: the runtime's defaults (the front)."""
    suffix = "" if grpc_acceptors is None else f"-aio{grpc_acceptors}"
    described = (
        "" if grpc_acceptors is None
        else f", gRPC by grpc.aio (MLMODEL_GRPC_FRONT=off, MLMODEL_GRPC_ACCEPTORS={grpc_acceptors})"
    )  # fmt: skip
    return ServerSpec(
        name=f"ours-w{workers}{suffix}",
        description=f"`mlmodel serve` (this project), {workers} worker process{'es' if workers > 1 else ''}{described}",
        venv=None,
        requirements=None,
        # The cache dir is relative: the server's scratch folder (its working directory).
        command=lambda bin_dir, port: [
            str(bin_dir / "mlmodel"),
            "serve",
            str(MANIFEST),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--cache-dir",
            "cache",
        ],
        env=lambda port: {} if grpc_acceptors is None else {
            "MLMODEL_GRPC_FRONT": "off", "MLMODEL_GRPC_ACCEPTORS": str(grpc_acceptors)
        },
        ready_path=f"/v2/models/{MODEL_NAME}/ready",
        is_ours=True,
        grpc_args=lambda grpc_port: ["--grpc-port", str(grpc_port)],
    )


MLSERVER = ServerSpec(
    name="mlserver",
    description="MLServer 1.7.1 + mlserver-sklearn, default settings (1 parallel inference worker)",
    venv=".venv-mlserver",
    requirements="requirements-mlserver.txt",
    command=lambda bin_dir, port: [
        str(bin_dir / "mlserver"),
        "start",
        str(BENCHMARKS / "baselines" / "mlserver"),
    ],
    env=lambda port: {
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": str(port),
        # gRPC and metrics listen on ports of their own; any free ones will do.
        "MLSERVER_GRPC_PORT": str(free_port()),
        "MLSERVER_METRICS_PORT": str(free_port()),
        # Its default debug=True logs every request; the other servers log none either.
        "MLSERVER_DEBUG": "false",
    },
    ready_path=f"/v2/models/{MODEL_NAME}/ready",
    grpc_env=lambda grpc_port: {"MLSERVER_GRPC_PORT": str(grpc_port)},
)

FASTAPI = ServerSpec(
    name="fastapi",
    description="tutorial FastAPI app (benchmarks/baselines/fastapi_app.py), uvicorn, 1 worker",
    venv=".venv-baselines",
    requirements="requirements-baselines.txt",
    command=lambda bin_dir, port: [
        str(bin_dir / "uvicorn"),
        "fastapi_app:app",
        "--app-dir",
        str(BENCHMARKS / "baselines"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
    ],
    env=lambda port: {"MODEL_PATH": str(ARTIFACT)},
    ready_path="/health",
)

FLASK = ServerSpec(
    name="flask",
    description="tutorial Flask app (benchmarks/baselines/flask_app.py), gunicorn, 2 sync workers",
    venv=".venv-baselines",
    requirements="requirements-baselines.txt",
    command=lambda bin_dir, port: [
        str(bin_dir / "gunicorn"),
        "--workers",
        "2",
        "--chdir",
        str(BENCHMARKS / "baselines"),
        "--bind",
        f"127.0.0.1:{port}",
        "flask_app:app",
    ],
    env=lambda port: {"MODEL_PATH": str(ARTIFACT)},
    ready_path="/health",
)

# What a plain run compares; the others are there to be asked for by name (--servers).
_COMPARED = (ours(1), ours(2), MLSERVER, FASTAPI, FLASK)
SERVERS: dict[str, ServerSpec] = {
    spec.name: spec for spec in (*_COMPARED, ours(1, grpc_acceptors=1), ours(1, grpc_acceptors=16))
}
DEFAULT_SERVERS = tuple(spec.name for spec in _COMPARED)


def server_environment(spec: ServerSpec, port: int) -> dict[str, str]:
    """The caller's environment without anything that would configure a server behind our back."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("MLMODEL_", "MLSERVER_", "GUNICORN_", "UVICORN_", "WEB_CONCURRENCY", "VIRTUAL_ENV")
        )
    }
    env.update(spec.env(port))
    env["PYTHONUNBUFFERED"] = "1"
    return env
