"""The runtime image serving the sentiment example, pulled over HTTP, as it runs in a pod.

Read-only root, the image's own non-root user, a tmpfs cache, configured by MLMODEL_* only. The
artifact comes from a static file server in a second container on a private network, the way
a pod fetches it from an artifact store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import grpc
import httpx
import numpy as np
import pytest
from container_tools import (
    container_logs,
    docker,
    published_port,
    remove_container,
    wait_healthy,
)
from mlmodel_runtime.protocol import open_inference_pb2 as pb
from moto.server import ThreadedMotoServer
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LinearRegression
from support.ports import free_port, wait_until

pytestmark = pytest.mark.docker

POSITIVE = "A wonderful, moving film with superb acting. I loved every minute of it."
NEGATIVE = "Dreadful. A boring, badly acted mess and a total waste of two hours."


@pytest.fixture
def artifact_server(
    repo_root: Path, base_image: str, unique_name: str
) -> Iterator[tuple[str, str]]:
    """A private network and a static HTTP server holding examples/sentiment; yields (network, url)."""
    network = f"{unique_name}-net"
    server = f"{unique_name}-files"
    docker("network", "create", network)
    try:
        docker(
            "run", "-d", "--name", server, "--network", network, "--network-alias", "models",
            "--read-only", "--user", "65534:65534",
            "-v", f"{repo_root / 'examples' / 'sentiment'}:/srv:ro",
            base_image, "python3", "-m", "http.server", "8000", "--directory", "/srv",
        )
        yield network, "http://models:8000/model.joblib"
    finally:
        remove_container(server)
        docker("network", "rm", network, check=False)


@pytest.fixture
def runtime_container(
    runtime_image: str, artifact_server: tuple[str, str], sentiment_sha256: str, unique_name: str
) -> Iterator[tuple[str, str]]:
    """The runtime container, healthy; yields (container name, base URL on a loopback port).
    Its gRPC port is published too (``published_port(container, 8081)``)."""
    network, model_url = artifact_server
    container = f"{unique_name}-runtime"
    docker(
        "run", "-d", "--name", container, "--network", network,
        "--read-only", "--tmpfs", "/var/cache/mlmodel",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-p", "127.0.0.1::8080", "-p", "127.0.0.1::8081",
        # Faster probing than the image's default, for the test only.
        "--health-interval", "1s", "--health-start-period", "60s",
        "-e", "MLMODEL_MODEL_NAME=sentiment",
        "-e", f"MLMODEL_MODEL_URI={model_url}",
        "-e", f"MLMODEL_MODEL_SHA256={sentiment_sha256}",
        "-e", "MLMODEL_MODEL_VERSION=1.0.0",
        runtime_image,
    )
    try:
        wait_healthy(container, timeout=120)
        yield container, f"http://127.0.0.1:{published_port(container, 8080)}"
    finally:
        remove_container(container)


def test_runtime_container_serves_v2_and_v1_predictions(runtime_container: tuple[str, str]) -> None:
    _, base_url = runtime_container
    with httpx.Client(base_url=base_url, timeout=10) as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2/models/sentiment/ready").status_code == 200

        v2 = client.post("/v2/models/sentiment/infer", json={
            "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": [POSITIVE, NEGATIVE]}],
        })
        assert v2.status_code == 200, v2.text
        body = v2.json()
        assert body["model_name"] == "sentiment"
        labels = body["outputs"][0]["data"]
        assert labels == ["positive", "negative"]

        v1 = client.post("/v1/models/sentiment:predict", json={"instances": [NEGATIVE, POSITIVE]})
        assert v1.status_code == 200, v1.text
        assert v1.json()["predictions"] == ["negative", "positive"]

    # gRPC through the image's gRPC front, as the read-only, non-root container runs it.
    container, _ = runtime_container
    request = pb.ModelInferRequest(
        model_name="sentiment",
        inputs=[pb.ModelInferRequest.InferInputTensor(
            name="text", datatype="BYTES", shape=[2],
            contents=pb.InferTensorContents(bytes_contents=[POSITIVE.encode(), NEGATIVE.encode()]),
        )],
    )  # fmt: skip
    with grpc.insecure_channel(f"127.0.0.1:{published_port(container, 8081)}") as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        answer = infer(request, timeout=10)
    assert list(answer.outputs[0].contents.bytes_contents) == [b"positive", b"negative"]
    assert "/opt/venv/bin/mlmodel-grpc-front" in docker("top", container, "-o", "pid,args").stdout

    with httpx.Client(base_url=base_url, timeout=10) as client:
        metrics = client.get("/metrics").text
    assert 'mlmodel_model_ready{model="sentiment"} 1.0' in metrics
    assert "mlmodel_requests_total" in metrics
    assert 'endpoint="grpc_model_infer"' in metrics


def test_runtime_container_runs_as_non_root_and_writes_only_its_cache(
    runtime_container: tuple[str, str], sentiment_sha256: str
) -> None:
    container, _ = runtime_container
    processes = docker("top", container, "-o", "pid,uid,args").stdout.splitlines()[1:]
    assert processes and all(line.split()[1] == "10001" for line in processes), processes
    # Every file the runtime created is under its cache (the root is read-only anyway: a write
    # elsewhere would have crashed it); the verified artifact is among them.
    changed = docker("diff", container).stdout.split()
    assert changed == [] or all(
        path.startswith("/var/cache/mlmodel") for path in changed[1::2]
    ), changed
    cached = docker("exec", container, "sh", "-c", "find /var/cache/mlmodel -type f | xargs sha256sum")
    assert sentiment_sha256 in cached.stdout


def test_runtime_container_refuses_an_artifact_with_the_wrong_digest(
    runtime_image: str, artifact_server: tuple[str, str], unique_name: str
) -> None:
    network, model_url = artifact_server
    container = f"{unique_name}-bad-digest"
    docker(
        "run", "-d", "--name", container, "--network", network,
        "--read-only", "--tmpfs", "/var/cache/mlmodel", "-p", "127.0.0.1::8080",
        "-e", "MLMODEL_MODEL_NAME=sentiment",
        "-e", f"MLMODEL_MODEL_URI={model_url}",
        "-e", "MLMODEL_MODEL_SHA256=" + "0" * 64,
        runtime_image,
    )
    try:
        base_url = f"http://127.0.0.1:{published_port(container, 8080)}"
        with httpx.Client(base_url=base_url, timeout=5) as client:
            # Alive (so the pod is not restarted in a loop) but never ready, and saying why. It
            # answers "Loading" first: the download and its check come after the server is up.
            def refused() -> httpx.Response | None:
                try:
                    if client.get("/v2/health/live").status_code == 200:
                        ready = client.get("/v2/health/ready")
                        if ready.json().get("reason") != "Loading":
                            return ready
                except httpx.TransportError:
                    pass
                docker("exec", container, "true")  # fails loudly if the container died
                return None

            ready = wait_until(refused, timeout=90, what="a verdict on the artifact", every=0.5)
            assert ready.status_code == 503, ready.text
            assert ready.json()["reason"] == "ChecksumMismatch", ready.text
            assert "sha256" in ready.json()["message"].lower(), ready.text
            wait_until(
                lambda: "sha256" in container_logs(container).lower(),
                timeout=30,
                what="the runtime's log of the mismatch",
            )
    finally:
        remove_container(container)


@pytest.fixture
def s3_bucket(repo_root: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """An S3 server (moto) on a host loopback port holding the example; yields (endpoint, AWS env)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        credentials = {
            "AWS_ACCESS_KEY_ID": "container-test-key",
            "AWS_SECRET_ACCESS_KEY": "container-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        )
        s3.create_bucket(Bucket="models")
        s3.upload_file(str(repo_root / "examples/sentiment/model.joblib"), "models", "sentiment/model.joblib")
        yield endpoint, credentials
    finally:
        server.stop()


def test_runtime_container_pulls_the_artifact_from_s3(
    runtime_image: str, s3_bucket: tuple[str, dict[str, str]], sentiment_sha256: str, unique_name: str
) -> None:
    # The image's trimmed botocore (S3 and credential services only) against a real S3 API.
    # Host network: the S3 server listens on the host's loopback only.
    endpoint, credentials = s3_bucket
    container = f"{unique_name}-s3"
    port = free_port()
    docker(
        "run", "-d", "--name", container, "--network", "host",
        "--read-only", "--tmpfs", "/var/cache/mlmodel", "--health-interval", "1s",
        "-e", "MLMODEL_HOST=127.0.0.1", "-e", f"MLMODEL_PORT={port}",
        "-e", "MLMODEL_MODEL_NAME=sentiment",
        "-e", "MLMODEL_MODEL_URI=s3://models/sentiment/model.joblib",
        "-e", f"MLMODEL_MODEL_SHA256={sentiment_sha256}",
        "-e", f"MLMODEL_S3_ENDPOINT_URL={endpoint}",
        *(arg for key, value in credentials.items() for arg in ("-e", f"{key}={value}")),
        runtime_image,
    )
    try:
        wait_healthy(container, timeout=120)
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/models/sentiment:predict", json={"instances": [POSITIVE]}, timeout=10
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == ["positive"]
    finally:
        remove_container(container)


def test_runtime_image_runs_onnx_models(runtime_image: str, tmp_path: Path) -> None:
    # onnxruntime in the image is trimmed (no C API library, no offline tools): it must still run a
    # model exported by skl2onnx and agree with scikit-learn.
    features = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0], [3.0, 0.0, -2.0], [2.0, 2.0, 2.0]])
    model = LinearRegression().fit(features, features @ np.array([1.5, -2.0, 0.25]) + 3.0)
    onnx_model = convert_sklearn(model, initial_types=[("x", FloatTensorType([None, 3]))])
    tmp_path.chmod(0o755)
    (tmp_path / "model.onnx").write_bytes(onnx_model.SerializeToString())
    (tmp_path / "model.onnx").chmod(0o644)
    script = (
        "import json, sys, numpy, onnxruntime;"
        "session = onnxruntime.InferenceSession('/models/model.onnx', providers=['CPUExecutionProvider']);"
        "rows = numpy.array(json.loads(sys.argv[1]), dtype=numpy.float32);"
        "print(json.dumps(session.run(None, {'x': rows})[0].ravel().tolist()))"
    )
    output = docker(
        "run", "--rm", "--read-only", "--network", "none", "-v", f"{tmp_path}:/models:ro",
        "--entrypoint", "python", runtime_image, "-c", script, json.dumps(features.tolist()),
    ).stdout
    assert np.allclose(json.loads(output), model.predict(features), atol=1e-4)
