"""``layerfreeze patch create|apply``: the freeze of a file as a ``layerfreeze-patch/1`` delta, and back.

A patch names its base by sha256 and size and lists the output as segments (ranges of the base and
literal bytes); ``apply`` refuses a base that is not the one named, and checks the rebuilt sha256.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from layerfreeze.cli import exit_codes
from layerfreeze.errors import FormatError
from layerfreeze.formats.segments import PATCH_FORMAT, from_patch_segments, sha256_of, to_patch_file


def create_patch(model: Path, spec: str | bytes, output: Path) -> int:
    if model.is_dir():
        return _create_directory_patch(model, spec, output)
    from layerfreeze.core.report import FileRef
    from layerfreeze.formats.detect import open_archive
    from layerfreeze.formats.stored import describe
    from layerfreeze.freeze import freeze_stored, output_filename, sha256_file

    archive = open_archive(model)
    size, base_sha = sha256_file(model)
    name = output_filename(model.name, archive.inventory.format)
    _report, segments = freeze_stored(describe(archive), model, spec, output_name=name,
                                      input=FileRef(filename=model.name, bytes=size, sha256=base_sha))
    _size, out_sha = sha256_of(model, segments)
    entry = to_patch_file(name, segments, base_sha256=base_sha, base_bytes=size, output_sha256=out_sha)
    _write_atomically(output, json.dumps({"format": PATCH_FORMAT, "files": [entry]}).encode())
    return exit_codes.OK


def _create_directory_patch(model: Path, spec: str | bytes, output: Path) -> int:
    """A model directory's freeze: one entry per file, by relative path (unchanged files as one range)."""
    from layerfreeze.core.spec import parse_spec
    from layerfreeze.formats.sharded import files_of_directory
    from layerfreeze.freeze import plan_directory, sha256_file

    files = files_of_directory(model)
    _model, _selection, plans = plan_directory(files, parse_spec(spec))
    entries = []
    for path in sorted(plans):
        size, base_sha = sha256_file(files[path])
        entries.append(to_patch_file(path, plans[path], base_sha256=base_sha, base_bytes=size,
                                     output_sha256=sha256_of(files[path], plans[path])[1]))
    _write_atomically(output, json.dumps({"format": PATCH_FORMAT, "files": entries}).encode())
    return exit_codes.OK


def apply_patch(patch: Path, model: Path, output: Path) -> int:
    from layerfreeze.formats.copying import write_segments
    from layerfreeze.freeze import new_file_mode

    files = _read_patch(patch)
    if model.is_dir():
        return _apply_directory_patch(files, model, output)
    if len(files) != 1:
        raise FormatError(f"the patch describes {len(files)} files: apply it to the model's directory")
    entry = files[0]
    base, want = entry.get("base") or {}, entry.get("output") or {}
    if model.stat().st_size != base.get("bytes"):
        raise FormatError(f"{model} is not the patch's base ({model.stat().st_size} bytes, the patch names "
                          f"{base.get('bytes')})")
    segments = from_patch_segments(entry.get("segments"))
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=output.absolute().parent)
    os.close(fd)
    try:
        written = write_segments(model, Path(tmp), segments)
        if written.source_sha256 != base.get("sha256"):
            raise FormatError(f"{model} is not the patch's base: sha256 {written.source_sha256}")
        if written.sha256 != want.get("sha256"):
            raise FormatError(f"the rebuilt file's sha256 {written.sha256} is not the patch's "
                              f"{want.get('sha256')}")
        os.chmod(tmp, new_file_mode())  # as `cp` would make it, not mkstemp's 0600
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return exit_codes.OK


def _read_patch(patch: Path) -> list[dict[str, Any]]:
    try:
        doc = json.loads(patch.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{patch} is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != PATCH_FORMAT:
        raise FormatError(f"{patch} is not a {PATCH_FORMAT} document")
    files = doc.get("files")
    if not isinstance(files, list) or not files or not all(
            isinstance(f, dict) and isinstance(f.get("path"), str) for f in files):
        raise FormatError("the patch's 'files' must be a list of objects with a 'path'")
    return files


def _apply_directory_patch(entries: list[dict[str, Any]], model: Path, output: Path) -> int:
    """Rebuild every file of the patch from the file of the same path under ``model`` into the new
    directory ``output`` (written beside it, renamed into place when every sha256 has been checked)."""
    from layerfreeze.formats.copying import write_segments
    from layerfreeze.formats.sharded import check_paths
    from layerfreeze.freeze import new_directory, new_file_mode

    check_paths(e["path"] for e in entries)
    with new_directory(output) as tmp:
        for entry in entries:
            path, base, want = entry["path"], entry.get("base") or {}, entry.get("output") or {}
            source = model / path
            if not source.is_file() or source.is_symlink() or source.stat().st_size != base.get("bytes"):
                raise FormatError(f"{source} is not the patch's base for {path!r}")
            target = tmp / path
            target.parent.mkdir(parents=True, exist_ok=True)
            written = write_segments(source, target, from_patch_segments(entry.get("segments")))
            if written.source_sha256 != base.get("sha256"):
                raise FormatError(f"{source} is not the patch's base: sha256 {written.source_sha256}")
            if written.sha256 != want.get("sha256"):
                raise FormatError(f"the rebuilt {path!r} has sha256 {written.sha256}, not the patch's "
                                  f"{want.get('sha256')}")
            os.chmod(target, new_file_mode())
    return exit_codes.OK


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.absolute().parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
