"""The inference clients people already have, unchanged, against `mlmodel serve` of both examples:
tritonclient (HTTP and gRPC) and the KServe SDK (REST V1 and V2, gRPC), each with its defaults and
with its explicit JSON/typed mode, every answer compared with the plain JSON answer. Each client runs
in a process of its own (inference_clients.py): the gRPC clients' generated modules clash."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from support.runtime import RUNTIME_TESTS, ServerProcess, launch_server, stop_server

EXAMPLES = ("sentiment", "house-prices")
CLIENTS = ("triton-http", "triton-grpc", "kserve-rest-v1", "kserve-rest-v2", "kserve-grpc")


@pytest.fixture(scope="module")
def servers(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    started = {
        name: launch_server(
            [str(repo_root / "examples" / name / "mlmodel.yaml")], tmp_path_factory.mktemp(name)
        )
        for name in EXAMPLES
    }
    try:
        for server in started.values():
            server.wait_ready()
            server.wait_for_log("gRPC listening", timeout=30)
        yield started
    finally:
        for server in started.values():
            stop_server(server)
            assert "unhandled error" not in server.logs(), server.logs()[-3000:]


def run_client(client: str, server: ServerProcess, model: str, request_path: Path) -> dict[str, Any]:
    completed = subprocess.run(
        [
            sys.executable,
            str(RUNTIME_TESTS / "inference_clients.py"),
            client,
            server.url.removeprefix("http://"),
            server.grpc_target,
            model,
            str(request_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout)


def assert_same_outputs(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert set(got) == set(expected)
    for name, output in expected.items():
        assert got[name]["shape"] == output["shape"], name
        if isinstance(output["data"][0], str):
            assert got[name]["data"] == output["data"], name
        else:
            np.testing.assert_allclose(got[name]["data"], output["data"], rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("example", EXAMPLES)
def test_client_works_unchanged(
    example: str, client: str, servers: dict[str, ServerProcess], repo_root: Path
) -> None:
    server = servers[example]
    request_path = repo_root / "examples" / example / "request.json"
    request = json.loads(request_path.read_text())
    plain = httpx.post(f"{server.url}/v2/models/{example}/infer", json=request, timeout=10).json()
    expected = {o["name"]: {"shape": o["shape"], "data": o["data"]} for o in plain["outputs"]}
    result = run_client(client, server, example, request_path)

    assert result["live"] is True and result["model_ready"] is True
    if client == "kserve-rest-v1":
        instances = result["infer_default"]["predictions"]
        v1 = httpx.post(
            f"{server.url}/v1/models/{example}:predict",
            json={"instances": plain_instances(request)},
            timeout=10,
        ).json()
        assert instances == v1["predictions"]
        first = next(iter(expected.values()))["data"]
        assert instances == first  # V1 answers the first output, row by row
        return
    assert result["ready"] is True
    modes = [key for key in result if key.startswith("infer_")]
    assert len(modes) == (1 if client == "triton-grpc" else 2), modes
    for mode in modes:
        assert_same_outputs(result[mode]["outputs"], expected)
        assert result[mode]["id"] == "r1"

    if client == "triton-http":
        # Its defaults are the binary tensor extension, both ways; JSON when asked for.
        assert result["infer_default"]["request_was_binary"] is True
        assert sorted(result["infer_default"]["binary_outputs"]) == sorted(expected)
        assert result["infer_json"]["request_was_binary"] is False
        assert result["infer_json"]["binary_outputs"] == []
        assert result["server_metadata"]["extensions"] == ["binary_tensor_data", "statistics"]
        assert result["model_metadata"]["name"] == example
        stats = result["statistics"]["model_stats"][0]
        assert stats["name"] == example and stats["inference_stats"]["success"]["count"] >= 1
        assert [(m["name"], m["state"]) for m in result["repository_index"]] == [(example, "READY")]
        for action in ("load", "unload"):
            assert result[action]["status"] == "501"
            assert "this runtime serves one model" in result[action]["message"]
    if client == "triton-grpc":
        assert result["server_metadata"]["extensions"] == ["binary_tensor_data", "statistics"]
        assert result["model_metadata"]["name"] == example
        assert result["unknown_model"]["status"] == "StatusCode.NOT_FOUND"
        assert 'model "no-such-model" not found' in result["unknown_model"]["message"]


def plain_instances(request: dict[str, Any]) -> list[Any]:
    tensors = request["inputs"]
    if len(tensors) == 1 and tensors[0]["datatype"] == "BYTES":
        return tensors[0]["data"]
    return [[t["data"][row] for t in tensors] for row in range(len(tensors[0]["data"]))]
