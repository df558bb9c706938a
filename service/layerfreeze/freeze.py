"""The use case every front end calls: read a checkpoint as data, apply a freeze spec, write, report.

    report = freeze_file(src, spec, dst)          # dst=None: inspection / dry run, nothing written

The CLI, the service's workers and the benchmarks all go through here. The output is written to a
temporary name next to ``dst`` and renamed into place only when complete, so a failure never leaves a
partial file behind and never damages an existing ``dst``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from layerfreeze.core.report import FileRef, Report, build_report
from layerfreeze.core.selection import select
from layerfreeze.core.spec import FreezeSpec, parse_spec, spec_sha256
from layerfreeze.limits import ReadLimits

__all__ = ["freeze_file", "new_file_mode", "sha256_file"]

_CHUNK = 1 << 20


def freeze_file(
    src: Path | str,
    spec: str | bytes | Mapping[str, Any] | FreezeSpec,
    dst: Path | str | None = None,
    *,
    limits: ReadLimits = ReadLimits(),  # noqa: B008  (frozen: safe as a default)
    input_name: str | None = None,
    output_name: str | None = None,
) -> Report:
    """Freeze ``src`` by ``spec`` into ``dst`` (same format) and return the report.

    Raises SpecError (the spec is invalid, or under ``strict`` selects nothing), FormatError subclasses
    (the file is not a checkpoint we read), LimitExceeded, and OSError for the files themselves.
    """
    from layerfreeze.formats.base import pin_unrecordable
    from layerfreeze.formats.detect import open_archive  # the readers are the formats package's

    src = Path(src)
    parsed = parse_spec(spec)
    archive = open_archive(src, limits)
    selection = select(parsed, archive.inventory)
    unrecordable = getattr(archive, "unrecordable", frozenset())
    if unrecordable:  # the report says what torch.load of the output gives (CONTRACT section 7)
        selection = pin_unrecordable(selection, unrecordable)
    input_filename = input_name or src.name
    if dst is None:
        size, digest = sha256_file(src)
        source = FileRef(filename=input_filename, bytes=size, sha256=digest)
        return build_report(selection, parsed, input=source, output=None)
    dst = Path(dst)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        written = archive.write(tmp, selection.final_by_name(), spec_sha256(parsed))
        os.chmod(tmp, new_file_mode())  # mkstemp made it 0600; the output is an ordinary file
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return build_report(
        selection, parsed,
        input=FileRef(filename=input_filename, bytes=src.stat().st_size, sha256=written.source_sha256),
        output=FileRef(filename=output_name or dst.name, bytes=written.bytes, sha256=written.sha256),
    )


def new_file_mode() -> int:
    """The mode ``open()`` (and so ``cp``) gives a new file: ``0o666`` less the process umask. Read from
    /proc where it exists, since setting the umask to read it is not thread-safe."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def output_filename(input_name: str, fmt: str | None = None) -> str:
    """``resnet.pt`` -> ``resnet.frozen.pt``; ``model`` -> ``model.frozen``.

    With the detected format known, a torch archive uploaded under a ``.safetensors`` name gets ``.pt``:
    ``torch.load`` chooses its safetensors reader by that suffix and would fail on the output.
    """
    stem, dot, suffix = input_name.rpartition(".")
    if not dot or not stem:
        return f"{input_name}.frozen"
    if fmt is not None and fmt != "safetensors" and suffix.lower() == "safetensors":
        suffix = "pt"
    return f"{stem}.frozen.{suffix}"


def sha256_file(path: Path) -> tuple[int, str]:
    """Size and sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
