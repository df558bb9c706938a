"""Dtype names as torch spells them (without ``torch.``), from storage classes and safetensors codes."""

from __future__ import annotations

from layerfreeze.core.model import ITEMSIZE

__all__ = ["DIRECT_DTYPES", "ITEMSIZE", "SAFETENSORS_DTYPES", "STORAGE_DTYPES", "storage_dtype"]

STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "QInt8Storage": "qint8",
    "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4",
}


# dtypes torch >= 2.3 names directly in a storage's persistent id (no legacy storage class exists)
DIRECT_DTYPES = frozenset(ITEMSIZE) - frozenset(STORAGE_DTYPES.values()) - {"untyped"}

SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
    "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "U16": "uint16",
    "U32": "uint32", "U64": "uint64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "C64": "complex64", "C128": "complex128", "F8_E8M0": "float8_e8m0fnu",
}


def storage_dtype(module: str, name: str) -> str | None:
    """The dtype a storage-type global stands for (``torch.FloatStorage``, ``torch.float8_e4m3fn``)."""
    if module not in ("torch", "torch.storage", "torch.cuda"):
        return None
    if name == "UntypedStorage":
        return "untyped"  # plain bytes; the tensor record names its dtype (_rebuild_tensor_v3)
    if name in STORAGE_DTYPES:
        return STORAGE_DTYPES[name]
    if name in DIRECT_DTYPES:
        return name
    return None
