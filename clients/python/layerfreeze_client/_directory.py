"""A local model directory (a Hugging Face model: index, shards, config and tokenizer files) as the
service takes it: every regular file by its relative posix path.

The service refuses unsafe paths, too many files and too much data; these checks run here first, as a
courtesy, so that a directory the service would refuse is never uploaded.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ._errors import ClientError

__all__ = ["check_paths", "default_output_dir", "directory_files", "publish_dir", "staging_dir"]


def directory_files(root: str | os.PathLike[str], *, max_files: int | None = None,
                    max_bytes: int | None = None) -> dict[str, Path]:
    """Every regular file under ``root`` by its relative posix path, sorted. Links (a link could point
    anywhere, and the output would not be the same directory), other special files, unsafe names and a
    directory over the limits given raise ``ClientError``."""
    root = Path(root)
    if not root.is_dir():
        raise ClientError(f"{root}: not a directory")
    files: dict[str, Path] = {}
    total = 0
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise ClientError(f"{rel!r} is a symbolic link; a model directory holds regular files only")
        if path.is_dir():
            continue
        if not path.is_file():
            raise ClientError(f"{rel!r} is not a regular file")
        files[rel] = path
        total += path.stat().st_size
        if max_files is not None and len(files) > max_files:
            raise ClientError(f"{root} holds more than {max_files} files, the service's limit")
    if max_bytes is not None and total > max_bytes:
        raise ClientError(f"{root} holds {total} bytes, more than the service's limit of {max_bytes}")
    if not files:
        raise ClientError(f"{root}: the directory holds no files")
    check_paths(files)
    return files


def check_paths(paths: object) -> None:
    """The service's rule for a model directory's paths: plain relative paths (no leading '/', no '.',
    '..' or empty segments, no backslashes or control characters), none twice or differing only in case,
    none both a file and a folder."""
    seen: dict[str, str] = {}
    for path in paths:  # type: ignore[attr-defined]
        parts = path.split("/")
        if (not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts)
                or any(ord(c) < 32 or c == "\x7f" for c in path) or len(path) > 4096):
            raise ClientError(f"{path[:200]!r} is not a relative path inside the model directory")
        folded = path.casefold()
        if folded in seen:
            raise ClientError(f"{path[:200]!r} and {seen[folded][:200]!r} differ only in case; they would "
                              "collide on many file systems")
        seen[folded] = path
    for folded in seen:
        parts = folded.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in seen:
                raise ClientError(f"{seen[folded][:200]!r}: a path is both a file and a folder")


def default_output_dir(model_dir: str | os.PathLike[str]) -> Path:
    """``<name>.frozen`` beside the input directory."""
    path = Path(model_dir).absolute()
    return path.with_name(f"{path.name}.frozen")


def staging_dir(target: Path) -> Path:
    """A temporary directory beside ``target`` (which must not exist, or be empty), to fill and then
    ``publish_dir``: a failure never leaves a half-written output directory."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ClientError(f"{target}: the output directory exists and is not empty")
    target.absolute().parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.absolute().parent))


def publish_dir(staging: Path, target: Path) -> None:
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(staging, 0o777 & ~mask)  # the mode mkdir gives (mkdtemp made it 0700)
    if target.exists():
        target.rmdir()
    os.replace(staging, target)
