"""Zip crafting for the corpus: torch-layout archives, and byte patches that zipfile itself won't write."""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterable

EOCD_SIG = b"PK\x05\x06"
CDIR_SIG = b"PK\x01\x02"

# what torch.save writes besides data.pkl and the storages
TORCH_META = (("byteorder", b"little"), ("version", b"3\n"), (".data/serialization_id", b"0" * 40))

Member = tuple[str, bytes] | tuple[zipfile.ZipInfo, bytes]


def torch_zip(
    data_pkl: bytes,
    storages: Iterable[tuple[str, bytes]] = (),
    *,
    prefix: str = "archive",
    extra: Iterable[Member] = (),
) -> bytes:
    """A zip laid out as torch.save lays it out, every member stored (uncompressed)."""
    members: list[Member] = [(f"{prefix}/data.pkl", data_pkl)]
    members += [(f"{prefix}/data/{key}", raw) for key, raw in storages]
    members += [(f"{prefix}/{name}", raw) for name, raw in TORCH_META]
    members += list(extra)
    return write_zip(members)


def write_zip(members: Iterable[Member], *, stream: bool = False, prepend: bytes = b"") -> bytes:
    """Write members in order (duplicates allowed). ``stream`` writes data descriptors (flag bit 3),
    as zipfile does on an unseekable file; ``prepend`` puts bytes before the first local header
    (offsets stay absolute)."""
    buf = io.BytesIO(prepend)
    buf.seek(0, 2)
    target: io.RawIOBase | io.BytesIO = _Unseekable(buf) if stream else buf
    with zipfile.ZipFile(target, "a" if prepend else "w") as zf:  # type: ignore[arg-type]
        for name, raw in members:
            info = name if isinstance(name, zipfile.ZipInfo) else zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
            with warnings.catch_warnings():  # "Duplicate name": on purpose
                warnings.simplefilter("ignore")
                zf.writestr(info, raw)
    return buf.getvalue()


class _Unseekable(io.RawIOBase):
    def __init__(self, inner: io.BytesIO) -> None:
        self.inner = inner

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        return self.inner.write(b)

    def tell(self) -> int:
        raise OSError("unseekable")

    def flush(self) -> None:
        pass


def deflated(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
    info.create_system = 3  # unix: external_attr carries st_mode
    info.external_attr = 0o120777 << 16
    return info


def central_entries(data: bytes) -> list[tuple[int, str, int]]:
    """(central record offset, name, local header offset) for every central directory record."""
    eocd = data.rfind(EOCD_SIG)
    count = struct.unpack_from("<H", data, eocd + 10)[0]
    cd_off = struct.unpack_from("<I", data, eocd + 16)[0]
    out = []
    pos = cd_off
    for _ in range(count):
        assert data[pos : pos + 4] == CDIR_SIG
        n, e, c = struct.unpack_from("<HHH", data, pos + 28)
        local = struct.unpack_from("<I", data, pos + 42)[0]
        out.append((pos, data[pos + 46 : pos + 46 + n].decode("utf-8", "replace"), local))
        pos += 46 + n + e + c
    return out


def patch_member(data: bytes, name: str, *, set_flags: int = 0, file_size: int | None = None) -> bytes:
    """Set general-purpose flag bits and/or forge the declared uncompressed size of one member, in both
    its local header and its central directory record (so the archive stays self-consistent)."""
    out = bytearray(data)
    for cd, member, local in central_entries(data):
        if member != name:
            continue
        for flag_at in (cd + 8, local + 6):
            struct.pack_into("<H", out, flag_at, struct.unpack_from("<H", out, flag_at)[0] | set_flags)
        if file_size is not None:
            struct.pack_into("<I", out, cd + 24, file_size)
            struct.pack_into("<I", out, local + 22, file_size)
    return bytes(out)


def write_ratio_bomb(data_pkl: bytes, size: int) -> bytes:
    """A torch-layout zip whose storage member inflates ``size`` zero bytes from about size/1000 stored.

    zipfile would need the whole input in memory; we deflate chunk by chunk and patch the sizes in."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    parts = [comp.compress(chunk) for _ in range(size >> 20)]
    parts.append(comp.flush())
    body = b"".join(parts)
    crc = 0
    for _ in range(size >> 20):
        crc = zlib.crc32(chunk, crc)
    # a stored placeholder of the compressed length, then the stream and the header fields patched in
    placeholder = zipfile.ZipInfo("archive/data/0", (1980, 1, 1, 0, 0, 0))
    blob = torch_zip(data_pkl, extra=[(placeholder, b"\x00" * len(body))])
    out = bytearray(blob)
    for cd, member, local in central_entries(blob):
        if member != "archive/data/0":
            continue
        n, e = struct.unpack_from("<HH", out, local + 26)
        start = local + 30 + n + e
        out[start : start + len(body)] = body
        for at, size_at, csize_at, crc_at in (
            (cd + 10, cd + 24, cd + 20, cd + 16),
            (local + 8, local + 22, local + 18, local + 14),
        ):
            struct.pack_into("<H", out, at, zipfile.ZIP_DEFLATED)
            struct.pack_into("<I", out, size_at, size)
            struct.pack_into("<I", out, csize_at, len(body))
            struct.pack_into("<I", out, crc_at, crc)
    return bytes(out)
