"""torch.save zip archives and TorchScript archives: read data.pkl as data, patch flags in place.

Writing copies the file byte for byte except the flag bytes inside data.pkl and that member's CRC-32
(local header, central directory, data descriptor), so every tensor record stays byte-identical and
aligned for ``torch.load(mmap=True)``.
"""

from __future__ import annotations

import dataclasses
import io
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from layerfreeze.core.model import FLOATING_DTYPES, Inventory
from layerfreeze.errors import ArchiveError, FormatError
from layerfreeze.formats.base import WrittenFile
from layerfreeze.formats.copying import write_segments
from layerfreeze.formats.pickle.machine import PickleMachine
from layerfreeze.formats.pickle.nodes import Flag
from layerfreeze.formats.segments import Segment, from_patches
from layerfreeze.formats.statemember import MEMBER, layout, read_state, state_document, with_member
from layerfreeze.formats.torch_objects import flag_patches, flags_from_json, flags_to_json, recover_model
from layerfreeze.formats.torchscript import CodeIndex, recover_torchscript
from layerfreeze.formats.zipread import ZipListing, read_listing, read_member
from layerfreeze.limits import ReadLimits

DEFAULT_LIMITS = ReadLimits()


class TorchZipArchive:
    """A torch.save (``torch.state_dict`` / ``torch.checkpoint`` / ``torch.module``) or TorchScript zip."""

    def __init__(self, source: Path, limits: ReadLimits = DEFAULT_LIMITS) -> None:
        self.source = Path(source)
        size = self.source.stat().st_size
        with open(self.source, "rb") as f:
            listing = read_listing(f, size, limits)
            self._listing = listing
            members = listing.members
            if "data.pkl" not in members:
                if "archive_format" in members or any(n.startswith("models/") for n in members):
                    raise FormatError("torch.export (.pt2) archives are not supported; save a state dict")
                raise FormatError("zip archive is not a PyTorch checkpoint: it has no data.pkl")
            self._pickle = members["data.pkl"]
            data = read_member(f, self._pickle, limits.max_pickle_bytes, "max_pickle_bytes")
            self._writable = self._pickle.method == 0
            start = self._pickle.data_offset if self._writable else 0
            root = PickleMachine(limits).run(io.BytesIO(data), start)
            is_script = "constants.pkl" in members or any(n.startswith("code/") for n in members)
            if is_script:
                constants = read_member(f, members["constants.pkl"], limits.max_pickle_bytes,
                                        "max_pickle_bytes") if "constants.pkl" in members else None
                if constants is not None:  # never used for the inventory, but it must be safe too
                    PickleMachine(limits).run(io.BytesIO(constants), 0)
                code = CodeIndex(lambda rel: self._read_code(f, rel, limits))
                recovered = recover_torchscript(root, code, storage_bytes=self._storage_bytes,
                                                storage_prefix="zip", limits=limits)
            else:
                recovered = recover_model(root, storage_bytes=self._storage_bytes, storage_prefix="zip",
                                          limits=limits)
            self._layout = layout(f, size, listing.root, members)
            inventory = recovered.inventory
            if MEMBER in members:  # our freeze state: data, bounded like any member
                state = read_state(read_member(f, members[MEMBER], limits.max_member_bytes), self._pickle.crc)
                inventory = _with_recorded_state(inventory, state)
        self.inventory: Inventory = inventory
        self._flags: dict[str, list[Flag]] = recovered.flags

    def _storage_bytes(self, key: str) -> int | None:
        member = self._listing.members.get(f"data/{key}")
        return member.size if member is not None else None

    def _read_code(self, f: object, rel: str, limits: ReadLimits) -> str | None:
        member = self._listing.members.get(rel)
        if member is None:
            return None
        data = read_member(f, member, limits.max_member_bytes)  # type: ignore[arg-type]
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"TorchScript code {rel!r} is not UTF-8 text") from exc

    def stored(self) -> dict[str, Any]:
        """What a later freeze needs without parsing the file again (JSON; see formats.stored)."""
        m = self._pickle
        return {"kind": "torchzip", "flags": flags_to_json(self._flags), "writable": self._writable,
                "pickle": {"data_offset": m.data_offset, "size": m.size, "crc": m.crc,
                           "central_crc_offset": m.central_crc_offset,
                           "local_crc_offset": m.local_crc_offset,
                           "descriptor_crc_offset": m.descriptor_crc_offset},
                "zip": self._layout}

    def plan(self, final: Mapping[str, bool], spec_sha256: str) -> list[Segment]:
        return plan_segments(self.stored(), self.inventory, self.source, final, spec_sha256)

    def write(self, dst: Path, final: Mapping[str, bool], spec_sha256: str, *,
              source_sha256: str | None = None) -> WrittenFile:
        return write_segments(self.source, Path(dst), self.plan(final, spec_sha256),
                              source_sha256=source_sha256)


def plan_segments(doc: Mapping[str, Any], inventory: Inventory, base: Path, final: Mapping[str, bool],
                  spec_sha256: str) -> list[Segment]:
    """The output as segments over ``base``: the flag bytes in data.pkl and that member's CRC-32."""
    patches = flag_patches(flags_from_json(doc["flags"]), inventory, final)
    if patches and not doc["writable"]:
        raise ArchiveError("data.pkl is compressed in this archive; only stored data.pkl can be patched")
    crc = doc["pickle"]["crc"]
    if patches:
        crcs = _crc_patches(base, doc["pickle"], patches)
        crc = int.from_bytes(crcs[doc["pickle"]["central_crc_offset"]], "little")
        patches.update(crcs)
    segments = from_patches(base.stat().st_size, patches)
    params = [t for t in inventory.tensors if t.kind == "parameter"]
    state = {t.name: bool(final.get(t.name, t.requires_grad is not False)) and t.dtype in FLOATING_DTYPES
             for t in params}
    content = state_document([n for n, v in state.items() if not v], [n for n, v in state.items() if v],
                             spec_sha256, crc)
    return with_member(segments, doc["zip"], content)


def _with_recorded_state(inventory: Inventory, state: Mapping[str, bool] | None) -> Inventory:
    """Parameters whose flags the pickle does not record (plain tensors) take the member's states."""
    if state is None:
        return dataclasses.replace(inventory, notes=(*inventory.notes, f"{MEMBER} belongs to another "
                                                     "data.pkl (the archive was changed since): ignored"))
    if not any(t.requires_grad is None and t.name in state for t in inventory.tensors):
        return inventory
    tensors = tuple(dataclasses.replace(t, requires_grad=state[t.name])
                    if t.requires_grad is None and t.kind == "parameter" and t.name in state else t
                    for t in inventory.tensors)
    notes = tuple(n for n in inventory.notes if not n.startswith("no requires_grad recorded"))
    return dataclasses.replace(inventory, tensors=tensors,
                               notes=(*notes, f"freeze state read from {MEMBER}"))


def _crc_patches(source: Path, member: Mapping[str, Any], patches: Mapping[int, bytes]) -> dict[int, bytes]:
    """New CRC-32 of the patched member, at every place the archive records it."""
    with open(source, "rb") as f:
        f.seek(member["data_offset"])
        data = bytearray(f.read(member["size"]))
        for offset, value in patches.items():
            rel = offset - member["data_offset"]
            if not 0 <= rel < len(data):
                raise ArchiveError("a flag lies outside data.pkl")
            data[rel:rel + len(value)] = value
        crc = zlib.crc32(data).to_bytes(4, "little")
        out = {member["central_crc_offset"]: crc}
        # Writers that use a data descriptor may leave the local header's CRC zero: keep what was there.
        for offset in (member["local_crc_offset"], member["descriptor_crc_offset"]):
            if offset is None:
                continue
            f.seek(offset)
            if int.from_bytes(f.read(4), "little") == member["crc"]:
                out[offset] = crc
    return out


def listing_of(path: Path, limits: ReadLimits = DEFAULT_LIMITS) -> ZipListing:
    with open(path, "rb") as f:
        return read_listing(f, Path(path).stat().st_size, limits)
