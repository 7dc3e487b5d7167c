"""`mlmodel serve`: the runtime's command line (the `mlmodel` command, mlmodel_cli, hands it
its arguments)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlmodel",
        description="Serve scikit-learn models over the Open Inference Protocol, on Kubernetes or locally.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve one model locally (or in the runtime container)",
        description=(
            "Serve the model described by an MLModel YAML file: the same file you kubectl apply. "
            "spec.model.uri may be a path relative to the file's folder. Without FILE, everything "
            "comes from MLMODEL_* environment variables (how the operator configures the runtime "
            "container). Endpoints: /v2/models/NAME/infer, /v1/models/NAME:predict, "
            "/v2/health/ready, /metrics, /docs; gRPC inference.GRPCInferenceService on --grpc-port."
        ),
        epilog="example: mlmodel serve examples/sentiment/mlmodel.yaml --port 8080",
    )
    serve.add_argument(
        "file", nargs="?", type=Path, metavar="FILE.yaml", help="an MLModel YAML file"
    )
    serve.add_argument("--host", help="address to listen on (default 0.0.0.0, MLMODEL_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080, MLMODEL_PORT)")
    serve.add_argument(
        "--grpc-port",
        type=int,
        help="gRPC port (default 8081, MLMODEL_GRPC_PORT); 0 turns gRPC off",
    )
    serve.add_argument(
        "--workers", type=int, help="worker processes (default: spec.runtime.workers or 1)"
    )
    serve.add_argument(
        "--log-format",
        choices=["json", "text"],
        help="default: text on a terminal, json (one object a line) otherwise",
    )
    serve.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="default info"
    )
    serve.add_argument(
        "--cache-dir", type=Path, help="where artifacts are downloaded (MLMODEL_CACHE_DIR)"
    )
    return parser


# Native math libraries size their thread pools to the node's cores by default; with several
# requests (and workers) at once those pools oversubscribe the CPU and collapse. Workers are the
# parallelism knob, so each gets one native thread unless the user says otherwise.
NATIVE_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_native_threads() -> None:
    """Must run before numpy is imported (the pools are sized then); workers inherit it."""
    for name in NATIVE_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")


def _serve(args: argparse.Namespace) -> int:
    limit_native_threads()
    from pydantic import ValidationError

    from mlmodel_runtime.manifest import ManifestError, load_settings
    from mlmodel_runtime.settings import RuntimeSettings

    overrides = {
        "host": args.host,
        "port": args.port,
        "grpc_port": args.grpc_port,
        "workers": args.workers,
        "log_format": args.log_format,
        "log_level": args.log_level,
        "cache_dir": args.cache_dir,
    }
    try:
        if args.file is not None:
            settings = load_settings(args.file, **overrides)
        else:
            settings = RuntimeSettings(
                **{key: value for key, value in overrides.items() if value is not None}
            )
    except ManifestError as exc:
        print(f"mlmodel serve: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"mlmodel serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    from mlmodel_runtime.server import serve

    return serve(settings)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
