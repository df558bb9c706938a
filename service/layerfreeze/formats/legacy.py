"""The legacy (non-zip) torch.save format and plain pickles.

Legacy layout: a magic-number pickle, a protocol-version pickle, a sys_info pickle, the main pickle
(tensors refer to storages by key), a pickle listing the storage keys, then for each key an 8-byte
little-endian element count followed by the raw bytes. Flags are patched inside the main pickle; there
is no checksum to fix.
"""

from __future__ import annotations

import dataclasses
import struct
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from layerfreeze.core.model import Inventory
from layerfreeze.errors import AmbiguousCheckpoint, FormatError
from layerfreeze.formats.base import WrittenFile
from layerfreeze.formats.copying import write_segments
from layerfreeze.formats.dtypes import ITEMSIZE
from layerfreeze.formats.pickle.machine import PickleMachine
from layerfreeze.formats.pickle.nodes import Flag, StorageRef
from layerfreeze.formats.pickle.reader import BoundedReader
from layerfreeze.formats.segments import Segment, from_patches
from layerfreeze.formats.torch_objects import (
    flag_patches,
    flags_from_json,
    flags_to_json,
    name_budget,
    recover_model,
    unrecordable,
)
from layerfreeze.limits import ReadLimits

DEFAULT_LIMITS = ReadLimits()

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001


class LegacyArchive:
    def __init__(self, source: Path, limits: ReadLimits = DEFAULT_LIMITS) -> None:
        self.source = Path(source)
        size = self.source.stat().st_size
        with open(self.source, "rb") as f:
            if _is_tar_header(f.read(512)):
                raise AmbiguousCheckpoint(
                    "the file starts with a valid tar header: torch.load reads such a file as the oldest "
                    "(tar) checkpoint format before it tries the pickle we read; refused as ambiguous",
                    ambiguity="legacy-tar")

            def next_pickle(start: int) -> tuple[object, PickleMachine, int]:
                room = size - start
                capped = limits.max_pickle_bytes < room
                reader = BoundedReader(f, start, min(limits.max_pickle_bytes, room),
                                       "max_pickle_bytes" if capped else None)
                machine = PickleMachine(limits, storage_format="legacy")
                value = machine.run(reader)  # type: ignore[arg-type]
                return value, machine, reader.tell()

            magic, _, pos = next_pickle(0)
            if magic != MAGIC_NUMBER:
                # A single plain pickle: parse it all (refusing anything unsafe), then say what it is.
                raise FormatError(
                    "a plain pickle is not a PyTorch checkpoint: torch.save writes a zip archive or the "
                    "legacy format, and a plain pickle cannot hold tensor data without running code"
                )
            protocol, _, pos = next_pickle(pos)
            if protocol != PROTOCOL_VERSION:
                raise FormatError(f"legacy torch file has protocol version {protocol!r}, expected 1001")
            sys_info, _, pos = next_pickle(pos)
            little = sys_info.get("little_endian") if isinstance(sys_info, dict) else None
            if not isinstance(little, Flag) or not little.value:
                raise FormatError("legacy torch file is not little-endian")
            root, main, pos = next_pickle(pos)
            keys, _, pos = next_pickle(pos)
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise FormatError("legacy torch file has a malformed storage key list")
            self._sizes = _storage_sizes(f, pos, size, keys, main.storages)
        recovered = recover_model(root, storage_bytes=self._sizes.get, storage_prefix="legacy",
                                  limits=name_budget(limits, main.ops))
        self.inventory: Inventory = dataclasses.replace(
            recovered.inventory, notes=("legacy (non-zip) torch.save format", *recovered.inventory.notes)
        )
        self._flags = recovered.flags
        self.unrecordable = unrecordable(recovered.flags)

    def stored(self) -> dict[str, Any]:
        return {"kind": "legacy", "flags": flags_to_json(self._flags)}

    def plan(self, final: Mapping[str, bool], spec_sha256: str) -> list[Segment]:
        return plan_segments(self.stored(), self.inventory, self.source, final, spec_sha256)

    def write(self, dst: Path, final: Mapping[str, bool], spec_sha256: str, *,
              source_sha256: str | None = None) -> WrittenFile:
        return write_segments(self.source, Path(dst), self.plan(final, spec_sha256),
                              source_sha256=source_sha256)


def plan_segments(doc: Mapping[str, Any], inventory: Inventory, base: Path, final: Mapping[str, bool],
                  spec_sha256: str) -> list[Segment]:
    """The flag bytes inside the main pickle; a legacy file has no checksum to fix."""
    return from_patches(base.stat().st_size, flag_patches(flags_from_json(doc["flags"]), inventory, final))


def _is_tar_header(block: bytes) -> bool:
    """Whether Python's tarfile (what torch.load tries first on a non-zip file) accepts ``block`` as a
    header. Only the bytes are parsed; nothing is extracted."""
    if len(block) < tarfile.BLOCKSIZE:
        return False
    try:
        tarfile.TarInfo.frombuf(block[:tarfile.BLOCKSIZE], tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _storage_sizes(f: object, pos: int, size: int, keys: list[str],
                   refs: list[StorageRef]) -> dict[str, int]:
    """Byte size of each raw storage after the key list, checked against the declared element counts."""
    dtypes: dict[str, str] = {}
    for ref in refs:  # the first naming decides, as in torch (the machine refuses any other)
        dtypes.setdefault(ref.key, ref.dtype)
    sizes: dict[str, int] = {}
    for key in keys:
        if key not in dtypes or key in sizes:
            raise FormatError(f"legacy torch file lists storage {key!r} that no tensor uses, or twice")
        f.seek(pos)  # type: ignore[attr-defined]
        head = f.read(8)  # type: ignore[attr-defined]
        if len(head) != 8:
            raise FormatError("legacy torch file is truncated in its storages")
        (count,) = struct.unpack("<q", head)
        nbytes = count * ITEMSIZE.get(dtypes[key], 1)
        if count < 0 or pos + 8 + nbytes > size:
            raise FormatError(f"legacy storage {key!r} declares {count} elements, beyond the end of the file")
        sizes[key] = nbytes
        pos += 8 + nbytes
    if pos != size:
        raise FormatError(f"legacy torch file has {size - pos} unexpected bytes after its storages")
    return sizes
