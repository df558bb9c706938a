"""The freeze state inside a torch archive: one extra zip member, ``<root>/.data/layerfreeze.json``.

torch's loaders (``torch.load`` with ``weights_only`` and ``mmap``, ``torch.jit.load``) read only the
members they name, so the member changes nothing for them; our reader reads it as JSON data and, where the
pickle records no ``requires_grad`` (a plain state dict: every flag False), takes the states from it, so
inspecting an output shows the states of its report. The member names the CRC-32 of the ``data.pkl`` it
was written with: after any other edit of the archive it no longer matches and is ignored.

The writer adds the member after the last one, before the central directory (existing offsets stay put),
or replaces it when the archive already ends with one (re-freezing an output).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from layerfreeze.errors import ArchiveError
from layerfreeze.formats.segments import Segment, normalize, slice_segments

MEMBER = ".data/layerfreeze.json"
FORMAT_VERSION = 1
_EOCD = b"PK\x05\x06"
_LOC64 = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_U32 = 0xFFFFFFFF


def state_document(frozen: Sequence[str], trainable: Sequence[str], spec_sha256: str,
                   pickle_crc: int) -> bytes:
    return json.dumps({"format_version": FORMAT_VERSION, "frozen": list(frozen),
                       "trainable": list(trainable), "spec_sha256": spec_sha256,
                       "data_pkl_crc32": pickle_crc}, separators=(",", ":")).encode()


def read_state(data: bytes, pickle_crc: int) -> dict[str, bool] | None:
    """name -> requires_grad from a member's bytes, or None when it belongs to another data.pkl."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ArchiveError(f"{MEMBER} is not valid JSON") from exc
    if not isinstance(doc, dict) or doc.get("format_version") != FORMAT_VERSION:
        raise ArchiveError(f"{MEMBER} has an unknown format_version")
    frozen, trainable = doc.get("frozen"), doc.get("trainable")
    if not isinstance(frozen, list) or not isinstance(trainable, list) or not all(
            isinstance(n, str) for n in (*frozen, *trainable)):
        raise ArchiveError(f"{MEMBER} lacks frozen/trainable lists of names")
    if doc.get("data_pkl_crc32") != pickle_crc:
        return None
    return {**dict.fromkeys(frozen, False), **dict.fromkeys(trainable, True)}


def layout(f: Any, size: int, root: str, members: Mapping[str, Any]) -> dict[str, Any]:
    """Where the central directory and end records are, and our member if the archive ends with it."""
    tail = min(size, 22 + 65535)
    f.seek(size - tail)
    data = f.read(tail)
    at = data.rfind(_EOCD)
    if at < 0:
        raise ArchiveError("zip end-of-central-directory record not found")
    eocd = size - tail + at
    _, _, _, count, cd_size, cd_offset, comment_len = struct.unpack("<HHHHIIH", data[at + 4:at + 22])
    zip64 = at >= 20 and data[at - 20:at - 16] == _LOC64
    if zip64:
        (rec,) = struct.unpack("<Q", data[at - 12:at - 4])
        f.seek(rec)
        count, cd_size, cd_offset = struct.unpack("<QQQ", f.read(56)[32:56])
    ours = None
    member = members.get(MEMBER)
    if member is not None:
        entry = member.central_crc_offset - 16
        f.seek(entry + 28)
        nlen, xlen, clen = struct.unpack("<HHH", f.read(6))
        local = _local_offset(f, entry)
        ends_last = member.data_offset + member.compressed_size == cd_offset
        ours = {"local": local, "entry": entry, "entry_len": 46 + nlen + xlen + clen, "last": ends_last,
                "data_offset": member.data_offset, "size": member.compressed_size,
                "stored": member.method == 0}
    return {"root": root, "count": count, "cd_offset": cd_offset, "cd_size": cd_size,
            "cd_end": cd_offset + cd_size, "comment": [eocd + 22, eocd + 22 + comment_len],
            "zip64": zip64, "member": ours}


def _local_offset(f: Any, entry: int) -> int:
    f.seek(entry + 28)
    nlen, xlen = struct.unpack("<HH", f.read(4))
    f.seek(entry + 42)
    (local,) = struct.unpack("<I", f.read(4))
    if local != _U32:
        return int(local)
    f.seek(entry + 46 + nlen)
    extra = f.read(xlen)
    pos = 0
    while pos + 4 <= len(extra):
        tag, n = struct.unpack("<HH", extra[pos:pos + 4])
        if tag == 1:
            values = [v for (v,) in struct.iter_unpack("<Q", extra[pos + 4:pos + 4 + n - n % 8])]
            return int(values[-1])  # the local header offset comes after any sizes
        pos += 4 + n
    raise ArchiveError(f"zip64 offset of {MEMBER} missing")


def with_member(segments: Sequence[Segment], zl: Mapping[str, Any], content: bytes) -> list[Segment]:
    """``segments`` (the patched archive, same layout as the base) with our member added or replaced."""
    ours = zl["member"]
    cut = zl["cd_offset"]
    count, cd_parts, cd_size = zl["count"] + 1, [(zl["cd_offset"], zl["cd_end"])], zl["cd_size"]
    if ours is not None:
        if ours["last"]:  # drop the old one: its data ends the members, its entry goes from the directory
            cut = ours["local"]
            count -= 1
            cd_parts = [(zl["cd_offset"], ours["entry"]), (ours["entry"] + ours["entry_len"], zl["cd_end"])]
            cd_size -= ours["entry_len"]
        elif ours["stored"] and len(content) <= ours["size"]:  # in place, padded with JSON whitespace
            return _in_place(segments, zl, ours, content)
        else:
            raise ArchiveError(f"cannot update {MEMBER}: it is not the last member and has grown")
    name = f"{zl['root']}/{MEMBER}".encode()
    crc = zlib.crc32(content)
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, crc, len(content), len(content),
                        len(name), 0) + name
    big = cut >= _U32
    extra = struct.pack("<HHQ", 1, 8, cut) if big else b""
    version = 45 if big else 20
    entry = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, version, version, 0, 0, 0, 0x21, crc, len(content),
                        len(content), len(name), len(extra), 0, 0, 0, 0, _U32 if big else cut) + name + extra
    cd_offset = cut + len(local) + len(content)
    cd_size += len(entry)
    out: list[Segment] = [*slice_segments(segments, 0, cut), local + content]
    for start, stop in cd_parts:
        out += slice_segments(segments, start, stop)
    out.append(entry)
    out += _end_records(segments, zl, count, cd_offset, cd_size)
    return normalize(out)


def _in_place(segments: Sequence[Segment], zl: Mapping[str, Any], ours: Mapping[str, Any],
              content: bytes) -> list[Segment]:
    padded = content + b" " * (ours["size"] - len(content))
    crc = zlib.crc32(padded).to_bytes(4, "little")
    start = ours["data_offset"]
    out = [*slice_segments(segments, 0, ours["local"] + 14), crc,
           *slice_segments(segments, ours["local"] + 18, start), padded,
           *slice_segments(segments, start + len(padded), ours["entry"] + 16), crc,
           *slice_segments(segments, ours["entry"] + 20, zl["comment"][1])]
    return normalize(out)


def _end_records(segments: Sequence[Segment], zl: Mapping[str, Any], count: int, cd_offset: int,
                 cd_size: int) -> list[Segment]:
    comment = slice_segments(segments, *zl["comment"])
    comment_len = zl["comment"][1] - zl["comment"][0]
    big = zl["zip64"] or count >= 0xFFFF or cd_offset >= _U32 or cd_size >= _U32
    out: list[Segment] = []
    if big:
        rec = cd_offset + cd_size
        out.append(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
                   + struct.pack("<IIQI", 0x07064B50, 0, rec, 1))
    out.append(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
                           min(cd_size, _U32), _U32 if big else cd_offset, comment_len))
    return [*out, *comment]
