"""What each transport costs on its own: the server stacks our runtime is built on (uvicorn with
uvloop and httptools for REST; for gRPC the gRPC front with its worker's socket on uvloop, and
grpc.aio on uvloop where there is no front) answering a fixed body with no model,
no parsing and no metrics, loaded like the real servers. The server's CPU time per request is
the floor under anything served on that stack, whatever the handler does.

    python -m benchkit.transport rest PORT    # the empty servers, as the benchmark starts them
    python -m benchkit.transport grpc PORT
    python -m benchkit.transport grpc-front PORT
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import time
from pathlib import Path

from benchkit import ghz
from benchkit.procs import ServerProcess, cpu_seconds, free_port, process_tree
from benchkit.wrk import LoadResult, run_wrk

HERE = Path(__file__).resolve().parent
REST_ANSWER = b'{"model_name":"sentiment","outputs":[]}'


@dataclasses.dataclass(frozen=True)
class TransportRun:
    transport: str  # "REST (uvicorn, ...)" / "gRPC (grpc.aio, ...)"
    load_concurrency: int
    load: LoadResult
    cpu_us_per_request: float


# --- the empty servers (run in their own process) ---------------------------------------------------


def serve_rest(port: int) -> None:
    import uvicorn

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send(
            {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"application/json")]}
        )  # fmt: skip
        await send({"type": "http.response.body", "body": REST_ANSWER})

    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
        log_level="warning", access_log=False,
    )  # fmt: skip


def serve_grpc(port: int) -> None:
    import grpc
    import uvloop
    from grpc import aio
    from mlmodel_runtime.protocol import open_inference_pb2 as pb

    answer = pb.ModelInferResponse(model_name="sentiment").SerializeToString()

    async def infer(request: bytes, context: object) -> bytes:
        return answer

    async def main() -> None:
        server = aio.server()
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "inference.GRPCInferenceService",
                    {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)},
                ),
            )
        )
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(main())


def serve_grpc_front(port: int) -> None:
    import asyncio

    import uvloop
    from mlmodel_runtime.grpc_front import GrpcFront
    from mlmodel_runtime.protocol import open_inference_pb2 as pb
    from mlmodel_runtime.shared_front import find_front

    answer = pb.ModelInferResponse(model_name="sentiment").SerializeToString()

    class Fixed:
        """In place of the runtime's InferenceService: every call gets the same answer."""

        async def call(self, path: str, body: bytes, metadata: dict, peer: str | None) -> bytes:
            return answer

    async def main() -> None:
        binary = find_front("auto")
        if binary is None:
            raise SystemExit("mlmodel-grpc-front is not built: run make install")
        front = GrpcFront(binary, "127.0.0.1", port, [], Fixed())  # type: ignore[arg-type]
        await front.start()
        await asyncio.Event().wait()

    uvloop.run(main())


TRANSPORTS = {
    "rest": "REST (uvicorn, uvloop, httptools)",
    "grpc-front": "gRPC (the gRPC front, uvloop)",
    "grpc": "gRPC (grpc.aio, uvloop)",
}


# --- measuring them ---------------------------------------------------------------------------------


def _wait_for_port(server: ServerProcess, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited: {server.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{server.name} did not listen within {timeout:.0f}s: {server.log_tail()}")


def measure(
    python: Path,
    workdir: Path,
    *,
    rest_bodies: Path,
    grpc_messages: Path,
    concurrency: int,
    seconds: float,
) -> list[TransportRun]:
    """Each empty server in turn under `concurrency` callers for `seconds` (after a short warm-up),
    with its CPU time per request."""
    runs = []
    for kind, label in TRANSPORTS.items():
        port = free_port()
        server = ServerProcess.start(
            f"empty-{kind}",
            [str(python), "-m", "benchkit.transport", kind, str(port)],
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE.parents[1] / "runtime")])},
            cwd=workdir,
            log_path=workdir / f"empty-{kind}.log",
        )
        try:
            _wait_for_port(server, port)

            def load(duration: float, kind: str = kind, port: int = port) -> LoadResult:
                if kind == "rest":
                    url = f"http://127.0.0.1:{port}/v2/models/sentiment/infer"
                    return run_wrk(url, rest_bodies, concurrency=concurrency, seconds=duration)
                return ghz.run_ghz(
                    f"127.0.0.1:{port}", grpc_messages, concurrency=concurrency, seconds=duration
                )

            load(1.0)
            before = cpu_seconds(process_tree(server.pid))
            result = load(seconds)
            used = cpu_seconds(process_tree(server.pid)) - before
            runs.append(TransportRun(label, concurrency, result, 1e6 * used / max(result.requests, 1)))
            print(
                f"  empty     {label:34} {result.requests_per_second:9.1f} req/s "
                f"{runs[-1].cpu_us_per_request:6.0f} µs CPU/request",
                file=sys.stderr,
            )
        finally:
            server.stop()
    return runs


if __name__ == "__main__":
    {"rest": serve_rest, "grpc": serve_grpc, "grpc-front": serve_grpc_front}[sys.argv[1]](
        int(sys.argv[2])
    )
