"""Open Inference Protocol V2 (JSON and binary tensors) and V1 request decoding and response encoding,
checked by hand against the model's signature (no pydantic on the hot path) with messages that say what to fix."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mlmodel_runtime import datatypes
from mlmodel_runtime.binary import BinaryChunks, decode_raw, encode_raw, split_body
from mlmodel_runtime.errors import BadRequest
from mlmodel_runtime.model import MATRIX_INPUT, Outputs, Rows, Signature, TensorSpec

_DATATYPE_CHOICES = ", ".join(datatypes.NAMES)
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_MAX_NAMES_SHOWN = 20


@dataclass(frozen=True)
class DecodedRequest:
    """A prediction request of any protocol, decoded and checked against the model's signature (the
    wire format itself is ``schemas.InferenceRequest``, for the OpenAPI document)."""

    rows: Rows
    n_rows: int
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: tuple[str, ...] = ()  # requested outputs; empty means all
    binary_outputs: frozenset[str] = frozenset()  # outputs to return in raw binary form (REST)


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise BadRequest("request body is empty: send a JSON object")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        hint = ""
        if b"NaN" in body or b"Infinity" in body:
            hint = " (NaN and Infinity are not JSON numbers: send finite numbers, or null for a missing value)"
        raise BadRequest(f"request body is not valid JSON: {exc}{hint}") from None
    if not isinstance(document, dict):
        raise BadRequest(f"request body must be a JSON object, not a JSON {_json_type(document)}")
    return document


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return "number"
    return "object"


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _names(names: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    return shown + (f" ... ({len(names)} in all)" if len(names) > _MAX_NAMES_SHOWN else "")


# --- V2 -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    """One input tensor, its values as the request carried them: a (nested) JSON list, a numpy array
    of raw values, or the strings of a raw BYTES tensor."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any] | np.ndarray


def checked_tensor(name: str, datatype: str, shape: Any) -> tuple[str, list[int]]:
    """The datatype and shape of input ``name``, refused with a 400 unless the protocol allows them."""
    where = f'input "{name}"'
    if datatype not in datatypes.DATATYPES:
        raise BadRequest(f'{where}: unknown datatype "{datatype}"; use one of {_DATATYPE_CHOICES}')
    if (
        not isinstance(shape, list)
        or not shape
        or not all(type(dim) is int and dim >= 0 for dim in shape)
    ):
        raise BadRequest(
            f"{where}: shape must be a list of non-negative integers, e.g. [2] for two rows"
        )
    return datatype, shape


def _tensor(index: int, raw: Any, chunks: BinaryChunks | None) -> Tensor:
    where = f"inputs[{index}]"
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be an object with name, datatype, shape and data")
    name = raw.get("name")
    if not isinstance(name, str):
        raise BadRequest(f"{where}.name must be a string")
    where = f'input "{name}"'
    datatype = raw.get("datatype")
    if not isinstance(datatype, str):
        raise BadRequest(f"{where}: datatype is missing; use one of {_DATATYPE_CHOICES}")
    datatype, shape = checked_tensor(name, datatype, raw.get("shape"))
    parameters = raw.get("parameters")
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is not None:
        if chunks is None:
            raise BadRequest(
                f"{where}: parameters.binary_data_size is set but the request has no "
                "Inference-Header-Content-Length header saying where the binary data starts"
            )
        if "data" in raw:
            raise BadRequest(f"{where}: give either data or parameters.binary_data_size, not both")
        return Tensor(name, datatype, shape, decode_raw(where, datatype, shape, chunks.take(where, size)))
    data = raw.get("data")
    if not isinstance(data, list):
        raise BadRequest(f"{where}: data must be a list (row-major, flat or nested)")
    return Tensor(name, datatype, shape, data)


def _rows_of(tensor: Tensor, columns: int) -> int:
    """Rows in a tensor of shape [n] or [n, columns] (columns=1 also allows [n])."""
    shape = tensor.shape
    if len(shape) == 1 and columns == 1:
        return shape[0]
    if len(shape) == 2 and shape[1] == columns:
        return shape[0]
    expected = "[n] or [n, 1]" if columns == 1 else f"[n, {columns}]"
    raise BadRequest(
        f'input "{tensor.name}": shape {shape} cannot be used; expected {expected} for n rows'
    )


def _size_mismatch(tensor: Tensor, found: int) -> BadRequest:
    return BadRequest(
        f'input "{tensor.name}": shape {tensor.shape} means {math.prod(tensor.shape)} values but data holds '
        f"{found}; make shape match the data"
    )


def _strings(tensor: Tensor) -> list[str]:
    data = tensor.data
    if isinstance(data, np.ndarray):  # not BYTES: refused by the caller already
        return data.tolist()
    if data and type(data[0]) is list:  # nested [[text], [text]]: flatten one level
        flat: list[Any] = []
        for item in data:
            if type(item) is list:
                flat.extend(item)
            else:
                flat.append(item)
        data = flat
    for position, value in enumerate(data):
        if type(value) is not str:
            raise BadRequest(
                f'input "{tensor.name}": data[{position}] is {_a(_json_type(value))}; BYTES data must be strings'
            )
    return data


def _numbers(tensor: Tensor) -> np.ndarray:
    if tensor.datatype not in datatypes.NUMERIC:
        raise BadRequest(
            f'input "{tensor.name}" has datatype {tensor.datatype} but this model takes numbers: '
            "send datatype FP64 (or another numeric type) with numeric data"
        )
    try:
        values = np.asarray(tensor.data, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise BadRequest(
            f'input "{tensor.name}": data must hold numbers for datatype {tensor.datatype} ({exc})'
        ) from None
    return values


def _text_rows(tensors: list[Tensor], signature: Signature) -> tuple[list[str], int]:
    accepted = (signature.inputs[0].name, MATRIX_INPUT)
    if len(tensors) != 1:
        names = [tensor.name for tensor in tensors]
        raise BadRequest(
            f'this model takes one input, "{accepted[0]}" (BYTES, one string per row); got {len(names)}: '
            f"{_names(names)}"
        )
    tensor = tensors[0]
    if tensor.name not in accepted:
        raise BadRequest(
            f'unknown input "{tensor.name}"; this model takes one input named "{accepted[0]}" '
            "(BYTES, one string per row)"
        )
    if tensor.datatype != "BYTES":
        raise BadRequest(
            f'input "{tensor.name}" has datatype {tensor.datatype} but this model takes text: send '
            "datatype BYTES with a list of strings"
        )
    n_rows = _rows_of(tensor, 1)
    texts = _strings(tensor)
    if len(texts) != n_rows:
        raise _size_mismatch(tensor, len(texts))
    return texts, n_rows


def _matrix_rows(tensor: Tensor, signature: Signature) -> tuple[np.ndarray, int]:
    n_rows = _rows_of(tensor, signature.n_features)
    values = _numbers(tensor)
    if values.size != n_rows * signature.n_features:
        raise _size_mismatch(tensor, values.size)
    return values.reshape(n_rows, signature.n_features), n_rows


def _tabular_rows(tensors: list[Tensor], signature: Signature) -> tuple[np.ndarray, int]:
    features = signature.feature_names
    matrix_shape = f'one FP64 input "{MATRIX_INPUT}" of shape [n, {signature.n_features}]'
    if len(tensors) == 1 and (tensors[0].name == MATRIX_INPUT or not features):
        if tensors[0].name != MATRIX_INPUT:
            raise BadRequest(f'unknown input "{tensors[0].name}"; this model takes {matrix_shape}')
        return _matrix_rows(tensors[0], signature)
    if not features:
        raise BadRequest(f"this model takes {matrix_shape}; got {len(tensors)} inputs")
    expected = f"one FP64 input of shape [n] per feature ({_names(features)}), or {matrix_shape}"
    by_name: dict[str, Tensor] = {}
    known = set(features)
    for tensor in tensors:
        if tensor.name not in known:
            raise BadRequest(f'unknown input "{tensor.name}"; this model takes {expected}')
        if tensor.name in by_name:
            raise BadRequest(f'input "{tensor.name}" is given twice')
        by_name[tensor.name] = tensor
    missing = [name for name in features if name not in by_name]
    if missing:
        raise BadRequest(
            f"missing input{'s' if len(missing) > 1 else ''} {_names(missing)}; this model takes {expected}"
        )
    n_rows = -1
    matrix = np.empty((0, 0))
    for column, name in enumerate(features):
        tensor = by_name[name]
        rows = _rows_of(tensor, 1)
        if n_rows >= 0 and rows != n_rows:
            raise BadRequest(
                f'input "{name}" has {rows} rows but input "{features[0]}" has {n_rows}: every feature '
                "needs one value per row"
            )
        values = _numbers(tensor)
        if values.size != rows:
            raise _size_mismatch(tensor, values.size)
        if n_rows < 0:
            # Sized from data already parsed, never from the declared shape alone (a shape of
            # [10**12] must be a 400, not an allocation).
            n_rows = rows
            matrix = np.empty((n_rows, len(features)), dtype=np.float64)
        matrix[:, column] = values.reshape(n_rows)
    return matrix, n_rows


def decode_v2(
    body: bytes, signature: Signature, header_length: str | None = None
) -> DecodedRequest:
    """A V2 request: a JSON body, or with ``header_length`` (the Inference-Header-Content-Length
    header) a JSON header followed by the raw tensors of the binary tensor extension."""
    chunks = None
    if header_length is not None:
        body, chunks = split_body(body, header_length)
    document = parse_json_object(body)
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("id must be a string")
    parameters = document.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise BadRequest("parameters must be an object")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest(
            'request must have an "inputs" list with at least one input, e.g. '
            '{"inputs": [{"name": ..., "datatype": ..., "shape": [...], "data": [...]}]}'
        )
    tensors = [_tensor(index, raw, chunks) for index, raw in enumerate(raw_inputs)]
    if chunks is not None:
        chunks.check_consumed()
    outputs, binary_outputs = _requested_outputs(document.get("outputs"), parameters, signature)
    return request_from_tensors(
        tensors,
        signature,
        id=request_id,
        parameters=parameters,
        outputs=outputs,
        binary_outputs=binary_outputs,
    )


def request_from_tensors(
    tensors: list[Tensor],
    signature: Signature,
    *,
    id: str | None = None,
    parameters: dict[str, Any] | None = None,
    outputs: tuple[str, ...] = (),
    binary_outputs: frozenset[str] = frozenset(),
) -> DecodedRequest:
    """The model's rows from decoded input tensors, checked against its signature."""
    rows: Rows
    if signature.takes_text:
        rows, n_rows = _text_rows(tensors, signature)
    else:
        rows, n_rows = _tabular_rows(tensors, signature)
    if n_rows == 0:
        raise BadRequest("the request holds no rows: send at least one")
    return DecodedRequest(
        rows=rows,
        n_rows=n_rows,
        id=id,
        parameters=parameters,
        outputs=outputs,
        binary_outputs=binary_outputs,
    )


def _binary_flag(where: str, parameters: Any, key: str) -> bool | None:
    value = parameters.get(key) if isinstance(parameters, dict) else None
    if value is not None and type(value) is not bool:
        raise BadRequest(f"{where}.{key} must be true or false")
    return value


def _requested_outputs(
    raw: Any, parameters: dict[str, Any] | None, signature: Signature
) -> tuple[tuple[str, ...], frozenset[str]]:
    """Names of the outputs asked for (empty: all) and of those wanted in binary form. The
    request's parameters.binary_data_output is the default for every output."""
    default = bool(_binary_flag("parameters", parameters, "binary_data_output"))
    if raw is None:
        return (), frozenset(signature.output_names if default else ())
    if not isinstance(raw, list):
        raise BadRequest('outputs must be a list of objects like {"name": "label"}')
    names, binary = [], []
    for index, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise BadRequest(f"outputs[{index}] must be an object with a name")
        names.append(name)
        flag = _binary_flag(f"outputs[{index}].parameters", item.get("parameters"), "binary_data")
        if flag if flag is not None else default:
            binary.append(name)
    return check_output_names(names, signature), frozenset(binary)


def check_output_names(names: list[str], signature: Signature) -> tuple[str, ...]:
    available = signature.output_names
    for name in names:
        if name not in available:
            raise BadRequest(
                f'unknown output "{name}"; this model returns {_names(list(available))}'
            )
    return tuple(names)


def selected_outputs(
    request: DecodedRequest, outputs: Outputs, signature: Signature
) -> list[tuple[TensorSpec, np.ndarray]]:
    """The outputs the request asked for (all when it named none), in the model's order."""
    wanted = request.outputs or signature.output_names
    return [(spec, outputs[spec.name]) for spec in signature.outputs if spec.name in wanted]


def encode_v2(
    *,
    model_name: str,
    model_version: str,
    request: DecodedRequest,
    outputs: Outputs,
    signature: Signature,
) -> tuple[bytes, int | None]:
    """The response body, and the length of its JSON header when binary outputs follow it (None for
    a plain JSON body)."""
    encoded = []
    chunks = []
    for spec, values in selected_outputs(request, outputs, signature):
        tensor: dict[str, Any] = {
            "name": spec.name,
            "datatype": spec.datatype,
            "shape": list(values.shape),
        }
        if spec.name in request.binary_outputs:
            raw = encode_raw(spec.datatype, values)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif spec.datatype == "BYTES":
            tensor["data"] = values.ravel().tolist()
        else:
            tensor["data"] = np.ascontiguousarray(values).ravel()
        encoded.append(tensor)
    response: dict[str, Any] = {"model_name": model_name}
    if model_version:
        response["model_version"] = model_version
    if request.id is not None:
        response["id"] = request.id
    if request.parameters is not None:
        response["parameters"] = request.parameters
    response["outputs"] = encoded
    header = orjson.dumps(response, option=_DUMPS_OPTIONS)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


# --- V1 -------------------------------------------------------------------------------------


def decode_v1(body: bytes, signature: Signature) -> DecodedRequest:
    document = parse_json_object(body)
    instances = document.get("instances")
    if not isinstance(instances, list) or not instances:
        raise BadRequest('request must be {"instances": [...]} with at least one instance')
    if signature.takes_text:
        texts = [_v1_text(index, item) for index, item in enumerate(instances)]
        return DecodedRequest(rows=texts, n_rows=len(texts))
    matrix = np.empty((len(instances), signature.n_features), dtype=np.float64)
    for index, item in enumerate(instances):
        matrix[index] = _v1_row(index, item, signature)
    return DecodedRequest(rows=matrix, n_rows=len(instances))


def _v1_text(index: int, item: Any) -> str:
    if type(item) is list and len(item) == 1:
        item = item[0]
    if type(item) is not str:
        raise BadRequest(
            f"instances[{index}] is {_a(_json_type(item))}; this model takes one string per instance"
        )
    return item


def _v1_row(index: int, item: Any, signature: Signature) -> list[Any]:
    features = signature.feature_names
    if isinstance(item, dict):
        if not features:
            raise BadRequest(
                f"instances[{index}] is an object but this model has no feature names: send a list of "
                f"{signature.n_features} numbers"
            )
        missing = [name for name in features if name not in item]
        if missing:
            raise BadRequest(f"instances[{index}] lacks {_names(missing)}")
        unknown = [name for name in item if name not in set(features)]
        if unknown:
            raise BadRequest(
                f"instances[{index}] has unknown features {_names(unknown)}; expected {_names(features)}"
            )
        item = [item[name] for name in features]
    if not isinstance(item, list) or len(item) != signature.n_features:
        raise BadRequest(
            f"instances[{index}] must be a list of {signature.n_features} numbers"
            + (f" ({_names(features)}) or an object with those keys" if features else "")
        )
    for value in item:
        if value is not None and (type(value) not in (int, float, bool)):
            raise BadRequest(
                f"instances[{index}] holds {_a(_json_type(value))}; features must be numbers"
            )
    return item


def encode_v1(outputs: Outputs, signature: Signature) -> bytes:
    name = signature.outputs[0].name
    values = outputs[name]
    predictions: Any = values.tolist() if signature.outputs[0].datatype == "BYTES" else values
    return orjson.dumps({"predictions": predictions}, option=_DUMPS_OPTIONS)
