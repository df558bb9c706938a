"""Format detection from content: the ambiguous first byte \\x80 (pickle marker or header length)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from layerfreeze.formats.detect import open_archive, sniff


def _safetensors_with_header_length(path: Path, length: int) -> Path:
    header = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    raw = json.dumps(header).encode()
    raw += b" " * (length - len(raw))
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
    return path


@pytest.mark.parametrize("length", [384, 640, 0x0380, 0x0480])
def test_safetensors_whose_header_length_starts_with_the_pickle_marker(tmp_path: Path, length: int) -> None:
    path = _safetensors_with_header_length(tmp_path / "m.safetensors", length)
    assert path.read_bytes()[0] == 0x80
    archive = open_archive(path)
    assert archive.inventory.format == "safetensors"
    assert [t.name for t in archive.inventory.tensors] == ["w"]


def test_a_pickle_is_still_a_pickle() -> None:
    assert sniff(b"\x80\x02}q\x00(X\x01\x00\x00\x00a", 100) == "pickle"
    assert sniff(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}", 40) == "pickle"
