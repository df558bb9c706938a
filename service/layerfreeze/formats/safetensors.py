"""safetensors: a bounded, validated header read, and a header rewrite that records the freeze state.

Validation follows the reference reader: an 8-byte little-endian header length (capped), a JSON object
starting with ``{``, known dtypes, shapes whose byte counts match the offsets, offsets that cover the data
region exactly with no gap or overlap, and ``__metadata__`` mapping strings to strings.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from layerfreeze.core.kinds import tensor_kind
from layerfreeze.core.model import FLOATING_DTYPES, Inventory, TensorInfo
from layerfreeze.errors import AmbiguousCheckpoint, LimitExceeded, SafetensorsFormatError
from layerfreeze.formats.base import WrittenFile
from layerfreeze.formats.copying import write_segments
from layerfreeze.formats.dtypes import ITEMSIZE, SAFETENSORS_DTYPES
from layerfreeze.formats.module_tree import modules_from_names
from layerfreeze.formats.segments import Segment, from_patches
from layerfreeze.limits import ReadLimits

DEFAULT_LIMITS = ReadLimits()

METADATA_KEY = "layerfreeze"


def read_header(path: Path, limits: ReadLimits) -> tuple[dict[str, Any], int]:
    """The parsed header and the offset where the data region starts."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise SafetensorsFormatError("file is too short for a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > limits.max_safetensors_header:
            raise LimitExceeded(f"safetensors header declares {length} bytes (limit "
                                f"{limits.max_safetensors_header})", limit="max_safetensors_header",
                                value=length, maximum=limits.max_safetensors_header)
        if 8 + length > size:
            raise SafetensorsFormatError(f"safetensors header declares {length} bytes, beyond the file")
        raw = f.read(length)
    if not raw.startswith(b"{"):
        raise SafetensorsFormatError("safetensors header does not start with '{'")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SafetensorsFormatError(f"safetensors header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise SafetensorsFormatError("safetensors header is not a JSON object")
    _validate(header, size - 8 - length, limits)
    return header, 8 + length


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused when a key repeats: JSON readers differ on which value they keep."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise AmbiguousCheckpoint(f"safetensors header names {key[:80]!r} twice; readers differ on which "
                                      "entry they keep: refused as ambiguous",
                                      ambiguity="safetensors-duplicate-key")
        out[key] = value
    return out


def _validate(header: dict[str, Any], data_size: int, limits: ReadLimits) -> None:
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise SafetensorsFormatError("safetensors __metadata__ must map strings to strings")
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        limits.check_name(name)
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsFormatError(f"tensor {name!r} needs exactly dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in SAFETENSORS_DTYPES:
            raise SafetensorsFormatError(f"tensor {name!r} has unknown dtype {dtype!r}")
        if (not isinstance(shape, list) or len(shape) > 64
                or not all(type(d) is int and d >= 0 for d in shape)):
            raise SafetensorsFormatError(f"tensor {name!r} has an invalid shape")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int and o >= 0 for o in offsets) or offsets[0] > offsets[1]):
            raise SafetensorsFormatError(f"tensor {name!r} has invalid data_offsets")
        numel = 1
        for d in shape:
            numel *= d
        if numel * ITEMSIZE[SAFETENSORS_DTYPES[dtype]] != offsets[1] - offsets[0]:
            raise SafetensorsFormatError(f"tensor {name!r}: shape {shape} x {dtype} does not match its "
                                         f"{offsets[1] - offsets[0]} bytes")
        spans.append((offsets[0], offsets[1], name))
    if len(spans) > limits.max_tensors:
        raise LimitExceeded(f"more than {limits.max_tensors} tensors", limit="max_tensors",
                            value=len(spans), maximum=limits.max_tensors)
    spans.sort()
    end = 0
    for start, stop, name in spans:
        if start != end:
            raise SafetensorsFormatError(
                f"tensor {name!r} starts at {start}, leaving a gap or overlap at {end}"
            )
        end = stop
    if end != data_size:
        raise SafetensorsFormatError(f"tensors cover {end} bytes but the data region holds {data_size}")


class SafetensorsArchive:
    def __init__(self, source: Path, limits: ReadLimits = DEFAULT_LIMITS) -> None:
        self.source = Path(source)
        self._header, self._data_start = read_header(self.source, limits)
        metadata: dict[str, str] = self._header.get("__metadata__", {})
        recorded = _recorded_flags(metadata.get(METADATA_KEY))
        entries = sorted(((k, v) for k, v in self._header.items() if k != "__metadata__"),
                         key=lambda kv: kv[1]["data_offsets"][0])
        tensors = []
        for name, entry in entries:
            dtype = SAFETENSORS_DTYPES[entry["dtype"]]
            kind = tensor_kind(name, dtype)
            flag = recorded.get(name, False if kind == "buffer" else None) if recorded is not None else None
            tensors.append(TensorInfo(name, kind, tuple(entry["shape"]), dtype, flag, (),
                                      f"safetensors:{entry['data_offsets'][0]}"))
        modules, _ = modules_from_names([t.name for t in tensors])
        notes = ("freeze state read from the layerfreeze metadata",) if recorded is not None else ()
        self.inventory = Inventory(format="safetensors", tensors=tuple(tensors), modules=modules,
                                   types_known=False, children_exact=False, notes=notes)

    def stored(self) -> dict[str, Any]:
        return {"kind": "safetensors", "metadata": self._header.get("__metadata__", {}),
                "header": {k: v for k, v in self._header.items() if k != "__metadata__"},
                "data_start": self._data_start}

    def plan(self, final: Mapping[str, bool], spec_sha256: str) -> list[Segment]:
        return plan_segments(self.stored(), self.inventory, self.source, final, spec_sha256)

    def write(self, dst: Path, final: Mapping[str, bool], spec_sha256: str, *,
              source_sha256: str | None = None) -> WrittenFile:
        return write_segments(self.source, Path(dst), self.plan(final, spec_sha256),
                              source_sha256=source_sha256)


def plan_segments(doc: Mapping[str, Any], inventory: Inventory, base: Path, final: Mapping[str, bool],
                  spec_sha256: str) -> list[Segment]:
    """A new header with the freeze state in its metadata, then the data region by reference."""
    params = [t for t in inventory.tensors if t.kind == "parameter"]
    state = {t.name: bool(final.get(t.name, t.requires_grad is not False)) and t.dtype in FLOATING_DTYPES
             for t in params}
    metadata = dict(doc["metadata"])
    metadata[METADATA_KEY] = json.dumps({
        "format_version": 1,
        "frozen": [n for n, v in state.items() if not v],
        "trainable": [n for n, v in state.items() if v],
        "spec_sha256": spec_sha256,
    })
    header = {"__metadata__": metadata}
    header.update(doc["header"])
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    head = struct.pack("<Q", len(raw)) + raw
    return from_patches(base.stat().st_size, head=head, skip=doc["data_start"])


def _recorded_flags(value: str | None) -> dict[str, bool] | None:
    """Flags from our own metadata (``frozen``/``trainable`` lists), or None when absent; malformed or
    unknown-version metadata is refused rather than silently ignored."""
    if value is None:
        return None
    try:
        doc = json.loads(value)
    except json.JSONDecodeError as exc:
        raise SafetensorsFormatError("the layerfreeze metadata is not valid JSON") from exc
    if isinstance(doc, dict) and doc.get("format_version", 1) != 1:
        raise SafetensorsFormatError(
            f"the layerfreeze metadata has format_version {doc.get('format_version')!r}; only 1 is read")
    if not isinstance(doc, dict) or not isinstance(doc.get("frozen"), list) or not isinstance(
        doc.get("trainable"), list
    ):
        raise SafetensorsFormatError("the layerfreeze metadata lacks frozen/trainable lists")
    flags = {str(n): False for n in doc["frozen"]}
    flags.update({str(n): True for n in doc["trainable"]})
    return flags
