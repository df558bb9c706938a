"""Limits on what a reader accepts from an untrusted file. Each has a safe default."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReadLimits:
    max_pickle_bytes: int = 256 * 1024 * 1024  # one data.pkl / legacy pickle stream
    max_pickle_depth: int = 1_000  # nesting of containers / calls in the symbolic machine
    max_pickle_stack: int = 100_000  # values waiting on the stack (pickle batches containers by 1000)
    max_pickle_ops: int = 10_000_000  # opcodes in one stream (~30 per tensor; bounds CPU per upload)
    max_zip_entries: int = 100_000  # torch.save writes one entry per storage: raise it for bigger models
    max_zip_ratio: int = 100  # declared size / compressed size for deflated members
    max_member_bytes: int = 1 << 30  # uncompressed size of any member we decompress (code/, pickles)
    max_safetensors_header: int = 100_000_000  # bytes, as the reference reader
    max_tensors: int = 1_000_000

    def __post_init__(self) -> None:
        for name in self.__slots__:  # type: ignore[attr-defined]
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
