"""`mlmodel serve` as a real process (uvicorn on a loopback port): both examples, tiny models from a
YAML file and from MLMODEL_* variables, several workers, artifact failures, and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import runtime_models
from prometheus_client.parser import text_string_to_metric_families
from support.ports import free_port, listening_sockets, wait_until
from support.runtime import Models, ServerProcess, write_mlmodel

ECS_FIELDS = {"@timestamp", "log.level", "message", "ecs.version", "service.name", "labels.model"}


def test_serves_a_yaml_file_with_a_relative_uri(
    models: Models, tmp_path: Path, start_server
) -> None:
    manifest = write_mlmodel(tmp_path / "model", "reviews", models.text)
    server = start_server([str(manifest)])
    server.wait_ready()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        v2 = client.post(
            "/v2/models/reviews/infer",
            json={
                "id": "x",
                "inputs": [
                    {
                        "name": "text",
                        "shape": [1],
                        "datatype": "BYTES",
                        "data": ["great, wonderful"],
                    }
                ],
            },
            headers={"X-Request-ID": "subprocess-1"},
        )
        assert v2.status_code == 200, v2.text
        assert v2.json()["id"] == "x" and v2.json()["model_version"] == "2.0.0"
        assert v2.json()["outputs"][0]["data"] == ["positive"]
        v1 = client.post("/v1/models/reviews:predict", json={"instances": ["awful, boring"]})
        assert v1.json() == {"predictions": ["negative"]}
        assert client.get("/v2/models/reviews").json()["inputs"] == [
            {"name": "text", "datatype": "BYTES", "shape": [-1]}
        ]
        assert client.get("/v2/models/reviews/ready").status_code == 200
        bad = client.post("/v2/models/reviews/infer", content=b"not json")
        assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]
        assert client.get("/docs").status_code == 200
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    assert lines and all(ECS_FIELDS <= set(line) for line in lines)
    access = [line for line in lines if line.get("http.request.id") == "subprocess-1"]
    assert access and access[0]["http.response.status_code"] == 200
    assert any(line["message"] == "model ready" for line in lines)


def test_serves_both_examples(repo_root: Path, start_server) -> None:
    for example, name, check in (
        ("sentiment", "sentiment", lambda outputs: outputs[0]["data"] == ["positive", "negative"]),
        (
            "house-prices",
            "house-prices",
            lambda outputs: 50_000 < outputs[0]["data"][0] < outputs[0]["data"][1],
        ),
    ):
        folder = repo_root / "examples" / example
        server = start_server([str(folder / "mlmodel.yaml")])
        seconds = server.wait_ready()
        print(f"{example}: ready {seconds:.2f}s after start")
        request = json.loads((folder / "request.json").read_text())
        response = httpx.post(f"{server.url}/v2/models/{name}/infer", json=request, timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["id"] == request["id"]
        assert check(response.json()["outputs"]), response.text
        assert "does not have valid feature names" not in server.logs()
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(15) == 0


def _houses_env(models: Models, **extra: str) -> dict[str, str]:
    """The tabular model configured by environment alone, as the operator configures a pod."""
    return {
        "MLMODEL_MODEL_NAME": "houses",
        "MLMODEL_MODEL_URI": f"file://{models.tabular.path}",
        "MLMODEL_MODEL_SHA256": models.tabular.sha256,
        **extra,
    }


def _ready_pids(logs: str) -> set[int]:
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    return {line["process.pid"] for line in lines if line["message"] == "model ready"}


def test_env_only_serve_with_two_workers(models: Models, start_server) -> None:
    server = start_server(
        ["--workers", "2"],
        env=_houses_env(models),
    )
    server.wait_ready()
    # Each worker loads its own copy.
    server.wait_for(lambda: len(_ready_pids(server.logs())) >= 2, "both workers ready")
    rows = [[1.0, 2.0, 3.0, 4.0]]
    expected = float(runtime_models.house_price(__import__("numpy").array(rows))[0])
    for _ in range(6):
        with httpx.Client(base_url=server.url, timeout=10) as client:  # new connection: any worker
            response = client.post("/v1/models/houses:predict", json={"instances": rows})
            assert response.status_code == 200, response.text
            assert abs(response.json()["predictions"][0] - expected) < 1e-6
    pids = _ready_pids(server.logs())
    assert len(pids) == 2 and server.process.pid not in pids

    # Each worker listens on the port with a socket of its own (SO_REUSEPORT), so the kernel
    # spreads connections over them; with one shared socket the first worker to wake could take
    # every keep-alive connection of a burst (seen with wrk: all 8 on one worker in 2 runs of 3).
    assert listening_sockets(httpx.URL(server.url).port) == 2

    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0


def _scrape(url: str) -> dict[str, float]:
    """One scrape on a new connection (any worker answers): the prediction count, readiness and
    requests in flight, and Triton's success count."""
    with httpx.Client(base_url=url, timeout=10) as client:
        text = client.get("/metrics").text
        stats = client.get("/v2/models/houses/stats").json()["model_stats"][0]
    samples = {
        (sample.name, sample.labels.get("endpoint"), sample.labels.get("code")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return {
        "predictions": samples[("mlmodel_requests_total", "v1_predict", "200")],
        "ready": samples[("mlmodel_model_ready", None, None)],
        "in_flight": samples[("mlmodel_requests_in_flight", None, None)],
        "stats": stats["inference_stats"]["success"]["count"],
    }


def test_two_workers_answer_metrics_and_statistics_for_the_whole_server(
    models: Models, tmp_path: Path, start_server
) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    server = start_server(
        ["--workers", "2"], env=_houses_env(models, MLMODEL_GRPC_PORT="0", TMPDIR=str(temporary))
    )
    server.wait_ready()
    server.wait_for(lambda: len(_ready_pids(server.logs())) >= 2, "both workers ready")
    (shared,) = temporary.glob("mlmodel-metrics-*")  # the supervisor's, for its workers
    for index in range(20):
        with httpx.Client(base_url=server.url, timeout=10) as client:  # new connection: any worker
            response = client.post(
                "/v1/models/houses:predict",
                json={"instances": [[1.0, 2.0, 3.0, 4.0]]},
                headers={"X-Request-ID": f"m-{index}"},
            )
            assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    served = {
        line["process.pid"]
        for line in lines
        if str(line.get("http.request.id", "")).startswith("m-")
    }
    assert served == _ready_pids(server.logs())  # both workers answered some of the 20
    whole = {"predictions": 20, "ready": 1, "in_flight": 0, "stats": 20}
    # Statistics are published once a second: within a few, every scrape reads the whole server.
    server.wait_for(
        lambda: all(_scrape(server.url) == whole for _ in range(6)), "every scrape reads 20", 10
    )

    # A worker killed outright: its counts stay in the sums, its gauges leave them.
    victim = min(served)
    os.kill(victim, signal.SIGKILL)
    server.wait_for_log("worker died, restarting")
    server.wait_for(lambda: len(_ready_pids(server.logs())) >= 3, "the new worker ready")
    server.wait_for(
        lambda: all(_scrape(server.url) == whole for _ in range(6)),
        "every scrape reads 20 after the restart",
        10,
    )
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
    assert not shared.exists()


def test_unreachable_artifact_keeps_the_process_alive_and_not_ready(
    models: Models, start_server
) -> None:
    closed_port = free_port()
    server = start_server(
        [],
        env={
            "MLMODEL_MODEL_NAME": "gone",
            "MLMODEL_MODEL_URI": f"http://127.0.0.1:{closed_port}/model.joblib",
            "MLMODEL_MODEL_SHA256": models.text.sha256,
        },
    )
    server.wait_listening()
    deadline = time.monotonic() + 20
    body: dict = {}
    while time.monotonic() < deadline:
        ready = httpx.get(f"{server.url}/v2/health/ready", timeout=5)
        assert ready.status_code == 503
        body = ready.json()
        if body["reason"] != "Loading":
            break
        time.sleep(0.1)
    assert body["reason"] == "ArtifactUnreachable", body
    assert f"127.0.0.1:{closed_port}" in body["message"]
    time.sleep(1.0)
    assert server.process.poll() is None
    assert httpx.get(f"{server.url}/v2/health/live", timeout=5).status_code == 200
    metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert 'mlmodel_artifact_errors_total{model="gone",reason="ArtifactUnreachable"}' in metrics


def _not_ready(url: str) -> httpx.Response | None:
    response = httpx.get(url, timeout=5)
    return response if response.status_code != 200 else None


def test_sigterm_flips_readiness_first_and_finishes_the_request(
    tmp_path: Path, start_server
) -> None:
    slow = runtime_models.slow_doubler(tmp_path / "slow.joblib", delay=2.0)
    manifest = write_mlmodel(tmp_path / "model", "slow", slow)
    server = start_server(
        [str(manifest)],
        env={"MLMODEL_SHUTDOWN_DRAIN_SECONDS": "0.5", "MLMODEL_SHUTDOWN_GRACE_SECONDS": "15"},
    )
    server.wait_ready()
    result: dict = {}

    def call() -> None:
        request = {
            "inputs": [{"name": "input-0", "shape": [1, 1], "datatype": "FP64", "data": [21.0]}]
        }
        result["response"] = httpx.post(
            f"{server.url}/v2/models/slow/infer", json=request, timeout=30
        )

    caller = threading.Thread(target=call)
    caller.start()
    wait_until(
        lambda: (
            'mlmodel_requests_in_flight{model="slow"} 1.0'
            in httpx.get(f"{server.url}/metrics").text
        ),
        timeout=10,
        what="the request to start",
        every=0.02,
    )
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    # Within the 0.5 s drain the server still answers, and readiness is already false.
    ready = wait_until(
        lambda: _not_ready(f"{server.url}/v2/health/ready"),
        timeout=5,
        what="readiness to turn false",
        every=0.02,
    )
    assert ready.status_code == 503
    assert ready.json()["reason"] == "ShuttingDown"
    caller.join(30)
    assert result["response"].status_code == 200, result["response"].text
    assert result["response"].json()["outputs"][0]["data"] == [42.0]
    assert server.process.wait(15) == 0
    assert time.monotonic() - signalled < 15
    messages = [
        json.loads(line)["message"] for line in server.logs().splitlines() if line.startswith("{")
    ]
    assert "shutting down, readiness now false" in messages
    assert messages.index("shutting down, readiness now false") < messages.index(
        "draining done, stopping"
    )


def _houses_infer(channel: Any) -> tuple[Any, Any]:
    """ModelInfer on ``channel`` (a grpc.Channel), and one row for the houses model."""
    from mlmodel_runtime.protocol import open_inference_pb2 as pb

    request = pb.ModelInferRequest(
        model_name="houses",
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="input-0", datatype="FP64", shape=[1, 4],
                contents=pb.InferTensorContents(fp64_contents=[1.0, 2.0, 3.0, 4.0]),
            )
        ],
    )  # fmt: skip
    call = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    return call, request


def _grpc_infer(target: str, request_id: str) -> float:
    """One ModelInfer on a connection of its own (a local subchannel pool: no sharing)."""
    import grpc

    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        call, request = _houses_infer(channel)
        response = call(request, timeout=10, metadata=(("x-request-id", request_id),))
    return response.outputs[0].contents.fp64_contents[0]


def _grpc_served_by(server: ServerProcess, prefix: str) -> set[int]:
    """The workers that answered the ModelInfer calls whose request ids start with ``prefix``."""
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    return {
        line["process.pid"]
        for line in lines
        if str(line.get("http.request.id", "")).startswith(prefix)
        and line["url.path"] == "/inference.GRPCInferenceService/ModelInfer"
        and line["http.response.status_code"] == 200
    }


@pytest.mark.parametrize(
    ("carrier", "listening"),
    [("auto", 1), ("off", 6)],
    ids=["front", "grpc.aio"],
)
def test_two_workers_share_the_grpc_port(
    models: Models, start_server, carrier: str, listening: int
) -> None:
    server = start_server(
        ["--workers", "2"],
        env=_houses_env(models, MLMODEL_GRPC_FRONT=carrier, MLMODEL_GRPC_ACCEPTORS="3"),
    )
    server.wait_ready()
    server.wait_for(
        lambda: len(_ready_pids(server.logs())) >= 2 and server.logs().count("gRPC listening") >= 2,
        "both workers ready and serving gRPC",
    )
    # The supervisor's one gRPC front listens on the port (the supervisor's socket), or each
    # worker's 3 grpc.aio servers listen with a socket each (SO_REUSEPORT).
    port = httpx.URL(f"http://{server.grpc_target}").port
    assert listening_sockets(port) == listening
    expected = float(runtime_models.house_price(np.array([[1.0, 2.0, 3.0, 4.0]]))[0])
    sent = 0

    def calls() -> set[int]:
        nonlocal sent
        for index in range(sent, sent + 16):
            assert abs(_grpc_infer(server.grpc_target, f"g-{index}") - expected) < 1e-6
        sent += 16
        return _grpc_served_by(server, "g-")

    # Calls on new connections: the front takes turns between ready workers (a worker tells it
    # it is ready a moment after its "model ready" line); the kernel hashes connections over the
    # sockets (16 all on one: 2 in 65,536).
    workers = _ready_pids(server.logs())
    server.wait_for(lambda: calls() == workers, "gRPC calls answered by both workers", 20)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
    assert listening_sockets(port) == 0  # the front stopped after the workers, or with them


def test_one_grpc_channel_uses_every_worker(models: Models, start_server) -> None:
    import grpc

    server = start_server(["--workers", "2"], env=_houses_env(models))
    server.wait_ready()
    server.wait_for(
        lambda: len(_ready_pids(server.logs())) >= 2 and server.logs().count("gRPC listening") >= 2,
        "both workers ready and serving gRPC",
    )
    assert '"mlmodel.grpc_front":"shared"' in server.logs().replace(" ", "")
    with grpc.insecure_channel(server.grpc_target) as channel:  # one HTTP/2 connection
        infer, request = _houses_infer(channel)
        workers, sent = _ready_pids(server.logs()), 0

        def burst() -> set[int]:
            # A worker tells the front it is ready a moment after its "model ready" line (the
            # front sends calls to ready workers): bursts of 32 until both have answered some.
            nonlocal sent
            futures = [
                infer.future(request, timeout=10, metadata=(("x-request-id", f"one-{index}"),))
                for index in range(sent, sent + 32)
            ]
            sent += 32
            assert all(future.result().outputs[0].contents.fp64_contents for future in futures)
            return _grpc_served_by(server, "one-")

        # Through per-worker listeners (SO_REUSEPORT) the connection stays on one worker,
        # however long this waits.
        server.wait_for(lambda: burst() == workers, "one channel's calls answered by both workers", 20)


def test_a_taken_grpc_port_leaves_http_serving(models: Models, start_server) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = start_server(
            [],
            env=_houses_env(models, MLMODEL_GRPC_PORT=str(port)),
        )
        server.wait_ready()
        lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
        (error,) = [line for line in lines if line["message"].startswith("gRPC not served")]
        assert error["log.level"] == "error" and error["mlmodel.grpc_port"] == port
        assert "MLMODEL_GRPC_PORT" in error["mlmodel.hint"]
        response = httpx.post(
            f"{server.url}/v1/models/houses:predict",
            json={"instances": [[1.0, 2.0, 3.0, 4.0]]},
            timeout=10,
        )
        assert response.status_code == 200
