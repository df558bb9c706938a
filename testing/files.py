"""Files for tests and benches: large valid checkpoints written without torch, and the process umask."""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

MiB = 1 << 20


def write_safetensors(path: Path, size: int, tensor_bytes: int = 64 * MiB) -> Path:
    """A valid safetensors file of about ``size`` bytes: float32 tensors ``layers.{i}.weight`` of
    ``tensor_bytes`` each (the last one smaller), random data, written one MiB at a time."""
    block = os.urandom(MiB)
    sizes = [tensor_bytes] * (size // tensor_bytes)
    if size % tensor_bytes >= 4:
        sizes.append(size % tensor_bytes // 4 * 4)
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for i, n in enumerate(sizes):
        header[f"layers.{i}.weight"] = {"dtype": "F32", "shape": [n // 4],
                                        "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    if len(raw) & 0xFF == 0x80:  # keep the first byte off the pickle PROTO opcode: detection stays plain
        raw += b" " * 8
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for n in sizes:
            while n > 0:
                k = min(n, MiB)
                f.write(block[:k])
                n -= k
    return path


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """The process umask set to ``mask`` for the block (files made inside get ``0o666 & ~mask``)."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)
