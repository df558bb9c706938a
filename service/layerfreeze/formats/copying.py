"""Copy a file while patching a few bytes and hashing source and output, in constant memory.

The copy runs in fixed-size chunks; two hashing threads (hashlib releases the GIL) overlap with the
reads and writes, so hashing both sides costs little more than the copy itself.
"""

from __future__ import annotations

import bisect
import hashlib
import os
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from layerfreeze.formats.base import WrittenFile

CHUNK = 8 * 1024 * 1024
_IN_FLIGHT = 3  # chunks whose hashing may still be running


def stream_copy(
    src: Path, dst: Path, patches: Mapping[int, bytes] | None = None, *, head: bytes | None = None,
    skip: int = 0,
) -> WrittenFile:
    """Write ``head`` (if any) then ``src[skip:]`` to ``dst`` with ``patches`` (source offset -> bytes)
    applied; return the output's size and sha256 and the whole source's sha256."""
    byte_patches = _by_byte(patches or {})
    offsets = sorted(byte_patches)
    src_hash, out_hash = hashlib.sha256(), hashlib.sha256()
    written = 0
    pending: list[Future[None]] = []
    with ThreadPoolExecutor(1) as src_pool, ThreadPoolExecutor(1) as out_pool, \
            open(src, "rb", buffering=0) as fin, open(dst, "wb", buffering=0) as fout:
        if head is not None:
            pending.append(out_pool.submit(out_hash.update, head))
            fout.write(head)
            written += len(head)
        position = 0
        while True:
            chunk = fin.read(CHUNK)
            if not chunk:
                break
            pending.append(src_pool.submit(src_hash.update, chunk))
            end = position + len(chunk)
            out = chunk
            if end > skip:
                lo = bisect.bisect_left(offsets, max(position, skip))
                hi = bisect.bisect_left(offsets, end)
                if lo < hi:
                    buf = bytearray(chunk)
                    for off in offsets[lo:hi]:
                        buf[off - position] = byte_patches[off]
                    out = bytes(buf)
                if position < skip:
                    out = out[skip - position:]
                pending.append(out_pool.submit(out_hash.update, out))
                _write_all(fout, out)
                written += len(out)
            position = end
            while len(pending) > 2 * _IN_FLIGHT:
                pending.pop(0).result()
        for fut in pending:
            fut.result()
    return WrittenFile(bytes=written, sha256=out_hash.hexdigest(), source_sha256=src_hash.hexdigest())


def _by_byte(patches: Mapping[int, bytes]) -> dict[int, int]:
    out: dict[int, int] = {}
    for offset, data in patches.items():
        for i, value in enumerate(data):
            out[offset + i] = value
    return out


def _write_all(fd: object, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = fd.write(view)  # type: ignore[attr-defined]
        view = view[n:]


def file_size(path: Path) -> int:
    return os.stat(path).st_size
