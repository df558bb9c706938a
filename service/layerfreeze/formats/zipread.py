"""A strict reader of zip central directories, for torch.save and TorchScript archives.

We parse the end record and the central directory ourselves (not ``zipfile``) because the writer must
know where every CRC lives, and because every check below has to happen before anything is decompressed:
entry count, names (no ``..``, absolute paths, links or duplicates), one shared root folder, declared
sizes within the file, compression ratio, overlapping members.

torch's reader (miniz) finds a member by name without regard to ASCII case and takes the folder of the
first central-directory entry as the archive's root. So two members whose names differ only in case
(``data.pkl`` and ``DATA.PKL``) are an ambiguity: which one torch reads depends on miniz's sorted index,
not on anything we can check. Such archives are refused, and lookups here ignore case exactly as
miniz does, so the member we read is the one torch reads.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from layerfreeze.errors import AmbiguousArchive, ArchiveError, LimitExceeded
from layerfreeze.limits import ReadLimits

_EOCD = b"PK\x05\x06"
_EOCD64 = b"PK\x06\x06"
_LOC64 = b"PK\x06\x07"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_DESCRIPTOR = b"PK\x07\x08"
_MAX_CENTRAL = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    method: int  # 0 stored, 8 deflated
    crc: int
    compressed_size: int
    size: int
    data_offset: int  # first byte of the member's data in the file
    local_crc_offset: int  # local header + 14
    central_crc_offset: int  # central directory entry + 16
    descriptor_crc_offset: int | None  # in the data descriptor, when the member has one


def fold(name: str) -> str:
    """The name as miniz compares it: ASCII letters lower-cased, nothing else changed."""
    return name.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True, slots=True)
class ZipListing:
    root: str  # the folder every member sits in
    members: dict[str, Member]  # by name relative to root ("data.pkl", "data/0", "code/..."), as stored
    folded: dict[str, Member]  # by ``fold(name)``: how torch looks members up

    def get(self, rel: str) -> Member | None:
        """The member torch reads for ``rel`` (case-insensitive, as miniz)."""
        return self.folded.get(fold(rel))


def read_listing(f: BinaryIO, file_size: int, limits: ReadLimits) -> ZipListing:
    cd_offset, cd_size, count = _end_record(f, file_size, limits)
    f.seek(cd_offset)
    central = f.read(cd_size)
    if len(central) != cd_size:
        raise ArchiveError("zip central directory is truncated")
    members: dict[str, Member] = {}
    folded: dict[str, Member] = {}
    spans: list[tuple[int, int, str]] = []
    pos = 0
    root: str | None = None
    for _ in range(count):
        if central[pos:pos + 4] != _CENTRAL or pos + 46 > len(central):
            raise ArchiveError(f"zip central directory entry is malformed at byte {cd_offset + pos}")
        (flags, method, crc, csize, usize, nlen, xlen, clen, ext_attr, local) = _unpack_central(central, pos)
        raw_name = central[pos + 46:pos + 46 + nlen]
        extra = central[pos + 46 + nlen:pos + 46 + nlen + xlen]
        central_crc = cd_offset + pos + 16
        pos += 46 + nlen + xlen + clen
        if pos > len(central):
            raise ArchiveError("zip central directory entry runs past its end")
        name = _check_name(raw_name, flags, ext_attr)
        usize, csize, local = _zip64(extra, usize, csize, local)
        if flags & 0x1:
            raise ArchiveError(f"zip member {name!r} is encrypted")
        if method not in (0, 8):
            raise ArchiveError(f"zip member {name!r} uses compression method {method}")
        if method == 0 and csize != usize:
            raise ArchiveError(f"stored zip member {name!r} declares {usize} bytes but holds {csize}")
        if method == 8 and usize > limits.max_zip_ratio * max(csize, 1):
            raise LimitExceeded(f"zip member {name!r} declares a compression ratio beyond "
                                f"{limits.max_zip_ratio}:1", limit="max_zip_ratio",
                                value=usize // max(csize, 1), maximum=limits.max_zip_ratio)
        top, sep, rel = name.partition("/")
        if not sep or not rel:
            raise ArchiveError(f"zip member {name!r} is not inside the archive's folder")
        if root is None:
            root = top
        elif top != root:
            raise AmbiguousArchive(f"zip members sit in two folders: {root!r} and {top!r} (torch reads "
                                      "only the first one's; refused as ambiguous)", ambiguity="zip-root")
        if fold(rel) in folded:
            other = folded[fold(rel)].name
            what = "appears twice" if other == name else f"and {other!r} differ only in case"
            raise AmbiguousArchive(f"zip member {name!r} {what}: torch's zip reader cannot tell them "
                                      "apart and may read either one; refused as ambiguous",
                                      ambiguity="zip-duplicate-member")
        data_offset = _local_header(f, local, raw_name, file_size)
        end = data_offset + csize
        if end > cd_offset:
            raise ArchiveError(f"zip member {name!r} declares {csize} bytes, beyond the end of the data")
        descriptor = None
        if flags & 0x8:
            f.seek(end)
            sig = f.read(4)
            descriptor = end + 4 if sig == _DESCRIPTOR else end
        members[rel] = folded[fold(rel)] = Member(name, method, crc, csize, usize, data_offset, local + 14,
                                                  central_crc, descriptor)
        spans.append((local, end, name))
    spans.sort()
    for (_, end, name), (start, _, other) in itertools.pairwise(spans):
        if start < end:
            raise ArchiveError(f"zip members {name!r} and {other!r} overlap")
    if root is None:
        raise ArchiveError("zip archive is empty")
    return ZipListing(root, members, folded)


def _end_record(f: BinaryIO, file_size: int, limits: ReadLimits) -> tuple[int, int, int]:
    tail = min(file_size, 22 + 65535)
    f.seek(file_size - tail)
    data = f.read(tail)
    at = data.rfind(_EOCD)
    if at < 0 or at + 22 > len(data):
        raise ArchiveError("zip end-of-central-directory record not found (truncated file?)")
    eocd_pos = file_size - tail + at
    _, _, _, count, cd_size, cd_offset, _ = struct.unpack("<HHHHIIH", data[at + 4:at + 22])
    end = eocd_pos
    has_locator = at >= 20 and data[at - 20:at - 16] == _LOC64
    if count == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF or has_locator:
        if not has_locator:
            raise ArchiveError("zip64 locator missing")
        (rec64,) = struct.unpack("<Q", data[at - 12:at - 4])
        if rec64 + 56 > eocd_pos:
            raise ArchiveError("zip64 end record lies outside the file")
        f.seek(rec64)
        rec = f.read(56)
        if rec[:4] != _EOCD64:
            raise ArchiveError("zip64 end record is malformed")
        count, cd_size, cd_offset = struct.unpack("<QQQ", rec[32:56])
        end = rec64
    if count > limits.max_zip_entries:
        raise LimitExceeded(f"zip archive has {count} entries (limit {limits.max_zip_entries})",
                            limit="max_zip_entries", value=count, maximum=limits.max_zip_entries)
    if cd_offset + cd_size != end or cd_size > _MAX_CENTRAL:
        raise ArchiveError("zip central directory does not end where the end record begins")
    return cd_offset, cd_size, count


def _unpack_central(buf: bytes, pos: int) -> tuple[int, ...]:
    (_, _, flags, method, _, _, crc, csize, usize, nlen, xlen, clen, _, _, ext_attr, local) = struct.unpack(
        "<HHHHHHIIIHHHHHII", buf[pos + 4:pos + 46]
    )
    return flags, method, crc, csize, usize, nlen, xlen, clen, ext_attr, local


def _check_name(raw: bytes, flags: int, ext_attr: int) -> str:
    try:
        name = raw.decode("utf-8" if flags & 0x800 else "cp437")
    except UnicodeDecodeError as exc:
        raise ArchiveError("zip member name is not valid text") from exc
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or "\x00" in name or ":" in parts[0]
            or any(p in ("..", ".") for p in parts)):
        raise ArchiveError(f"zip member name {name!r} escapes the archive")
    if (ext_attr >> 16) & 0o170000 == 0o120000:
        raise ArchiveError(f"zip member {name!r} is a symbolic link")
    return name


def _zip64(extra: bytes, usize: int, csize: int, local: int) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack("<HH", extra[pos:pos + 4])
        body = extra[pos + 4:pos + 4 + size]
        if tag == 0x0001:
            values = [v for (v,) in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
            for field in ("usize", "csize", "local"):
                current = {"usize": usize, "csize": csize, "local": local}[field]
                if current == 0xFFFFFFFF:
                    if not values:
                        raise ArchiveError("zip64 extra field is too short")
                    value = values.pop(0)
                    usize, csize, local = (value if field == "usize" else usize,
                                           value if field == "csize" else csize,
                                           value if field == "local" else local)
        pos += 4 + size
    return usize, csize, local


def _local_header(f: BinaryIO, offset: int, name: bytes, file_size: int) -> int:
    if offset + 30 > file_size:
        raise ArchiveError("zip local header lies outside the file")
    f.seek(offset)
    head = f.read(30)
    if head[:4] != _LOCAL:
        raise ArchiveError(f"zip local header missing at byte {offset}")
    nlen, xlen = struct.unpack("<HH", head[26:30])
    if f.read(nlen) != name:
        raise ArchiveError(f"zip local header at byte {offset} names a different member")
    return offset + 30 + int(nlen) + int(xlen)


def read_member(f: BinaryIO, member: Member, max_bytes: int, limit: str = "max_member_bytes") -> bytes:
    """The member's uncompressed bytes (at most ``max_bytes``), CRC-checked."""
    if member.size > max_bytes:
        raise LimitExceeded(f"zip member {member.name!r} declares {member.size} bytes (limit {max_bytes})",
                            limit=limit, value=member.size, maximum=max_bytes)
    f.seek(member.data_offset)
    raw = f.read(member.compressed_size)
    if member.method == 8:
        inflater = zlib.decompressobj(-15)
        try:
            data = inflater.decompress(raw, member.size + 1)
        except zlib.error as exc:
            raise ArchiveError(f"zip member {member.name!r} does not inflate: {exc}") from exc
        if len(data) != member.size:
            raise ArchiveError(f"zip member {member.name!r} inflates to a size it did not declare")
    else:
        data = raw
    if zlib.crc32(data) != member.crc:
        raise ArchiveError(f"zip member {member.name!r} fails its CRC check")
    return data
