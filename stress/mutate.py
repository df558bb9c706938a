"""Mutations of real checkpoints aimed where the readers parse: the pickle, the zip directory, the
safetensors header. Each mutation is plain data (``Mutation``) so a failing example is reproducible."""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

KINDS = ("flip", "set", "truncate", "insert", "delete")


@dataclass(frozen=True, slots=True)
class Mutation:
    kind: str  # one of KINDS
    region: str  # a key of regions(); "file" is always present
    at: float  # position inside the region, 0..1
    data: bytes = b"\x00"  # inserted / written bytes; for "flip", the XOR mask (first byte)
    length: int = 1  # bytes removed by "delete"

    def __str__(self) -> str:
        return f"{self.kind}@{self.region}[{self.at:.4f}] data={self.data[:8]!r} len={self.length}"


def regions(data: bytes) -> dict[str, tuple[int, int]]:
    """Byte spans worth aiming at, by what a reader does with them."""
    out = {"file": (0, len(data))}
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for info in zf.infolist():
                    n, e = struct.unpack_from("<HH", data, info.header_offset + 26)
                    start = info.header_offset + 30 + n + e
                    base = info.filename.rsplit("/", 1)[-1]
                    if base in ("data.pkl", "constants.pkl"):
                        out[f"pickle:{base}"] = (start, start + info.compress_size)
                    out.setdefault("local headers", (info.header_offset, info.header_offset + 30 + n + e))
                eocd = data.rfind(b"PK\x05\x06")
                cd = struct.unpack_from("<I", data, eocd + 16)[0]
                out["central directory"] = (cd, eocd)
                out["end record"] = (eocd, len(data))
        except (zipfile.BadZipFile, struct.error):
            pass
    elif len(data) >= 8:
        n = struct.unpack_from("<Q", data, 0)[0]
        if 0 < n <= len(data) - 8 and data[8:9] == b"{":
            out["length"] = (0, 8)
            out["st header"] = (8, 8 + n)
        else:
            out["pickle:legacy"] = (0, min(len(data), 4096))
    return out


def apply(data: bytes, m: Mutation) -> bytes:
    spans = regions(data)
    lo, hi = spans.get(m.region, spans["file"])
    pos = lo + min(int(m.at * max(hi - lo, 1)), max(hi - lo - 1, 0))
    buf = bytearray(data)
    if m.kind == "flip" and buf:
        buf[pos] ^= (m.data[:1] or b"\x01")[0] or 1
    elif m.kind == "set":
        buf[pos : pos + len(m.data)] = m.data
    elif m.kind == "truncate":
        del buf[pos:]
    elif m.kind == "insert":
        buf[pos:pos] = m.data
    elif m.kind == "delete":
        del buf[pos : pos + m.length]
    return bytes(buf)


def base_files(out: Path) -> dict[str, Path]:
    """Small real checkpoints in every format, written by torch / safetensors themselves."""
    from fixtures.models import FORMATS, build, save

    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for fmt in FORMATS:
        model = build("user" if fmt != "torchscript" else "seq3")
        ext = ".safetensors" if fmt == "safetensors" else ".pt"
        files[fmt] = save(model, out / f"base-{fmt}{ext}", fmt)
    return files
