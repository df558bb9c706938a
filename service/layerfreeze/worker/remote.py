"""``layerfreeze worker``: a Celery worker that runs jobs, on any host that sees the database and the data
directory.

Each of its ``workers`` threads takes one message at a time and drives one freeze process of a
``LocalWorkerPool`` (the same processes, time limit and memory limit as the embedded mode: a freeze
process killed, overdue or out of memory fails its job with the reason and is replaced).

A message names a job; what happens depends on the job's record, never on the message alone:

- ``queued``: claimed (attempt 1) and run.
- ``running`` within its lease (``job_lease_s``): another attempt is alive elsewhere; this copy is dropped.
- ``running`` past its lease: the worker that ran it was lost (its message came back after the
  visibility timeout). It is taken over as the next attempt, or failed with ``worker-lost`` after
  ``job_attempts`` attempts. Only the latest attempt may record an outcome.
- finished or deleted: nothing to do.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import time
from typing import Any

from layerfreeze.errors import JobNotFound, StoreError, WorkerLost
from layerfreeze.metrics import Metrics
from layerfreeze.problems import problem_for
from layerfreeze.settings import Settings
from layerfreeze.storage.blobs import BlobStore
from layerfreeze.storage.jobs import JobRecord, JobStore
from layerfreeze.storage.models import ModelStore
from layerfreeze.worker.broker import QUEUE, TASK, celery_app, describe
from layerfreeze.worker.digests import Digester
from layerfreeze.worker.pool import LocalWorkerPool, _Slot
from layerfreeze.worker.runner import Outcome

log = logging.getLogger("layerfreeze.worker")


class JobRunner:
    """The freeze processes of one ``layerfreeze worker`` and what a job message does with them."""

    def __init__(self, settings: Settings, store: JobStore, blobs: BlobStore) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.models = ModelStore(store, blobs)
        self.metrics = Metrics()
        self.pool = LocalWorkerPool(settings, store, blobs, self.metrics, models=self.models)
        self.digests = Digester(store, blobs)
        self._idle: queue.Queue[_Slot] = queue.Queue()

    def start(self) -> None:
        self.models.forget_pins()  # only those of ended processes of this host
        self.pool.start(supervise=False)
        for slot in self.pool.slots:
            self._idle.put(slot)

    def stop(self) -> None:
        self.pool.stop()

    def run(self, job_id: str) -> None:
        slot = self._idle.get()
        record: JobRecord | None = None
        outcome = Outcome(job_id, ok=False)
        try:
            slot.ensure_alive()
            record = self.claim(job_id)
            if record is None:
                return
            log.info("job started", extra={"job_id": job_id, "attempt": record.attempts})
            started = time.monotonic()
            outcome, replace = slot.run_job(record)
            self.pool.finish(record, outcome, time.monotonic() - started)
            if replace is not None:
                self.pool.replaced(replace)
                slot.respawn()
        finally:
            self._idle.put(slot)
        if record is not None and outcome.ok and not record.dry_run and not record.inline_digest:
            self._digest(job_id)  # off the job's critical path: the job is already recorded

    def claim(self, job_id: str) -> JobRecord | None:
        """The job as this worker's attempt, or None when this message has nothing to do (module doc)."""
        record = self.store.claim(job_id)
        if record is not None:
            return record
        try:
            current = self.store.get(job_id)
        except JobNotFound:
            return None
        if current.status != "running":
            return None
        if current.started_at is not None and time.time() < current.started_at + self.settings.job_lease_s():
            return None  # alive elsewhere; that attempt's own message is still held for it
        if current.attempts >= self.settings.job_attempts:
            reason = (f"the worker running this job was lost {current.attempts} time"
                      f"{'s' * (current.attempts > 1)}; it is not started again")
            log.warning("job %s: %s", job_id, reason)
            self.pool.finish(current, Outcome(job_id, ok=False, problem=problem_for(WorkerLost(reason))), 0.0)
            return None
        taken = self.store.take_over(job_id, current.attempts)
        if taken is not None:
            log.warning("job %s: its worker was lost; attempt %d starts", job_id, taken.attempts)
        return taken

    def _digest(self, job_id: str) -> None:
        try:
            self.digests.ensure(job_id)
        except Exception:  # deleted meanwhile, say: a download computes it
            log.debug("digest of job %s not computed", job_id, exc_info=True)


def _keep_our_logging(**_: Any) -> None:
    return None


def run_worker(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT (a warm shutdown: running jobs finish, within their time limit)."""
    from celery import signals

    blobs = BlobStore(settings.data_dir, private_tmp=True)
    blobs.prepare()
    store = JobStore(blobs.db_path, settings.database_url)
    runner = JobRunner(settings, store, blobs)
    app = celery_app(settings)

    @app.task(name=TASK, acks_late=True, reject_on_worker_lost=True)
    def run_job(job_id: str) -> None:
        try:
            runner.run(job_id)
        except StoreError:  # the database is unreachable: the job, still queued or running in it, is
            # published again from the database once it answers (CeleryQueue.redispatch)
            log.exception("job %s: database error", job_id)

    # Celery sets up no logging of its own when a receiver answers setup_logging: its lines go through
    # the JSON handler that configure_logging gave the celery and kombu loggers.
    signals.setup_logging.connect(_keep_our_logging, weak=False)
    runner.start()
    log.info("layerfreeze worker ready", extra={"broker": describe(app), "workers": settings.workers,
                                                "data_dir": str(blobs.root)})
    try:
        worker = app.Worker(
            pool="threads", concurrency=settings.workers, queues=[QUEUE],
            hostname=f"layerfreeze@{socket.gethostname()}.{os.getpid()}",
            without_mingle=True, without_gossip=True, without_heartbeat=True,
            loglevel=settings.log_level, quiet=True,
        )
        worker.start()
    finally:
        runner.stop()
        store.close()
