"""``LocalWorkerPool``: worker processes on this machine, each driven by one supervisor thread.

A supervisor takes a job id from the in-memory queue, claims the job in the store (queued -> running),
hands the task to its process and waits for the answer, the process's death, or the time limit,
whichever comes first. A dead or overdue process fails only its own job, with the reason, and is
replaced. The event loop never runs a job and never waits for one except through ``on_finished``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from layerfreeze.errors import JobNotFound, JobTimeLimit, ModelNotFound, StoreError, WorkerLost
from layerfreeze.metrics import Metrics
from layerfreeze.problems import problem_for
from layerfreeze.settings import Settings
from layerfreeze.storage.blobs import BlobStore
from layerfreeze.storage.jobs import JobRecord, JobStore
from layerfreeze.storage.models import ModelFile, ModelRecord, ModelStore
from layerfreeze.worker.queue import PoolHealth
from layerfreeze.worker.runner import (
    READY,
    DirectoryFiles,
    ModelPaths,
    Outcome,
    ReadTask,
    Task,
    worker_main,
)

log = logging.getLogger("layerfreeze.pool")
_SPAWN = multiprocessing.get_context("spawn")
SPAWN_TIMEOUT_S = 120.0
IDLE_CHECK_S = 0.5  # how often an idle supervisor checks that its worker is still alive


class WorkerStartError(RuntimeError):
    pass


class _Call:
    """A task that a request waits for (reading an uploaded model), queued like a job."""

    def __init__(self, task: ReadTask) -> None:
        self.task = task
        self.done = threading.Event()
        self.outcome: Outcome | None = None


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        return f"worker killed by signal {-exitcode} ({name})"
    return f"worker exited unexpectedly with code {exitcode}"


class _Slot:
    """One worker process and the thread that feeds it."""

    def __init__(self, pool: LocalWorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.proc: BaseProcess | None = None
        self.conn: Connection | None = None
        self.busy = False
        self.ready = False  # the process said READY: its imports are done and it takes jobs
        self.thread = threading.Thread(target=self._loop, name=f"layerfreeze-worker-{index}", daemon=True)

    # -- process management ------------------------------------------------------------------------

    def spawn(self) -> None:
        self.launch()
        self.await_ready()

    def launch(self) -> None:
        parent, child = _SPAWN.Pipe(duplex=True)
        s = self.pool.settings
        proc = _SPAWN.Process(target=worker_main, args=(child, s.worker_memory_mb, s.log_level),
                              name=f"layerfreeze-worker-{self.index}", daemon=True)
        proc.start()
        child.close()
        self.proc, self.conn, self.ready = proc, parent, False

    def await_ready(self) -> None:
        """Wait for the worker's imports to finish, so they never count against a job's time limit."""
        conn = self.conn  # stop() may retire this slot from another thread meanwhile
        if conn is None:
            raise WorkerStartError(f"worker {self.index} was stopped while it started")
        try:
            self.ready = conn.poll(SPAWN_TIMEOUT_S) and conn.recv() == READY
        except (EOFError, OSError):
            self.ready = False
        if not self.ready:
            code = self.retire(kill=True)
            raise WorkerStartError(f"worker {self.index} did not start: {_death_reason(code)}")

    def alive(self) -> bool:
        """The process runs and has finished starting (a replacement still importing does not count)."""
        return self.ready and self.proc is not None and self.proc.is_alive()

    def retire(self, kill: bool) -> int | None:
        proc, conn = self.proc, self.conn
        self.proc = self.conn = None
        self.ready = False
        if conn is not None:
            if not kill:
                with contextlib.suppress(OSError):
                    conn.send(None)
            conn.close()
        if proc is None:
            return None
        if kill:
            proc.kill()
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join()
        return proc.exitcode

    # -- job loop ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        pool = self.pool
        while True:
            try:
                job_id = pool.jobs.get(timeout=IDLE_CHECK_S)
            except queue.Empty:
                # Idle: a worker that died meanwhile is replaced now, not when the next job comes.
                if pool.running and not self.alive():
                    self.retire(kill=True)
                    pool.replaced("died_idle")
                    self.respawn()
                continue
            if job_id is None:
                return
            if isinstance(job_id, _Call):
                self._call(job_id)
                continue
            try:
                record = pool.store.claim(job_id)
            except StoreError:
                log.exception("cannot claim job %s", job_id)
                continue
            if record is None:  # deleted or already handled
                continue
            self.busy = True
            started = time.monotonic()
            replace: str | None = None
            try:
                outcome, replace = self._run(record)
            except Exception as exc:  # never let a supervisor thread die
                log.exception("supervisor failed on job %s", job_id)
                outcome = Outcome(job_id, ok=False, problem=problem_for(exc))
            finally:
                self.busy = False
            pool.finish(record, outcome, time.monotonic() - started)
            if replace is not None:  # after the job is recorded: its client need not wait for this
                pool.replaced(replace)
                self.respawn()

    def run_job(self, record: JobRecord) -> tuple[Outcome, str | None]:
        """Run one claimed job; never raises (a supervisor's failure is the job's failure)."""
        self.busy = True
        try:
            return self._run(record)
        except Exception as exc:
            log.exception("supervisor failed on job %s", record.id)
            return Outcome(record.id, ok=False, problem=problem_for(exc)), None
        finally:
            self.busy = False

    def ensure_alive(self) -> None:
        """Replace a process that died while idle, before a job is claimed for it."""
        if not self.alive():
            self.retire(kill=True)
            self.pool.replaced("died_idle")
            self.spawn()

    def _call(self, call: _Call) -> None:
        self.busy = True
        replace: str | None = None
        try:
            call.outcome, replace = self._send(call.task, call.task.model_id)
        except Exception as exc:  # never let a supervisor thread die
            log.exception("supervisor failed on reading model %s", call.task.model_id)
            call.outcome = Outcome(call.task.model_id, ok=False, problem=problem_for(exc))
        finally:
            self.busy = False
            call.done.set()
        if replace is not None:
            pool = self.pool
            pool.replaced(replace)
            self.respawn()

    def respawn(self) -> None:
        try:
            self.spawn()
        except WorkerStartError:
            log.exception("cannot replace worker %d; retrying with the next job", self.index)

    def _run(self, record: JobRecord) -> tuple[Outcome, str | None]:
        """Run one job; returns its outcome and, when the process had to go, why."""
        pool = self.pool
        blobs = pool.blobs
        model_id = record.model_id or record.id
        task = Task(
            job_id=record.id, src=blobs.content.path(record.input_sha256), spec=record.spec,
            patch=None if record.dry_run else blobs.patch_path(record.id),
            report=blobs.report_path(record.id), input_name=record.input_filename,
            limits=pool.settings.read_limits(),
            model=pool.model_paths(model_id), input_sha256=record.input_sha256,
            digest=record.inline_digest, files=self._directory_files(record),
        )
        return self._send(task, record.id)

    def _directory_files(self, record: JobRecord) -> DirectoryFiles | None:
        """The files of the model directory a job freezes; None for a single-file model. A directory's
        ``input_sha256`` is its listing's, never a blob's."""
        blobs = self.pool.blobs
        if record.files:  # the job holds its directory's files: they outlive a deleted model
            return tuple((p, blobs.content.path(sha), sha) for p, _n, sha in record.files)
        if not record.model_id or blobs.content.exists(record.input_sha256):
            return None
        try:
            model = self.pool.models.get(record.model_id)
        except ModelNotFound:
            return None
        if len(model.files) < 2:
            return None
        return tuple(sorted((f.path, blobs.content.path(f.sha256), f.sha256) for f in model.files))

    def _send(self, task: Task | ReadTask, ident: str) -> tuple[Outcome, str | None]:
        pool = self.pool
        if not self.alive():
            self.retire(kill=True)
            self.spawn()
        assert self.proc is not None and self.conn is not None
        limit = pool.settings.job_timeout_s
        with contextlib.suppress(OSError):  # a dead process is found below
            self.conn.send(task)
        ready = wait([self.conn, self.proc.sentinel], timeout=limit)
        if self.conn in ready:
            outcome: Outcome | None
            try:
                outcome = self.conn.recv()
            except (EOFError, OSError):
                outcome = None
            if outcome is not None:
                if outcome.retire:
                    self.retire(kill=False)
                    return outcome, "retired"
                return outcome, None
        if not ready:  # time limit
            self.retire(kill=True)
            exc = JobTimeLimit(f"time limit {limit:g} s exceeded", limit="job_timeout_s",
                               maximum=int(limit))
            return Outcome(ident, ok=False, problem=problem_for(exc)), "time_limit"
        reason = _death_reason(self.retire(kill=True))
        log.warning("task %s: %s", ident, reason)
        return Outcome(ident, ok=False, problem=problem_for(WorkerLost(reason))), "died"


class LocalWorkerPool:
    """``JobQueue`` over ``settings.workers`` local processes."""

    def __init__(self, settings: Settings, store: JobStore, blobs: BlobStore, metrics: Metrics,
                 on_finished: Callable[[str], None] = lambda _id: None,
                 models: ModelStore | None = None) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.models = models or ModelStore(store, blobs)
        self.metrics = metrics
        self.on_finished = on_finished
        self.jobs: queue.Queue[str | _Call | None] = queue.Queue()
        self._slots = [_Slot(self, i) for i in range(settings.workers)]
        self._restarts = 0
        self._started = False
        self.running = False

    def start(self, supervise: bool = True) -> None:
        """Start the worker processes and, unless ``supervise`` is False (a caller that drives the slots
        itself, as ``layerfreeze worker`` does), their supervisor threads."""
        if self._started:
            return
        self._started = True
        for slot in self._slots:  # start them all, then wait: they import in parallel
            slot.launch()
        for slot in self._slots:
            slot.await_ready()
        self.running = True
        if supervise:
            for slot in self._slots:
                slot.thread.start()

    @property
    def slots(self) -> list[_Slot]:
        return list(self._slots)

    def stop(self) -> None:
        if not self._started:
            return
        self.running = False
        for _ in self._slots:
            self.jobs.put(None)
        for slot in self._slots:
            if not slot.busy:
                slot.retire(kill=False)
        for slot in self._slots:
            if slot.thread.is_alive():
                slot.thread.join(timeout=2)
            slot.retire(kill=True)
        self._started = False

    def submit(self, job_id: str) -> None:
        self.jobs.put(job_id)

    def call(self, task: ReadTask) -> Outcome:
        """Run ``task`` in a worker and wait for it (call from a thread, never the event loop)."""
        call = _Call(task)
        self.jobs.put(call)
        call.done.wait()
        assert call.outcome is not None
        return call.outcome

    def model_paths(self, model_id: str) -> ModelPaths:
        return ModelPaths(self.blobs.model_stored_path(model_id), self.blobs.model_report_path(model_id))

    def health(self) -> PoolHealth:
        return PoolHealth(
            workers=len(self._slots), alive=sum(s.alive() for s in self._slots),
            busy=sum(s.busy for s in self._slots), queued=self.jobs.qsize(), restarts=self._restarts,
        )

    def worker_pids(self) -> list[int]:
        return [s.proc.pid for s in self._slots if s.proc is not None and s.proc.pid is not None]

    # -- called by slots --------------------------------------------------------------------------

    def replaced(self, reason: str) -> None:
        self._restarts += 1
        self.metrics.worker_restarts.labels(reason).inc()

    def finish(self, record: JobRecord, outcome: Outcome, elapsed: float) -> None:
        try:
            if not self._latest(record):  # another attempt took the job over: it finishes it
                log.warning("job %s: attempt %d is stale; its outcome is dropped", record.id, record.attempts)
                return
            if outcome.ok:
                if outcome.model is not None:
                    self._record_model(record, outcome.model)
                out = outcome.output or None
                self.store.succeed(
                    record.id,
                    output_bytes=out.get("bytes") if out else None,
                    output_sha256=out.get("sha256") if out else None,
                    output_filename=out.get("filename") if out else None, attempt=record.attempts,
                )
            else:
                self._discard_outputs(record.id)
                self.store.fail(record.id, outcome.problem or {}, attempt=record.attempts)
                model_id = record.model_id or record.id
                if model_id not in self.models.ids():  # a first read that failed: no model appears
                    self.blobs.remove_model(model_id)
            self.models.release_all(record.blobs)  # a failed job or a dry run no longer holds them
        except StoreError:
            log.exception("cannot record the outcome of job %s", record.id)
        status = "succeeded" if outcome.ok else "failed"
        self.metrics.jobs_finished.labels(status).inc()
        self.metrics.job_duration.observe(elapsed)
        log.info("job finished", extra={"job_id": record.id, "status": status,
                                         "seconds": round(elapsed, 4)})
        self.on_finished(record.id)

    def _latest(self, record: JobRecord) -> bool:
        """The job still runs as this attempt."""
        try:
            current = self.store.get(record.id)
        except JobNotFound:
            return False
        return current.status == "running" and current.attempts == record.attempts

    def _record_model(self, record: JobRecord, model: dict[str, object]) -> None:
        """The job read its upload first: the model now exists (or, when a concurrent upload of the same
        content won the race, the job points at that one)."""
        model_id = record.model_id or record.id
        if model_id != record.id:  # a job on a stored model deleted meanwhile: it is not brought back
            self.blobs.remove_model(model_id)
            return
        created, new = self.models.create(ModelRecord(
            id=model_id, tenant=record.tenant, sha256=record.input_sha256, bytes=record.input_bytes,
            format=str(model["format"]), created_at=time.time(), summary=model["summary"],  # type: ignore[arg-type]
            files=(ModelFile(record.input_filename, record.input_bytes, record.input_sha256),)))
        if not new:
            self.blobs.remove_model(model_id)
        if created.id != record.model_id:
            self.store.set_model(record.id, created.id)

    def _discard_outputs(self, job_id: str) -> None:
        """A failed job keeps only its input: no report, no artifact, no half-written file."""
        self.blobs.discard_partials(job_id, keep=("input",))
