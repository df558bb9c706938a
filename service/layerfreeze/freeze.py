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

from layerfreeze.core.model import Inventory
from layerfreeze.core.report import FileRef, Report, build_report
from layerfreeze.core.selection import select
from layerfreeze.core.spec import FreezeSpec, parse_spec, spec_sha256
from layerfreeze.formats.segments import Segment, output_size
from layerfreeze.limits import ReadLimits

__all__ = ["freeze_file", "freeze_stored", "preview_stored", "read_model", "sha256_file"]

_CHUNK = 1 << 20


def freeze_file(
    src: Path | str,
    spec: str | bytes | Mapping[str, Any] | FreezeSpec,
    dst: Path | str | None = None,
    *,
    limits: ReadLimits = ReadLimits(),  # noqa: B008  (frozen dataclass: safe as a default)
    input_name: str | None = None,
    output_name: str | None = None,
    digest: bool = True,
) -> Report:
    """Freeze ``src`` by ``spec`` into ``dst`` (same format) and return the report.

    ``digest=False`` leaves the input's sha256 out of the report (None) and saves reading the input a
    second time: a dry run then reads the metadata only; a freeze hashes only the output as it writes it.

    Raises SpecError (the spec is invalid, or under ``strict`` selects nothing), FormatError subclasses
    (the file is not a checkpoint we read), LimitExceeded, and OSError for the files themselves.
    """
    from layerfreeze.formats.detect import open_archive  # the readers are the formats package's

    src = Path(src)
    parsed = parse_spec(spec)
    archive = open_archive(src, limits)
    selection = select(parsed, archive.inventory)
    input_filename = input_name or src.name
    if dst is None:
        size, sha = sha256_file(src) if digest else (src.stat().st_size, None)
        source = FileRef(filename=input_filename, bytes=size, sha256=sha)
        return build_report(selection, parsed, input=source, output=None)
    dst = Path(dst)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        from layerfreeze.formats.copying import write_segments

        segments = archive.plan(selection.final_by_name(), spec_sha256(parsed))
        written = write_segments(src, tmp, segments, hash_source=digest)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return build_report(
        selection, parsed,
        input=FileRef(filename=input_filename, bytes=src.stat().st_size,
                      sha256=written.source_sha256 or None),
        output=FileRef(filename=output_name or dst.name, bytes=written.bytes, sha256=written.sha256),
    )


def read_model(src: Path | str, *, filename: str, sha256: str,
               limits: ReadLimits = ReadLimits()) -> tuple[dict[str, Any], Report]:  # noqa: B008
    """Read a model once: its stored description (``formats.stored``) and its report as it is."""
    from layerfreeze.formats.detect import open_archive
    from layerfreeze.formats.stored import describe

    src = Path(src)
    archive = open_archive(src, limits)
    parsed = parse_spec("{}")
    source = FileRef(filename=filename, bytes=src.stat().st_size, sha256=sha256)
    report = build_report(select(parsed, archive.inventory), parsed, input=source, output=None)
    return describe(archive), report


def preview_stored(inventory: Inventory, spec: str | bytes | Mapping[str, Any] | FreezeSpec, *,
                   input: FileRef) -> Report:
    """The report a freeze of a stored model would give, from its inventory alone."""
    parsed = parse_spec(spec)
    return build_report(select(parsed, inventory), parsed, input=input, output=None)


def freeze_stored(doc: Mapping[str, Any], base: Path, spec: str | bytes | Mapping[str, Any] | FreezeSpec, *,
                  input: FileRef, output_name: str, inventory: Inventory | None = None,
                  ) -> tuple[Report, list[Segment]]:
    """Freeze a stored model without writing it: the report and the output as segments over ``base``.
    The report's output sha256 is None (the caller hashes the segments when it needs the digest)."""
    from layerfreeze.formats.stored import inventory_from, plan

    parsed = parse_spec(spec)
    inventory = inventory or inventory_from(doc)
    selection = select(parsed, inventory)
    segments = plan(doc, base, selection.final_by_name(), spec_sha256(parsed), inventory)
    output = FileRef(filename=output_name, bytes=output_size(segments), sha256=None)
    return build_report(selection, parsed, input=input, output=output), segments


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
