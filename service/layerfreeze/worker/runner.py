"""The worker process: receives a task, runs ``freeze_file`` on it, publishes the files, answers.

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
class Task:
    job_id: str
    src: Path
    spec: str
    dst: Path | None  # None: dry run
    report: Path
    input_name: str
    limits: ReadLimits
    input_sha256: str | None = None  # as hashed on arrival; the worker checks the file still matches


@dataclass(frozen=True, slots=True)
class Outcome:
    job_id: str
    ok: bool
    output: dict[str, Any] | None = None  # {filename, bytes, sha256} of the artifact
    problem: dict[str, Any] | None = None
    retire: bool = False  # the process should be replaced (e.g. after a MemoryError)


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


def run_task(task: Task, memory_mb: int) -> Outcome:
    from layerfreeze.errors import InputChanged, JobMemoryLimit, storage_error
    from layerfreeze.problems import problem_for
    from layerfreeze.storage.blobs import publish_all, write_file

    part = task.dst.with_name(task.dst.name + ".part") if task.dst else None
    try:
        from layerfreeze.freeze import freeze_file, output_filename

        report = freeze_file(task.src, task.spec, part, limits=task.limits, input_name=task.input_name)
        body = _report_dict(report)
        if body.get("output"):  # the name follows the detected format, not only the uploaded name
            body["output"]["filename"] = output_filename(task.input_name, body.get("format"))
        read_sha = (body.get("input") or {}).get("sha256")
        if task.input_sha256 and read_sha and read_sha != task.input_sha256:
            raise InputChanged("the stored upload no longer matches the sha256 taken when it arrived; "
                               "submit it again")
        report_part = task.report.with_name(task.report.name + ".part")
        write_file(report_part, json.dumps(body, separators=(",", ":")).encode())
        # Both files fsynced, renamed into place, then one fsync of their directory.
        renames = [(report_part, task.report)]
        if part is not None and task.dst is not None:
            renames.append((part, task.dst))
        publish_all(renames)
        return Outcome(task.job_id, ok=True, output=body.get("output"))
    except LayerfreezeError as exc:
        return Outcome(task.job_id, ok=False, problem=problem_for(exc))
    except MemoryError:
        exc2 = JobMemoryLimit(f"memory limit {memory_mb} MiB exceeded", limit="worker_memory_mb",
                              maximum=memory_mb)
        return Outcome(task.job_id, ok=False, problem=problem_for(exc2), retire=True)
    except OSError as exc:
        ours = storage_error(exc)
        if ours is None:
            return _internal(task, exc)
        return Outcome(task.job_id, ok=False, problem=problem_for(ours))
    except Exception as exc:
        return _internal(task, exc)
    finally:
        for leftover in (part, task.report.with_name(task.report.name + ".part")):
            if leftover is not None:
                with contextlib.suppress(OSError):
                    leftover.unlink()


def _internal(task: Task, exc: Exception) -> Outcome:
    """A bug: log it with a reference, tell the client only the reference."""
    from layerfreeze.problems import problem_for

    ref = uuid.uuid4().hex
    log.error("job %s failed unexpectedly (reference %s): %s\n%s", task.job_id, ref, exc,
              traceback.format_exc())
    problem = problem_for(exc)
    problem["reference"] = ref
    return Outcome(task.job_id, ok=False, problem=problem)


def worker_main(conn: Connection, memory_mb: int, log_level: str) -> None:
    """Entry point of a worker process: serve tasks until the pipe closes or a ``None`` arrives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    from layerfreeze.logs import configure_logging

    configure_logging(log_level)
    # Import the freezing core now, so a job's time limit never pays for it; then say we are ready.
    import layerfreeze.freeze  # noqa: F401

    _cap_memory(memory_mb)
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
