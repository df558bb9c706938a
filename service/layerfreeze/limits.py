"""Limits on what a reader accepts from an untrusted file. Each has a safe default.

The one definition of these limits: :class:`layerfreeze.settings.Settings` inherits the fields, so each is
also a setting (``LAYERFREEZE_MAX_PICKLE_BYTES``, ...) with the same default and bounds.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ReadLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_pickle_bytes: int = Field(256 * 1024 * 1024, ge=1,
                                  description="bytes of one pickle stream (data.pkl, a legacy file)")
    max_pickle_depth: int = Field(1_000, ge=1, description="nesting of containers and calls in a pickle")
    max_pickle_stack: int = Field(100_000, ge=1, description="values waiting on the pickle stack "
                                  "(pickle batches containers by 1,000)")
    max_pickle_ops: int = Field(10_000_000, ge=1, description="opcodes in one pickle stream "
                                "(about 30 per tensor; bounds the CPU an upload can cost)")
    max_zip_entries: int = Field(100_000, ge=1, description="members of a zip archive (torch.save "
                                 "writes one per storage: raise it for bigger models)")
    max_zip_ratio: int = Field(100, ge=1, description="declared size / compressed size of a deflated member")
    max_member_bytes: int = Field(1 << 30, ge=1, description="uncompressed bytes of any member we "
                                  "decompress (code/, pickles)")
    max_safetensors_header: int = Field(100_000_000, ge=1, description="bytes of a safetensors header, "
                                        "as the reference reader")
    max_tensors: int = Field(1_000_000, ge=1, description="tensors in one checkpoint")

    def as_limits(self) -> ReadLimits:
        """These limits alone (a Settings object is a ReadLimits with more fields)."""
        return ReadLimits(**{name: getattr(self, name) for name in ReadLimits.model_fields})
