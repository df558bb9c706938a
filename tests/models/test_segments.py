"""Segments: an output described as ranges of its source plus literal bytes, read back exactly."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from layerfreeze.errors import FormatError
from layerfreeze.formats.segments import (
    SegmentReader,
    from_patch_segments,
    from_patches,
    output_size,
    sha256_of,
    slice_segments,
    to_patch_file,
)


def _materialize(base: bytes, segments) -> bytes:
    return b"".join(base[s[0]:s[1]] if isinstance(s, tuple) else s for s in segments)


def test_patches_head_and_reads_across_every_boundary(tmp_path: Path) -> None:
    base = os.urandom(10_000)
    path = tmp_path / "base"
    path.write_bytes(base)
    segments = from_patches(len(base), {5: b"\x01\x02", 4_999: b"X", 9_999: b"Z"}, head=b"HEAD", skip=3)
    expected = b"HEAD" + base[3:5] + b"\x01\x02" + base[7:4_999] + b"X" + base[5_000:9_999] + b"Z"
    assert _materialize(base, segments) == expected and output_size(segments) == len(expected)
    with SegmentReader(path, segments) as reader:
        end = len(expected)
        for start, n in ((0, 3), (2, 9), (4, 4_999), (4_990, 30), (end - 2, 10), (end, 5)):
            assert reader.pread(n, start) == expected[start:start + n]
        assert b"".join(reader.chunks(chunk=333)) == expected
    assert sha256_of(path, segments) == (len(expected), hashlib.sha256(expected).hexdigest())
    for start, stop in ((0, 0), (0, 7), (3, 5_000), (6, len(expected))):
        assert _materialize(base, slice_segments(segments, start, stop)) == expected[start:stop]


def test_patch_document_round_trip_and_refusals() -> None:
    segments = [(0, 10), b"\x89", (11, 20)]
    doc = to_patch_file("m.pt", segments, base_sha256="a" * 64, base_bytes=20, output_sha256="b" * 64)
    assert doc["output"]["bytes"] == 20
    assert from_patch_segments(doc["segments"]) == segments
    for bad in ([{"base": [5, 2]}], [{"base": [0, -1]}], [{"data": "%%%"}], [{"other": 1}], "x",
                [{"base": [0, 1], "data": "AA=="}]):
        with pytest.raises(FormatError):
            from_patch_segments(bad)
    with pytest.raises(FormatError):
        from_patches(10, {8: b"abc"})  # runs past the end
