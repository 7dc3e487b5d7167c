"""Drives one real inference client against a running runtime and prints what every call returned
as one JSON document. Run as a script by test_clients.py, one process per client: tritonclient.grpc
and KServe's gRPC client both register ``inference.*`` in protobuf's default pool and cannot share a
process.

    python inference_clients.py CLIENT HTTP_HOST:PORT GRPC_HOST:PORT MODEL REQUEST.json

CLIENT is one of triton-http, triton-grpc, kserve-rest-v1, kserve-rest-v2, kserve-grpc. REQUEST.json
is a plain V2 JSON infer request (an example's request.json); each client sends those inputs its own
way, with its defaults and, where it has one, its explicit JSON (or typed-contents) mode."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np

NUMPY_TYPES = {"BYTES": np.object_, "FP64": np.float64, "FP32": np.float32, "INT64": np.int64}


def arrays(request: dict[str, Any]) -> list[tuple[str, str, np.ndarray]]:
    return [
        (tensor["name"], tensor["datatype"], np.array(tensor["data"], dtype=NUMPY_TYPES[tensor["datatype"]]).reshape(tensor["shape"]))
        for tensor in request["inputs"]
    ]  # fmt: skip


def plain(value: np.ndarray) -> dict[str, Any]:
    """An output as JSON: shape and flat data, BYTES decoded to text."""
    data = [
        item.decode() if isinstance(item, bytes) else item for item in value.ravel().tolist()
    ]
    return {"shape": list(value.shape), "data": data}


def triton_http(http: str, model: str, request: dict[str, Any]) -> dict[str, Any]:
    import tritonclient.http as client_module

    client = client_module.InferenceServerClient(http)
    result: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "server_metadata": client.get_server_metadata(),
        "model_metadata": client.get_model_metadata(model),
        "statistics": client.get_inference_statistics(model),
        "repository_index": client.get_model_repository_index(),
    }
    for name, call in (("load", client.load_model), ("unload", client.unload_model)):
        try:
            call(model)
            result[name] = "accepted"
        except client_module.InferenceServerException as error:
            result[name] = {"status": error.status(), "message": error.message()}
    for mode, binary in (("default", None), ("json", False)):
        inputs = []
        for name, datatype, values in arrays(request):
            tensor = client_module.InferInput(name, list(values.shape), datatype)
            if binary is None:
                tensor.set_data_from_numpy(values)  # the client's default: binary tensors
            else:
                tensor.set_data_from_numpy(values, binary_data=binary)
            inputs.append(tensor)
        outputs = None
        if binary is not None:
            names = [output["name"] for output in result["model_metadata"]["outputs"]]
            outputs = [client_module.InferRequestedOutput(n, binary_data=binary) for n in names]
        _, json_size = client_module.InferenceServerClient.generate_request_body(inputs, outputs)
        answer = client.infer(model, inputs, outputs=outputs, request_id="r1")
        response = answer.get_response()
        result[f"infer_{mode}"] = {
            "request_was_binary": json_size is not None,
            "binary_outputs": [
                o["name"] for o in response["outputs"] if "binary_data_size" in o.get("parameters", {})
            ],
            "id": response.get("id"),
            "outputs": {o["name"]: plain(answer.as_numpy(o["name"])) for o in response["outputs"]},
        }
    return result


def triton_grpc(grpc_target: str, model: str, request: dict[str, Any]) -> dict[str, Any]:
    import tritonclient.grpc as client_module

    client = client_module.InferenceServerClient(grpc_target)
    result: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "server_metadata": client.get_server_metadata(as_json=True),
        "model_metadata": client.get_model_metadata(model, as_json=True),
    }
    inputs = []
    for name, datatype, values in arrays(request):
        tensor = client_module.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values)  # raw_input_contents, the only way this client sends
        inputs.append(tensor)
    answer = client.infer(model, inputs, request_id="r1")
    response = answer.get_response(as_json=True)
    result["infer_default"] = {
        "id": response.get("id"),
        "outputs": {o["name"]: plain(answer.as_numpy(o["name"])) for o in response["outputs"]},
    }
    try:
        client.infer("no-such-model", inputs)
    except client_module.InferenceServerException as error:
        result["unknown_model"] = {"status": error.status(), "message": error.message()}
    return result


async def kserve_rest(http: str, model: str, request: dict[str, Any], protocol: str) -> dict[str, Any]:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    base = f"http://{http}"
    client = InferenceRESTClient(RESTConfig(protocol=protocol))
    result: dict[str, Any] = {
        "live": await client.is_server_live(base),
        "model_ready": await client.is_model_ready(base, model),
    }
    try:
        if protocol == "v1":
            result["infer_default"] = await client.infer(
                base, {"instances": v1_instances(request)}, model_name=model
            )
            return result
        result["ready"] = await client.is_server_ready(base)
        for mode, binary in (("default", None), ("binary", True)):
            inputs = []
            for name, datatype, values in arrays(request):
                tensor = InferInput(name, list(values.shape), datatype)
                if binary is None:
                    tensor.set_data_from_numpy(values)
                else:
                    tensor.set_data_from_numpy(values, binary_data=binary)
                inputs.append(tensor)
            headers: dict[str, str] = {}
            answer = await client.infer(
                base,
                InferRequest(model_name=model, infer_inputs=inputs, request_id="r1"),
                model_name=model,
                response_headers=headers,
            )
            result[f"infer_{mode}"] = {
                "id": answer.id,
                "outputs": {o.name: plain(o.as_numpy()) for o in answer.outputs},
            }
        return result
    finally:
        await client.close()


def v1_instances(request: dict[str, Any]) -> list[Any]:
    """The V2 request's rows as V1 instances: one string, or one {feature: value} object, per row."""
    tensors = request["inputs"]
    if len(tensors) == 1 and tensors[0]["datatype"] == "BYTES":
        return list(tensors[0]["data"])
    rows = len(tensors[0]["data"])
    return [{t["name"]: t["data"][row] for t in tensors} for row in range(rows)]


async def kserve_grpc(grpc_target: str, model: str, request: dict[str, Any]) -> dict[str, Any]:
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    client = InferenceGRPCClient(grpc_target)
    result: dict[str, Any] = {
        "live": await client.is_server_live(),
        "ready": await client.is_server_ready(),
        "model_ready": await client.is_model_ready(model),
    }
    for mode, binary in (("default", None), ("raw", True)):
        inputs = []
        for name, datatype, values in arrays(request):
            tensor = InferInput(name, list(values.shape), datatype)
            if binary is None:
                tensor.set_data_from_numpy(values)  # typed contents
            else:
                tensor.set_data_from_numpy(values, binary_data=binary)  # raw_input_contents
            inputs.append(tensor)
        answer = await client.infer(InferRequest(model_name=model, infer_inputs=inputs, request_id="r1"))
        result[f"infer_{mode}"] = {
            "id": answer.id,
            "outputs": {o.name: plain(o.as_numpy()) for o in answer.outputs},
        }
    await client.close()
    return result


def main(argv: list[str]) -> int:
    client, http, grpc_target, model, request_path = argv
    with open(request_path, encoding="utf-8") as handle:
        request = json.load(handle)
    if client == "triton-http":
        result = triton_http(http, model, request)
    elif client == "triton-grpc":
        result = triton_grpc(grpc_target, model, request)
    elif client in ("kserve-rest-v1", "kserve-rest-v2"):
        result = asyncio.run(kserve_rest(http, model, request, client.rsplit("-", 1)[1]))
    elif client == "kserve-grpc":
        result = asyncio.run(kserve_grpc(grpc_target, model, request))
    else:
        raise SystemExit(f"unknown client {client}")
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
