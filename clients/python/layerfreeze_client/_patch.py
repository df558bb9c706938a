"""Rebuilding an output from a local input and a ``layerfreeze-patch/1`` delta.

    {"format": "layerfreeze-patch/1", "files": [{"path", "base": {"sha256", "bytes"},
     "output": {"sha256", "bytes"}, "segments": [{"base": [start, stop]} | {"data": "<base64>"}]}]}

Each output file is its segments concatenated in order (``base`` copies ``input[start:stop]``). The
result is written to a temporary name and renamed only when its sha256 is the one the patch promises.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from ._errors import IntegrityError

__all__ = ["PATCH_FORMAT", "rebuild", "sha256_file", "single_file"]

PATCH_FORMAT = "layerfreeze-patch/1"
CHUNK = 4 * 1024 * 1024


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def single_file(patch: Any) -> dict[str, Any]:
    if not isinstance(patch, dict) or patch.get("format") != PATCH_FORMAT:
        raise IntegrityError(f"not a {PATCH_FORMAT} document")
    files = patch.get("files")
    if not isinstance(files, list) or len(files) != 1 or not isinstance(files[0], dict):
        raise IntegrityError("the patch does not describe exactly one file")
    return files[0]


def rebuild(base: str | os.PathLike[str], entry: dict[str, Any], target: str | os.PathLike[str]) -> Path:
    """Write the output that ``entry`` (one file of a patch) describes over ``base`` to ``target``;
    IntegrityError (nothing written) when the base or the result is not what the patch says."""
    base, target = Path(base), Path(target)
    want_base = entry.get("base") or {}
    if base.stat().st_size != want_base.get("bytes"):
        raise IntegrityError(f"{base} is not the patch's base: {base.stat().st_size} bytes, "
                             f"expected {want_base.get('bytes')}")
    want = (entry.get("output") or {}).get("sha256")
    if not want:
        raise IntegrityError("the patch carries no output sha256 to verify against")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    digest = hashlib.sha256()
    try:
        with open(base, "rb") as src, os.fdopen(fd, "wb") as out:
            for seg in entry.get("segments") or []:
                if "data" in seg:
                    data = base64.b64decode(seg["data"], validate=True)
                    digest.update(data)
                    out.write(data)
                    continue
                start, stop = seg["base"]
                if not 0 <= start <= stop <= want_base["bytes"]:
                    raise IntegrityError(f"patch segment {seg} lies outside the base")
                src.seek(start)
                left = stop - start
                while left:
                    data = src.read(min(CHUNK, left))
                    if not data:
                        raise IntegrityError(f"{base} ended early")
                    digest.update(data)
                    out.write(data)
                    left -= len(data)
        if digest.hexdigest() != want:
            raise IntegrityError(f"the rebuilt file's sha256 {digest.hexdigest()} is not the patch's {want}")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
