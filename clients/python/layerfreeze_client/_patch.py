"""Rebuilding an output from a local input and a ``layerfreeze-patch/1`` delta.

    {"format": "layerfreeze-patch/1", "files": [{"path", "base": {"sha256", "bytes"},
     "output": {"sha256", "bytes"}, "segments": [{"base": [start, stop]} | {"data": "<base64>"}]}]}

Each output file is its segments concatenated in order (``base`` copies ``input[start:stop]``). The
result goes through the download's own writer (``DownloadSink``): a temporary name beside the target, the
mode ``cp`` would give, renamed only when its sha256 is the one the patch promises.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ._download import DownloadSink
from ._errors import IntegrityError
from ._progress import Progress, ProgressLike

__all__ = ["PATCH_FORMAT", "listing_sha256", "rebuild", "rebuild_directory", "sha256_file", "single_file"]

PATCH_FORMAT = "layerfreeze-patch/1"
CHUNK = 4 * 1024 * 1024


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def listing_sha256(digests: dict[str, str]) -> str:
    """A model directory's digest as the service takes it: the sha256 of its ``sha256sum``-style listing,
    ``"<sha256>  <path>\\n"`` for every file, sorted by path."""
    text = "".join(f"{digests[p]}  {p}\n" for p in sorted(digests))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def single_file(patch: Any) -> dict[str, Any]:
    if not isinstance(patch, dict) or patch.get("format") != PATCH_FORMAT:
        raise IntegrityError(f"not a {PATCH_FORMAT} document")
    files = patch.get("files")
    if not isinstance(files, list) or len(files) != 1 or not isinstance(files[0], dict):
        raise IntegrityError("the patch does not describe exactly one file")
    return files[0]


def rebuild(base: str | os.PathLike[str], entry: dict[str, Any], target: str | os.PathLike[str], *,
            sha256: str | None = None, progress: ProgressLike = False) -> Path:
    """Write the output that ``entry`` (one file of a patch) describes over ``base`` to ``target``, as a
    download is written (the same mode, the same verify-then-rename; also against ``sha256``, the report's,
    when given); IntegrityError (nothing written) when the base, the patch or the result is not right."""
    base, target = Path(base), Path(target)
    want_base = entry.get("base") or {}
    base_size = base.stat().st_size
    if base_size != want_base.get("bytes"):
        raise IntegrityError(f"{base} is not the patch's base: {base_size} bytes, "
                             f"expected {want_base.get('bytes')}")
    output = entry.get("output") or {}
    want = output.get("sha256")
    if not isinstance(want, str) or not want:
        raise IntegrityError("the patch carries no output sha256 to verify against")
    size = output.get("bytes") if isinstance(output.get("bytes"), int) else None
    expected = {"patch": want, **({"report": sha256} if sha256 else {})}
    sink = DownloadSink(target)
    try:
        with open(base, "rb") as src, Progress(progress, size, f"download {target.name} (delta)") as bar:
            for data in _segments(src, entry.get("segments"), base_size, sink):
                sink.write(data)
                bar.update(len(data))
            bar.update(max(0, sink.written - bar.done))
        sink.commit(expected, size)
    except BaseException:
        sink.discard()
        raise
    return target


def rebuild_directory(patch: Any, files: dict[str, Path] | Any, staging: Path, *,
                      progress: ProgressLike = False) -> None:
    """Write every file of a model directory's patch into ``staging`` (an empty directory), each rebuilt
    from the local file of the same path (``files``: relative path -> file) and verified by ``rebuild``."""
    from ._directory import check_paths

    entries = patch.get("files") if isinstance(patch, dict) else None
    if not isinstance(patch, dict) or patch.get("format") != PATCH_FORMAT or not isinstance(entries, list):
        raise IntegrityError(f"not a {PATCH_FORMAT} document")
    if not all(isinstance(e, dict) and isinstance(e.get("path"), str) for e in entries):
        raise IntegrityError("a patch entry names no path")
    check_paths([e["path"] for e in entries])
    for entry in entries:
        base = files.get(entry["path"])
        if base is None:
            raise IntegrityError(f"the patch names {entry['path']!r}, which the local directory lacks")
        dst = staging / entry["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        rebuild(base, entry, dst, progress=progress)


def _segments(src: BinaryIO, segments: Any, base_size: int, sink: DownloadSink | None = None
              ) -> Iterator[bytes]:
    """The output's bytes in order: literal data, or ranges read from the base. With ``sink``, a range
    of the base is copied into it in the kernel where the system can (the bytes are then not yielded)."""
    if not isinstance(segments, list):
        raise IntegrityError("the patch's segments are not a list")
    for seg in segments:
        if isinstance(seg, dict) and isinstance(seg.get("data"), str):
            try:
                yield base64.b64decode(seg["data"], validate=True)
            except (binascii.Error, ValueError):
                raise IntegrityError("a patch segment holds malformed base64") from None
            continue
        span = seg.get("base") if isinstance(seg, dict) else None
        if not (isinstance(span, list) and len(span) == 2 and all(type(v) is int for v in span)
                and 0 <= span[0] <= span[1] <= base_size):
            raise IntegrityError(f"patch segment {str(seg)[:100]} is not a range of the base")
        if sink is not None and sink.copy_range(src, span[0], span[1]):
            continue
        src.seek(span[0])
        left = span[1] - span[0]
        while left:
            data = src.read(min(CHUNK, left))
            if not data:
                raise IntegrityError("the base ended early (it changed while the output was rebuilt)")
            left -= len(data)
            yield data
