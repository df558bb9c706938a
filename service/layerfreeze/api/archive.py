"""One uncompressed tar of a model directory's output, composed on the fly from the job's patch: tar
headers, then each file as segments over its stored input file, so any byte range is served without
writing the archive anywhere. The bytes are a function of the patch alone (fixed mode and mtime), so
the output's listing digest names them exactly and serves as the ETag."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

from layerfreeze.api.downloads import ConcatReader
from layerfreeze.formats.segments import SegmentReader, from_patch_segments

BLOCK = 512


def tar_layout(entries: list[dict[str, Any]], top: str, mtime: int) -> list[bytes | dict[str, Any]]:
    """The archive as literal bytes (headers, padding, the end marker) and patch entries (file bodies),
    each file under ``top/``, in path order."""
    layout: list[bytes | dict[str, Any]] = []
    for entry in sorted(entries, key=lambda e: e["path"]):
        info = tarfile.TarInfo(f"{top}/{entry['path']}")
        info.size, info.mode, info.mtime = entry["output"]["bytes"], 0o644, mtime
        layout.append(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))  # PAX: long paths too
        layout.append(entry)
        layout.append(b"\0" * (-info.size % BLOCK))
    layout.append(b"\0" * (2 * BLOCK))
    return layout


def tar_size(layout: list[bytes | dict[str, Any]]) -> int:
    return sum(len(p) if isinstance(p, bytes) else p["output"]["bytes"] for p in layout)


def open_tar(layout: list[bytes | dict[str, Any]], base_of: Any) -> ConcatReader:
    """A reader over the archive; ``base_of(sha256)`` is the stored file a patch entry is a delta over."""
    pieces: list[bytes | tuple[Any, int]] = []
    try:
        for piece in layout:
            if isinstance(piece, bytes):
                pieces.append(piece)
            else:
                reader = SegmentReader(Path(base_of(piece["base"]["sha256"])),
                                       from_patch_segments(piece["segments"]))
                pieces.append((reader, piece["output"]["bytes"]))
    except BaseException:
        ConcatReader(pieces).close()
        raise
    return ConcatReader(pieces)
