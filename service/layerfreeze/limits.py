"""Limits on what a reader accepts from an untrusted file. Each has a safe default."""

from __future__ import annotations

from dataclasses import dataclass

from layerfreeze.errors import LimitExceeded


@dataclass(frozen=True, slots=True)
class ReadLimits:
    max_pickle_bytes: int = 256 * 1024 * 1024  # one data.pkl / legacy pickle stream
    max_pickle_depth: int = 1_000  # nesting of containers / calls in the symbolic machine
    max_pickle_stack: int = 100_000  # values waiting on the stack (pickle batches containers by 1000)
    max_pickle_ops: int = 10_000_000  # opcodes in one stream (~30 per tensor; bounds CPU per upload)
    max_zip_entries: int = 100_000  # torch.save writes one entry per storage: raise it for bigger models
    max_zip_ratio: int = 100  # declared size / compressed size for deflated members
    max_member_bytes: int = 1 << 30  # uncompressed size of any member we decompress (code/, pickles)
    max_code_bytes: int = 64 * 1024 * 1024  # one TorchScript code/ file (parsed as Python syntax, as data)
    max_safetensors_header: int = 100_000_000  # bytes, as the reference reader
    max_tensors: int = 1_000_000
    # Tensor and module names: real models stay far below (transformers: < 100 chars, < 12 segments).
    # Bounding them bounds the report, whose module list holds every prefix of every name.
    max_name_chars: int = 1_024
    max_name_segments: int = 64  # dotted parts ("encoder.layer.0.attention.self.query.weight" has 7)

    def __post_init__(self) -> None:
        for name in self.__slots__:  # type: ignore[attr-defined]
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    def check_name(self, name: str) -> str:
        """``name`` if it is within the name limits, else LimitExceeded."""
        if len(name) > self.max_name_chars:
            raise LimitExceeded(f"a tensor or module name is {len(name)} characters long (limit "
                                f"{self.max_name_chars}): {name[:60]!r}...", limit="max_name_chars",
                                value=len(name), maximum=self.max_name_chars)
        segments = name.count(".") + 1
        if segments > self.max_name_segments:
            raise LimitExceeded(f"a tensor or module name has {segments} dotted parts (limit "
                                f"{self.max_name_segments}): {name[:60]!r}...", limit="max_name_segments",
                                value=segments, maximum=self.max_name_segments)
        return name
