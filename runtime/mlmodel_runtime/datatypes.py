"""The Open Inference Protocol's tensor datatypes, listed once: each name with its raw binary form
and the gRPC field carrying its typed values. The codec, the binary extension, gRPC and the
OpenAPI document all read this table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Datatype:
    name: str
    # The raw form (REST binary extension, gRPC raw contents): little-endian fixed-size values;
    # None for BYTES, whose elements are each a 4-byte length then the bytes.
    raw_dtype: np.dtype | None
    # The InferTensorContents field of gRPC's typed values; None when there is none (FP16).
    contents_field: str | None


DATATYPES: dict[str, Datatype] = {
    datatype.name: datatype
    for datatype in (
        Datatype("BOOL", np.dtype("?"), "bool_contents"),
        Datatype("UINT8", np.dtype("u1"), "uint_contents"),
        Datatype("UINT16", np.dtype("<u2"), "uint_contents"),
        Datatype("UINT32", np.dtype("<u4"), "uint_contents"),
        Datatype("UINT64", np.dtype("<u8"), "uint64_contents"),
        Datatype("INT8", np.dtype("i1"), "int_contents"),
        Datatype("INT16", np.dtype("<i2"), "int_contents"),
        Datatype("INT32", np.dtype("<i4"), "int_contents"),
        Datatype("INT64", np.dtype("<i8"), "int64_contents"),
        Datatype("FP16", np.dtype("<f2"), None),
        Datatype("FP32", np.dtype("<f4"), "fp32_contents"),
        Datatype("FP64", np.dtype("<f8"), "fp64_contents"),
        Datatype("BYTES", None, "bytes_contents"),
    )
}
NAMES: tuple[str, ...] = tuple(DATATYPES)
NUMERIC: frozenset[str] = frozenset(name for name in NAMES if name != "BYTES")
# numpy dtypes of the fixed-size datatypes, as the raw form lays them out.
RAW_DTYPES: dict[str, np.dtype] = {
    name: datatype.raw_dtype
    for name, datatype in DATATYPES.items()
    if datatype.raw_dtype is not None
}
# The InferTensorContents field of each datatype that has one.
CONTENTS_FIELDS: dict[str, str] = {
    name: datatype.contents_field
    for name, datatype in DATATYPES.items()
    if datatype.contents_field is not None
}
