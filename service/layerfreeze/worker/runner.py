"""The worker process: receives a task, runs it, publishes the files, answers.

Two kinds of task: ``ReadTask`` reads an uploaded model once (its stored description and its report);
``Task`` freezes a stored model into a report and a patch (segments over the model's file), reading the
model first when it has not been read yet (an upload through the multipart ``POST /v1/jobs``).

Runs in a process started with the ``spawn`` method, so it shares nothing with the API process but the
pipe. Its address space is capped (``RLIMIT_AS``) so a hostile file cannot exhaust the machine's memory;
the parent enforces the time limit and replaces the process when it dies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
import traceback
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from layerfreeze.errors import LayerfreezeError
from layerfreeze.limits import ReadLimits

log = logging.getLogger("layerfreeze.worker")
READY = "ready"


@dataclass(frozen=True, slots=True)
class ModelPaths:
    """Where a model's read results live (``storage.blobs``)."""

    stored: Path
    report: Path


# A model directory's files: (relative path, stored file, its sha256), sorted by path.
DirectoryFiles = tuple[tuple[str, Path, str], ...]


@dataclass(frozen=True, slots=True)
class Task:
    job_id: str
    src: Path  # the stored model file (a blob)
    spec: str
    patch: Path | None  # where the output's segments go; None: dry run
    report: Path
    input_name: str
    limits: ReadLimits
    model: ModelPaths  # read first when ``model.stored`` does not exist yet
    input_sha256: str | None = None  # as hashed on arrival; a first read checks the file still matches
    digest: bool = True  # hash the output now (else the API's background pass does, after the job)
    files: DirectoryFiles | None = None  # a model directory: its files (``src`` is then unused)


@dataclass(frozen=True, slots=True)
class ReadTask:
    model_id: str
    src: Path
    filename: str
    sha256: str
    model: ModelPaths
    limits: ReadLimits
    files: DirectoryFiles | None = None  # a model directory: its files (``src`` is then unused)


@dataclass(frozen=True, slots=True)
class Outcome:
    job_id: str
    ok: bool
    output: dict[str, Any] | None = None  # {filename, bytes, sha256} of the artifact
    problem: dict[str, Any] | None = None
    retire: bool = False  # the process should be replaced (e.g. after a MemoryError)
    model: dict[str, Any] | None = None  # {format, summary} when the task read a model first


def _cap_memory(memory_mb: int) -> None:
    if memory_mb <= 0:
        return
    limit = memory_mb * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _report_dict(report: Any) -> dict[str, Any]:
    if hasattr(report, "model_dump"):
        return report.model_dump(mode="json")
    return dict(report)


def run_task(task: Task | ReadTask, memory_mb: int) -> Outcome:
    from layerfreeze.errors import JobMemoryLimit, storage_error
    from layerfreeze.problems import problem_for

    ident = task.job_id if isinstance(task, Task) else task.model_id
    parts = [task.model.stored, task.model.report]
    if isinstance(task, Task):
        parts += [task.report] + ([task.patch] if task.patch else [])
    try:
        if isinstance(task, ReadTask) and task.files is not None:
            return Outcome(ident, ok=True, model=_read_directory(task.files, task.filename, task.sha256,
                                                                 task.model, task.limits))
        if isinstance(task, Task) and task.files is not None:
            return _freeze_directory(task, task.files)
        if isinstance(task, ReadTask):
            return Outcome(ident, ok=True, model=_read(task.src, task.filename, task.sha256, task.model,
                                                       task.limits)[1])
        return _freeze(task)
    except LayerfreezeError as exc:
        return Outcome(ident, ok=False, problem=problem_for(exc))
    except MemoryError:
        exc2 = JobMemoryLimit(f"memory limit {memory_mb} MiB exceeded", limit="worker_memory_mb",
                              maximum=memory_mb)
        return Outcome(ident, ok=False, problem=problem_for(exc2), retire=True)
    except OSError as exc:
        ours = storage_error(exc)
        if ours is None:
            return _internal(ident, exc)
        return Outcome(ident, ok=False, problem=problem_for(ours))
    except Exception as exc:
        return _internal(ident, exc)
    finally:
        for path in parts:
            with contextlib.suppress(OSError):
                path.with_name(path.name + ".part").unlink()


def _read(src: Path, filename: str, sha256: str | None, model: ModelPaths,
          limits: ReadLimits) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a model once, check it is still what arrived, and publish its description and report."""
    from concurrent.futures import ThreadPoolExecutor

    from layerfreeze.errors import InputChanged
    from layerfreeze.freeze import read_model, sha256_file
    from layerfreeze.storage.blobs import fsync_dir, publish_all, write_file

    with ThreadPoolExecutor(1) as pool:  # hashing releases the GIL: it overlaps the parse
        digest = pool.submit(sha256_file, src) if sha256 else None
        doc, report = read_model(src, filename=filename, sha256=sha256 or "", limits=limits)
        if digest is not None and digest.result()[1] != sha256:
            raise InputChanged("the stored upload no longer matches the sha256 taken when it arrived; "
                               "submit it again")
    if not model.stored.parent.is_dir():
        model.stored.parent.mkdir()
        fsync_dir(model.stored.parent.parent)
    renames = []
    body = _report_dict(report)
    for path, content in ((model.stored, doc), (model.report, body)):
        part = path.with_name(path.name + ".part")
        part.unlink(missing_ok=True)
        write_file(part, json.dumps(content, separators=(",", ":")).encode())
        renames.append((part, path))
    publish_all(renames)
    return doc, {"format": doc["inventory"]["format"], "summary": body["summary"]}


def _publish(items: list[tuple[Path, Any]]) -> None:
    """Write each JSON document beside its final name, then rename them all into place."""
    from layerfreeze.storage.blobs import fsync_dir, publish_all, write_file

    folder = items[0][0].parent
    if not folder.is_dir():
        folder.mkdir()
        fsync_dir(folder.parent)
    renames = []
    for path, content in items:
        part = path.with_name(path.name + ".part")
        part.unlink(missing_ok=True)
        write_file(part, json.dumps(content, separators=(",", ":")).encode())
        renames.append((part, path))
    publish_all(renames)


def _directory_report(model: Any, selection: Any, spec: Any, files: DirectoryFiles, name: str,
                      sha256: str | None, listing: list[tuple[str, int, str | None, bool]] | None = None,
                      output: Any = None) -> Any:
    """The report of a model directory: the usual one plus its ``files`` section. ``listing`` gives every
    output file as (path, bytes, sha256, changed); without it, the input files, unchanged."""
    from layerfreeze.core.report import FileRef, FilesReport, ModelFile, build_report
    from layerfreeze.freeze import file_roles

    roles = file_roles(model)
    if listing is None:
        listing = [(p, f.stat().st_size, sha, False) for p, f, sha in files]
    source = FileRef(filename=name, bytes=sum(f.stat().st_size for _p, f, _s in files), sha256=sha256)
    report = build_report(selection, spec, input=source, output=output)
    entries = [ModelFile(path=p, bytes=n, sha256=sha, role=roles[p], changed=changed)
               for p, n, sha, changed in listing]
    return report.model_copy(update={"files": FilesReport(index=model.index, shard_of=model.shard_of,
                                                          files=entries)})


def _read_directory(files: DirectoryFiles, name: str, sha256: str, model: ModelPaths,
                    limits: ReadLimits) -> dict[str, Any]:
    """Read a model directory once (every shard as data); publish its description and report."""
    from dataclasses import asdict

    from layerfreeze.core.spec import parse_spec
    from layerfreeze.freeze import plan_directory

    spec = parse_spec("{}")
    directory, selection, _plans = plan_directory({p: f for p, f, _s in files}, spec, limits)
    doc: dict[str, Any] = {"version": 1, "kind": "directory", "inventory": asdict(directory.inventory),
           "unrecordable": sorted(directory.unrecordable)}
    if (described := directory.describe()) is not None:  # jobs then plan without reading the shards
        doc["directory"] = {"files": {p: sha for p, _f, sha in files}, **described}
    body = _report_dict(_directory_report(directory, selection, spec, files, name, sha256))
    _publish([(model.stored, doc), (model.report, body)])
    return {"format": doc["inventory"]["format"], "summary": body["summary"]}


def _stored_description(stored: Path, files: DirectoryFiles) -> dict[str, Any] | None:
    """The shards' stored description, when the model's stored document has one for exactly these files
    (by path and sha256); None otherwise (the model was deleted meanwhile, or read by an older release):
    then the shards are read again."""
    try:
        doc = json.loads(stored.read_bytes())
    except (OSError, ValueError):
        return None
    described = doc.get("directory") if isinstance(doc, dict) else None
    if not isinstance(described, dict) or described.get("files") != {p: sha for p, _f, sha in files}:
        return None
    return described


def _freeze_directory(task: Task, files: DirectoryFiles) -> Outcome:
    """Freeze a model directory into a report and a patch with one entry per file (no tensor bytes):
    every output file as segments over the stored input file of the same path."""
    from layerfreeze.core.report import FileRef
    from layerfreeze.core.spec import parse_spec
    from layerfreeze.formats.segments import PATCH_FORMAT, output_size, sha256_of, to_patch_file
    from layerfreeze.freeze import listing_sha256, output_filename, plan_directory

    model = None
    if not task.model.stored.exists():
        model = _read_directory(files, task.input_name, task.input_sha256 or "", task.model, task.limits)
    spec = parse_spec(task.spec)
    directory, selection, plans = plan_directory({p: f for p, f, _s in files}, spec, task.limits,
                                                 _stored_description(task.model.stored, files))
    items: list[tuple[Path, Any]] = []
    if task.patch is None:
        report = _directory_report(directory, selection, spec, files, task.input_name, task.input_sha256)
    else:
        entries: list[dict[str, Any]] = []
        listing: list[tuple[str, int, str | None, bool]] = []
        digests: dict[str, str | None] = {}
        for path, stored, sha in files:
            segments, size = plans[path], stored.stat().st_size
            changed = segments != ([(0, size)] if size else [])
            # Only changed files are read, and only with ``digest``: a job on a stored model leaves them
            # to the API's background pass, so its time does not grow with the model's size.
            out_sha = (sha256_of(stored, segments)[1] if task.digest else None) if changed else sha
            digests[path] = out_sha
            listing.append((path, output_size(segments), out_sha, changed))
            entries.append(to_patch_file(path, segments, base_sha256=sha, base_bytes=size,
                                         output_sha256=out_sha))
        output = FileRef(filename=output_filename(task.input_name), bytes=sum(n for _p, n, _s, _c in listing),
                         sha256=listing_sha256(digests))
        report = _directory_report(directory, selection, spec, files, task.input_name, task.input_sha256,
                                   listing, output)
        items.append((task.patch, {"format": PATCH_FORMAT, "files": entries}))
    body = _report_dict(report)
    items.append((task.report, body))
    _publish(items)
    return Outcome(task.job_id, ok=True, output=body.get("output"), model=model)


def _freeze(task: Task) -> Outcome:
    from layerfreeze.core.report import FileRef
    from layerfreeze.formats.segments import sha256_of, to_patch_file
    from layerfreeze.formats.stored import inventory_from, unrecordable_of
    from layerfreeze.freeze import freeze_stored, preview_stored
    from layerfreeze.storage.blobs import fsync_dir, publish_all, write_file

    model = None
    if task.model.stored.exists():
        doc = json.loads(task.model.stored.read_bytes())
    else:
        doc, model = _read(task.src, task.input_name, task.input_sha256, task.model, task.limits)
    size = task.src.stat().st_size
    source = FileRef(filename=task.input_name, bytes=size, sha256=task.input_sha256 or "")
    inventory = inventory_from(doc)
    files: list[tuple[Path, bytes]] = []
    if task.patch is None:
        report = preview_stored(inventory, task.spec, input=source, unrecordable=unrecordable_of(doc))
    else:
        from layerfreeze.freeze import output_filename

        name = output_filename(task.input_name, inventory.format)
        report, segments = freeze_stored(doc, task.src, task.spec, input=source, output_name=name,
                                         inventory=inventory)
        out_sha = sha256_of(task.src, segments)[1] if task.digest else None
        if out_sha is not None and report.output is not None:
            output = report.output.model_copy(update={"sha256": out_sha})
            report = report.model_copy(update={"output": output})
        patch = to_patch_file(name, segments, base_sha256=task.input_sha256 or "", base_bytes=size,
                              output_sha256=out_sha)
        files.append((task.patch, json.dumps(patch, separators=(",", ":")).encode()))
    body = _report_dict(report)
    files.append((task.report, json.dumps(body, separators=(",", ":")).encode()))
    if not task.report.parent.is_dir():
        task.report.parent.mkdir()
        fsync_dir(task.report.parent.parent)
    renames = []
    for path, data in files:
        part = path.with_name(path.name + ".part")
        part.unlink(missing_ok=True)
        write_file(part, data)
        renames.append((part, path))
    publish_all(renames)  # both fsynced, renamed into place, then one fsync of their directory
    return Outcome(task.job_id, ok=True, output=body.get("output"), model=model)


def _internal(ident: str, exc: Exception) -> Outcome:
    """A bug: log it with a reference, tell the client only the reference."""
    from layerfreeze.problems import problem_for

    ref = uuid.uuid4().hex
    log.error("task %s failed unexpectedly (reference %s): %s\n%s", ident, ref, exc,
              traceback.format_exc())
    problem = problem_for(exc)
    problem["reference"] = ref
    return Outcome(ident, ok=False, problem=problem)


def _end_with_parent() -> None:
    """Exit when the process that started this one is gone (killed with -9, say): a job of a lost
    parent is run again elsewhere, and an orphan must not keep writing its files meanwhile."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(70)

    threading.Thread(target=watch, name="layerfreeze-parent-watch", daemon=True).start()


def worker_main(conn: Connection, memory_mb: int, log_level: str) -> None:
    """Entry point of a worker process: serve tasks until the pipe closes or a ``None`` arrives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    from layerfreeze.logs import configure_logging

    configure_logging(log_level)
    # Import the freezing core now, so a job's time limit never pays for it; then say we are ready.
    import layerfreeze.freeze  # noqa: F401

    _cap_memory(memory_mb)
    _end_with_parent()
    try:
        conn.send(READY)
    except (BrokenPipeError, OSError):
        return
    log.debug("worker %d ready", os.getpid())
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        outcome = run_task(task, memory_mb)
        try:
            conn.send(outcome)
        except (BrokenPipeError, OSError):
            return
        if outcome.retire:
            return
