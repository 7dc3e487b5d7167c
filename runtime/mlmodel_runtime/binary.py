"""Tensors in their raw binary form, as the REST binary tensor extension and gRPC's
``raw_input_contents``/``raw_output_contents`` carry them: flattened row-major little-endian values,
BYTES elements each preceded by a 4-byte little-endian length. Every size is checked against the
bytes actually present, so a lying size is a 400 and never an over-read or a large allocation."""

from __future__ import annotations

import math
import struct

import numpy as np

from mlmodel_runtime.datatypes import RAW_DTYPES
from mlmodel_runtime.errors import BadRequest

_LENGTH = struct.Struct("<I")


def decode_raw(where: str, datatype: str, shape: list[int], raw: bytes | memoryview) -> np.ndarray | list[str]:
    """The values of one raw tensor: a numpy array, or the strings of a BYTES tensor."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return _split_bytes(where, raw, count, shape)
    dtype = RAW_DTYPES[datatype]
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise BadRequest(
            f"{where}: shape {shape} of {datatype} means {expected} bytes but the tensor holds "
            f"{len(raw)}; make binary_data_size and shape agree"
        )
    return np.frombuffer(raw, dtype=dtype)


def _split_bytes(where: str, raw: bytes | memoryview, count: int, shape: list[int]) -> list[str]:
    view = memoryview(raw)
    size = len(view)
    texts: list[str] = []
    offset = 0
    while offset < size:
        if offset + 4 > size:
            raise BadRequest(
                f"{where}: BYTES element {len(texts)} is cut short: its 4-byte length prefix "
                f"starts {size - offset} bytes before the end of the tensor"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > size:
            raise BadRequest(
                f"{where}: BYTES element {len(texts)} claims {length} bytes but only "
                f"{size - offset} remain in the tensor"
            )
        try:
            texts.append(str(view[offset : offset + length], "utf-8"))
        except UnicodeDecodeError as exc:
            raise BadRequest(f"{where}: BYTES element {len(texts)} is not valid UTF-8 ({exc.reason})") from None
        offset += length
        if len(texts) > count:
            break
    if len(texts) != count:
        raise BadRequest(
            f"{where}: shape {shape} means {count} BYTES elements but the tensor holds "
            f"{'more' if len(texts) > count else len(texts)}"
        )
    return texts


def encode_raw(datatype: str, values: np.ndarray) -> bytes:
    """One output tensor in raw form."""
    if datatype == "BYTES":
        parts = []
        for value in values.ravel().tolist():
            encoded = value if isinstance(value, bytes) else str(value).encode()
            parts.append(_LENGTH.pack(len(encoded)))
            parts.append(encoded)
        return b"".join(parts)
    return np.ascontiguousarray(values, dtype=RAW_DTYPES[datatype]).tobytes()


class BinaryChunks:
    """The bytes that follow the JSON header of a REST request, handed to the inputs that declare
    ``binary_data_size`` in the order they appear."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.offset = 0

    def take(self, where: str, size: object) -> memoryview:
        if type(size) is not int or size < 0:
            raise BadRequest(f"{where}: parameters.binary_data_size must be a non-negative integer")
        remaining = len(self.data) - self.offset
        if size > remaining:
            raise BadRequest(
                f"{where}: binary_data_size is {size} but only {remaining} bytes of binary data "
                "remain after the JSON header and the inputs before it"
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def check_consumed(self) -> None:
        left = len(self.data) - self.offset
        if left:
            raise BadRequest(
                f"{left} bytes after the JSON header belong to no input: the inputs' "
                "binary_data_size values must add up to the binary part of the body"
            )


def split_body(body: bytes, header_length: str) -> tuple[bytes, BinaryChunks]:
    """The JSON header and the binary part of a body framed by Inference-Header-Content-Length."""
    try:
        length = int(header_length)
    except ValueError:
        raise BadRequest(
            f"Inference-Header-Content-Length {header_length!r} is not a number"
        ) from None
    if not 0 < length <= len(body):
        raise BadRequest(
            f"Inference-Header-Content-Length is {length} but the body holds {len(body)} bytes: it "
            "must give the length of the JSON header at the start of the body"
        )
    view = memoryview(body)
    return body[:length], BinaryChunks(view[length:])
