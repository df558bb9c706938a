"""An output file described as a delta against its source: segments, concatenated in order.

    Segment = (start, stop)   # the source's bytes [start, stop)
            | bytes           # literal bytes

This is what every writer produces (a freeze changes a few flag bytes and CRCs, or a safetensors header)
and what the service stores per job instead of a copy: the artifact is served, hashed or rebuilt from
the source plus these segments. It is also the body of the ``layerfreeze-patch/1`` format.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from layerfreeze.errors import FormatError

Segment = Union[tuple[int, int], bytes]  # noqa: UP007  (a runtime alias, used in isinstance checks too)
PATCH_FORMAT = "layerfreeze-patch/1"
CHUNK = 4 * 1024 * 1024


def from_patches(size: int, patches: Mapping[int, bytes] | None = None, *, head: bytes = b"",
                 skip: int = 0) -> list[Segment]:
    """``head`` + ``source[skip:size]`` with ``patches`` (source offset -> bytes, same length) applied."""
    out: list[Segment] = [head] if head else []
    pos = skip
    for offset in sorted(patches or {}):
        data = (patches or {})[offset]
        if offset < skip:
            continue
        if offset < pos or offset + len(data) > size:
            raise FormatError(f"patch at byte {offset} overlaps another or runs past the file")
        if offset > pos:
            out.append((pos, offset))
        out.append(bytes(data))
        pos = offset + len(data)
    if pos < size:
        out.append((pos, size))
    return normalize(out)


def normalize(segments: Iterable[Segment]) -> list[Segment]:
    """Merge neighbours (adjacent ranges, consecutive literals) and drop empty pieces."""
    out: list[Segment] = []
    for seg in segments:
        if isinstance(seg, tuple):
            start, stop = seg
            if stop <= start:
                continue
            if out and isinstance(out[-1], tuple) and out[-1][1] == start:
                out[-1] = (out[-1][0], stop)
                continue
            out.append((start, stop))
        elif seg:
            if out and isinstance(out[-1], bytes):
                out[-1] = out[-1] + seg
                continue
            out.append(bytes(seg))
    return out


def slice_segments(segments: Sequence[Segment], start: int, stop: int) -> list[Segment]:
    """The part of the output at positions [start, stop), as segments."""
    out: list[Segment] = []
    pos = 0
    for seg in segments:
        n = seg[1] - seg[0] if isinstance(seg, tuple) else len(seg)
        lo, hi = max(start, pos), min(stop, pos + n)
        if lo < hi:
            if isinstance(seg, tuple):
                out.append((seg[0] + lo - pos, seg[0] + hi - pos))
            else:
                out.append(seg[lo - pos:hi - pos])
        pos += n
        if pos >= stop:
            break
    return out


def output_size(segments: Sequence[Segment]) -> int:
    return sum(seg[1] - seg[0] if isinstance(seg, tuple) else len(seg) for seg in segments)


def literal_bytes(segments: Sequence[Segment]) -> int:
    return sum(len(seg) for seg in segments if isinstance(seg, bytes))


def check(segments: Sequence[Segment], base_size: int) -> None:
    for seg in segments:
        if isinstance(seg, tuple) and not 0 <= seg[0] <= seg[1] <= base_size:
            raise FormatError(f"segment {list(seg)} lies outside the {base_size}-byte base")


# -- reading the output without writing it ------------------------------------------------------------


class SegmentReader:
    """``pread(n, pos)`` over the output that ``segments`` describe, reading the base file as needed."""

    def __init__(self, base: Path, segments: Sequence[Segment]) -> None:
        self.segments = list(segments)
        self.starts: list[int] = []
        pos = 0
        for seg in self.segments:
            self.starts.append(pos)
            pos += seg[1] - seg[0] if isinstance(seg, tuple) else len(seg)
        self.size = pos
        self.fd = os.open(base, os.O_RDONLY)
        self.lock = threading.Lock()  # a read in flight in another thread never sees the fd closed

    def pread(self, n: int, pos: int) -> bytes:
        with self.lock:
            return self._pread(n, pos) if self.fd >= 0 else b""

    def _pread(self, n: int, pos: int) -> bytes:
        parts: list[bytes] = []
        end = min(pos + n, self.size)
        i = bisect.bisect_right(self.starts, pos) - 1
        while pos < end and 0 <= i < len(self.segments):
            seg, seg_start = self.segments[i], self.starts[i]
            rel = pos - seg_start
            if isinstance(seg, tuple):
                take = min(end - pos, seg[1] - seg[0] - rel)
                data = os.pread(self.fd, take, seg[0] + rel)
                if len(data) != take:
                    raise OSError("the stored model is shorter than its record")
            else:
                data = seg[rel:rel + end - pos]
            parts.append(data)
            pos += len(data)
            i += 1
        return b"".join(parts)

    def chunks(self, start: int = 0, chunk: int = CHUNK) -> Iterator[bytes]:
        pos = start
        while pos < self.size:
            data = self.pread(chunk, pos)
            if not data:
                raise OSError("the output ended early")
            yield data
            pos += len(data)

    def close(self) -> None:
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1

    def __enter__(self) -> SegmentReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sha256_of(base: Path, segments: Sequence[Segment]) -> tuple[int, str]:
    """Size and sha256 of the output, read once from the base (nothing written)."""
    digest = hashlib.sha256()
    with SegmentReader(base, segments) as reader:
        for data in reader.chunks():
            digest.update(data)
        return reader.size, digest.hexdigest()


# -- the layerfreeze-patch/1 document --------------------------------------------------------------------


def to_patch_file(path: str, segments: Sequence[Segment], *, base_sha256: str, base_bytes: int,
                  output_sha256: str | None) -> dict[str, Any]:
    return {
        "path": path,
        "base": {"sha256": base_sha256, "bytes": base_bytes},
        "output": {"sha256": output_sha256, "bytes": output_size(segments)},
        "segments": [{"base": [s[0], s[1]]} if isinstance(s, tuple)
                     else {"data": base64.b64encode(s).decode("ascii")} for s in segments],
    }


def from_patch_segments(items: Any) -> list[Segment]:
    """Segments of one file of a ``layerfreeze-patch/1`` document, validated."""
    if not isinstance(items, list):
        raise FormatError("patch 'segments' must be a list")
    out: list[Segment] = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and set(item) == {"base"}:
            rng = item["base"]
            if (not isinstance(rng, list) or len(rng) != 2 or not all(type(v) is int and v >= 0 for v in rng)
                    or rng[0] > rng[1]):
                raise FormatError(f"patch segment {i}: 'base' must be [start, stop]")
            out.append((rng[0], rng[1]))
        elif isinstance(item, dict) and set(item) == {"data"} and isinstance(item["data"], str):
            try:
                out.append(base64.b64decode(item["data"], validate=True))
            except ValueError as exc:
                raise FormatError(f"patch segment {i}: 'data' is not base64") from exc
        else:
            raise FormatError(f"patch segment {i} must be {{'base': [start, stop]}} or {{'data': base64}}")
    return out
