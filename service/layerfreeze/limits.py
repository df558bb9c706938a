"""Limits on what a reader accepts from an untrusted file. Each has a safe default.

The one definition of these limits: :class:`layerfreeze.settings.Settings` inherits the fields, so each is
also a setting (``LAYERFREEZE_MAX_PICKLE_BYTES``, ...) with the same default and bounds.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from layerfreeze.errors import LimitExceeded


class ReadLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_pickle_bytes: int = Field(256 * 1024 * 1024, ge=1, description=(
        "Largest pickle stream read (one `data.pkl` or legacy `torch.save` stream)."))
    max_pickle_depth: int = Field(1_000, ge=1, description=(
        "Nesting (MARKs and containers, including nesting built through the memo) in the symbolic "
        "pickle reader."))
    max_pickle_stack: int = Field(100_000, ge=1, description=(
        "Values waiting on the pickle stack (Python's pickler batches containers by 1,000, so real "
        "files stay far below it)."))
    max_pickle_ops: int = Field(10_000_000, ge=1, description=(
        "Opcodes in one pickle stream: about 30 per tensor, and 1-2 µs each, so it is also the CPU "
        "bound per upload. Raise it for checkpoints with over ~300,000 tensors."))
    max_zip_entries: int = Field(100_000, ge=1, description=(
        "Members of a zip archive. `torch.save` writes one per storage: raise it for checkpoints "
        "with more tensors."))
    max_zip_ratio: int = Field(100, ge=1, description=(
        "Declared size / compressed size of a deflated zip member."))
    max_member_bytes: int = Field(1 << 30, ge=1, description=(
        "Uncompressed size of a zip member that is decompressed (`code/`, pickles)."))
    max_code_bytes: int = Field(64 * 1024 * 1024, ge=1, description=(
        "Bytes of one TorchScript `code/` file (parsed as Python syntax, as data, never run)."))
    max_safetensors_header: int = Field(100_000_000, ge=1, description=(
        "Bytes of a safetensors header, as the reference reader caps it."))
    max_tensors: int = Field(1_000_000, ge=1, description="Tensors in one checkpoint.")
    # Real models stay far below these (transformers: < 100 characters, < 12 segments). Bounding names
    # bounds the report, whose module list holds every prefix of every name.
    max_name_chars: int = Field(1_024, ge=1, description="Characters of one tensor or module name.")
    max_name_segments: int = Field(64, ge=1, description=(
        "Dotted parts of one tensor or module name (`encoder.layer.0.attention.self.query.weight` has 7)."))

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

    def as_limits(self) -> ReadLimits:
        """These limits alone (a Settings object is a ReadLimits with more fields)."""
        return ReadLimits(**{name: getattr(self, name) for name in ReadLimits.model_fields})
