"""The use case every front end calls: read a checkpoint as data, apply a freeze spec, write, report.

    report = freeze_file(src, spec, dst)          # dst=None: inspection / dry run, nothing written

The CLI, the service's workers and the benchmarks all go through here. The output is written to a
temporary name next to ``dst`` and renamed into place only when complete, so a failure never leaves a
partial file behind and never damages an existing ``dst``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerfreeze.core.model import Inventory
from layerfreeze.core.report import FileRef, FilesReport, ModelFile, Report, build_report
from layerfreeze.core.selection import Selection, select
from layerfreeze.core.spec import FreezeSpec, parse_spec, spec_sha256
from layerfreeze.formats.segments import Segment, output_size
from layerfreeze.limits import ReadLimits

if TYPE_CHECKING:
    from layerfreeze.core.columns import Layout
    from layerfreeze.formats.sharded import ShardedModel

__all__ = ["file_roles", "freeze_directory", "freeze_file", "freeze_stored", "listing_sha256",
           "new_dir_mode", "new_file_mode", "plan_directory", "preview_columns", "preview_stored",
           "read_model", "sha256_file"]

_CHUNK = 1 << 20


def freeze_file(
    src: Path | str,
    spec: str | bytes | Mapping[str, Any] | FreezeSpec,
    dst: Path | str | None = None,
    *,
    limits: ReadLimits = ReadLimits(),  # noqa: B008  (frozen: safe as a default)
    input_name: str | None = None,
    output_name: str | None = None,
    digest: bool = True,
) -> Report:
    """Freeze ``src`` by ``spec`` into ``dst`` (same format) and return the report.

    ``digest=False`` leaves the sha256 digests out of the report (None): a dry run then reads the
    metadata only, and a freeze only copies (the local CLI's default; ``--digest`` asks for them).

    Raises SpecError (the spec is invalid, or under ``strict`` selects nothing), FormatError subclasses
    (the file is not a checkpoint we read), LimitExceeded, and OSError for the files themselves.
    """
    from layerfreeze.formats.detect import open_archive  # the readers are the formats package's

    src = Path(src)
    parsed = parse_spec(spec)
    archive = open_archive(src, limits)
    selection = _select(parsed, archive.inventory, getattr(archive, "unrecordable", frozenset()))
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
        written = write_segments(src, tmp, segments, hash_source=digest, hash_output=digest)
        os.chmod(tmp, new_file_mode())  # mkstemp made it 0600; the output is an ordinary file
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return build_report(
        selection, parsed,
        input=FileRef(filename=input_filename, bytes=src.stat().st_size,
                      sha256=written.source_sha256 or None),
        output=FileRef(filename=output_name or dst.name, bytes=written.bytes, sha256=written.sha256 or None),
    )


def freeze_directory(
    src: Path | str | Mapping[str, Path],
    spec: str | bytes | Mapping[str, Any] | FreezeSpec,
    dst: Path | str | None = None,
    *,
    limits: ReadLimits = ReadLimits(),  # noqa: B008  (frozen: safe as a default)
    input_name: str | None = None,
    digest: bool = True,
) -> Report:
    """Freeze a model directory (CONTRACT section 9) into the directory ``dst``, which must not exist
    or be empty; ``src`` is the directory or its files (relative posix path -> file). The output is
    written into a temporary directory beside ``dst`` and renamed into place only when complete.

    The report's ``input``/``output`` name the directories; their sha256 (with ``digest``) is that of
    the ``sha256sum``-style listing of every file, ``"<sha256>  <path>\\n"`` sorted by path."""
    from layerfreeze.formats.copying import write_segments
    from layerfreeze.formats.sharded import files_of_directory

    if isinstance(src, Mapping):
        files, name = dict(src), input_name or "model"
    else:
        files, name = files_of_directory(Path(src)), input_name or Path(src).name
    parsed = parse_spec(spec)
    model, selection, plans = plan_directory(files, parsed, limits)
    sizes = {p: f.stat().st_size for p, f in files.items()}
    in_sha = {p: sha256_file(f)[1] if digest else None for p, f in files.items()}
    out_sha = dict(in_sha)
    changed = {p for p, segs in plans.items() if segs != ([(0, sizes[p])] if sizes[p] else [])}
    if dst is not None:
        dst = Path(dst)
        with new_directory(dst) as tmp:
            for path, segments in plans.items():
                target = tmp / path
                target.parent.mkdir(parents=True, exist_ok=True)
                written = write_segments(files[path], target, segments, hash_source=False,
                                         hash_output=digest)
                out_sha[path] = written.sha256 or None
                os.chmod(target, new_file_mode())
    roles = file_roles(model)
    out_sizes = {p: output_size(segs) for p, segs in plans.items()}
    listing = [ModelFile(path=p, bytes=out_sizes[p] if dst is not None else sizes[p],
                         sha256=(out_sha if dst is not None else in_sha)[p], role=roles[p],
                         changed=p in changed) for p in sorted(files)]
    source = FileRef(filename=name, bytes=sum(sizes.values()), sha256=listing_sha256(in_sha))
    output = None if dst is None else FileRef(filename=Path(dst).name, bytes=sum(out_sizes.values()),
                                              sha256=listing_sha256(out_sha))
    report = build_report(selection, parsed, input=source, output=output)
    return report.model_copy(update={"files": FilesReport(index=model.index, shard_of=model.shard_of,
                                                          files=listing)})


def plan_directory(files: Mapping[str, Path], spec: FreezeSpec,
                   limits: ReadLimits = ReadLimits(),  # noqa: B008
                   description: Mapping[str, Any] | None = None,
                   ) -> tuple[ShardedModel, Selection, dict[str, list[Segment]]]:
    """Read a model directory's files (relative posix path -> file) and plan its freeze: the model, the
    selection, and every output file as segments over the input file of the same path. With
    ``description`` (``ShardedModel.describe()`` of these very files) the shards are not read again."""
    from layerfreeze.formats.sharded import ShardedModel

    if description is not None:
        model = ShardedModel.from_description(files, description)
    else:
        model = ShardedModel(files, limits)
    selection = _select(spec, model.inventory, model.unrecordable)
    return model, selection, model.plan(selection.final_by_name(), spec_sha256(spec))


def file_roles(model: ShardedModel) -> dict[str, Any]:
    """Every file's role in a model directory: ``index``, ``shard`` or ``other``."""
    roles = {p: "other" for p in model.files}
    for shard_set in model.sets:
        if shard_set.index is not None:
            roles[shard_set.index] = "index"
        roles.update((p, "shard") for p in shard_set.shards)
    return roles


def listing_sha256(digests: Mapping[str, str | None]) -> str | None:
    if any(v is None for v in digests.values()):
        return None
    text = "".join(f"{digests[p]}  {p}\n" for p in sorted(digests))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def new_directory(dst: Path) -> Iterator[Path]:
    """A staging directory beside ``dst`` (which must not exist, or be empty) that becomes ``dst``, with
    the mode ``mkdir`` gives, when the block ends without error; removed with its contents otherwise."""
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(errno.EEXIST, "the output directory exists and is not empty", str(dst))
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.absolute().parent))
    try:
        yield tmp
        os.chmod(tmp, new_dir_mode())
        if dst.exists():
            dst.rmdir()
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def new_file_mode() -> int:
    """The mode ``open()`` (and so ``cp``) gives a new file: ``0o666`` less the process umask."""
    return 0o666 & ~_umask()


def new_dir_mode() -> int:
    """The mode ``mkdir`` gives a new directory: ``0o777`` less the process umask."""
    return 0o777 & ~_umask()


def _umask() -> int:
    """The process umask, read from /proc where it exists, since setting it to read it is not
    thread-safe."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
                   input: FileRef, unrecordable: frozenset[str] = frozenset()) -> Report:
    """The report a freeze of a stored model would give, from its inventory alone (``unrecordable``:
    the parameters whose file records no flag, ``formats.stored.unrecordable_of``)."""
    parsed = parse_spec(spec)
    return build_report(_select(parsed, inventory, unrecordable), parsed, input=input, output=None)



def preview_columns(inventory: Inventory, spec: str | bytes | Mapping[str, Any] | FreezeSpec, *,
                    input: FileRef, layout: Layout, unrecordable: frozenset[str] = frozenset(),
                    ) -> dict[str, Any]:
    """``preview_stored`` in the columnar view (``core.columns``): what the spec decides, without the
    per-parameter rows that repeat the model's report; ``layout`` is ``Layout.of(inventory)``, kept."""
    from layerfreeze.core.columns import columns

    parsed = parse_spec(spec)
    return columns(_select(parsed, inventory, unrecordable), parsed, layout, input=input)


def freeze_stored(doc: Mapping[str, Any], base: Path, spec: str | bytes | Mapping[str, Any] | FreezeSpec, *,
                  input: FileRef, output_name: str, inventory: Inventory | None = None,
                  ) -> tuple[Report, list[Segment]]:
    """Freeze a stored model without writing it: the report and the output as segments over ``base``.
    The report's output sha256 is None (the caller hashes the segments when it needs the digest)."""
    from layerfreeze.formats.stored import inventory_from, plan, unrecordable_of

    parsed = parse_spec(spec)
    inventory = inventory or inventory_from(doc)
    selection = _select(parsed, inventory, unrecordable_of(doc))
    segments = plan(doc, base, selection.final_by_name(), spec_sha256(parsed), inventory)
    output = FileRef(filename=output_name, bytes=output_size(segments), sha256=None)
    return build_report(selection, parsed, input=input, output=output), segments


def _select(spec: FreezeSpec, inventory: Inventory, unrecordable: frozenset[str]) -> Selection:
    """The selection as the output will really load: parameters whose file records no requires_grad stay
    False whatever the spec says, since that is what ``torch.load`` gives (CONTRACT section 7)."""
    from layerfreeze.formats.base import pin_unrecordable

    selection = select(spec, inventory)
    return pin_unrecordable(selection, unrecordable) if unrecordable else selection


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
