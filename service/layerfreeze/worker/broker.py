"""The distributed mode's queue: jobs go to ``layerfreeze worker`` processes through Celery on Redis.

The database is the truth about a job; a broker message only says "look at job X". So a message that is
lost (a broker restarted without its data) is published again from the database (``redispatch``), and
one that comes twice (a redelivery after a lost worker, or that republication) finds the job already
claimed, finished or running elsewhere, and does nothing unless the attempt running it was lost
(``worker.remote``). Messages are acknowledged late (after the job is recorded), one at a time per
worker thread, and a message a lost worker held is delivered again after the visibility timeout.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from layerfreeze.metrics import Metrics
from layerfreeze.settings import Settings
from layerfreeze.storage.blobs import BlobStore
from layerfreeze.storage.jobs import JobStore
from layerfreeze.storage.models import ModelStore
from layerfreeze.worker.pool import LocalWorkerPool
from layerfreeze.worker.queue import PoolHealth
from layerfreeze.worker.runner import ModelPaths, Outcome, ReadTask

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger("layerfreeze.broker")
TASK = "layerfreeze.run_job"
QUEUED_EVERY_S = 0.5
QUEUE = "layerfreeze.jobs"


def celery_app(settings: Settings) -> Celery:
    """The Celery application of the API replicas (publishers) and the workers (consumers), one config."""
    from celery import Celery

    visibility = settings.visibility_timeout_s()
    app = Celery("layerfreeze", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # acknowledged once the job is recorded: a lost worker's job comes back
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,  # a worker thread holds one message: the one it runs
        task_ignore_result=True,  # outcomes live in the database
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={
            "visibility_timeout": visibility,
            # How often a worker looks for messages a lost worker held: a tenth of the timeout.
            "unacked_restore_interval": max(1, min(10, int(visibility / 10))),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits for the broker to come back
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                                   "interval_max": 1.0},
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,  # their outcome goes to the database
    )
    return app


class CeleryQueue:
    """``JobQueue`` of an API replica in the distributed mode: publishes job ids (from a thread, so the
    event loop never waits for the broker), and reads uploads that a request waits for in a small local
    pool (``read_workers`` processes)."""

    def __init__(self, settings: Settings, store: JobStore, blobs: BlobStore, metrics: Metrics,
                 models: ModelStore) -> None:
        self.settings = settings
        self.store = store
        self.reads = LocalWorkerPool(settings.model_copy(update={"workers": settings.read_workers}), store,
                                     blobs, metrics, models=models)
        self.app = celery_app(settings)
        self._outbox: queue.Queue[str | None] = queue.Queue()
        self._publisher = threading.Thread(target=self._publish_loop, name="layerfreeze-publisher",
                                           daemon=True)
        self._queued: tuple[float, int] = (0.0, 0)  # (when counted, jobs queued in the database)

    @property
    def running(self) -> bool:
        return self.reads.running

    def start(self) -> None:
        self._count_queued()
        self.reads.start()
        self._publisher.start()

    def stop(self) -> None:
        if self._publisher.is_alive():
            self._outbox.put(None)
            self._publisher.join(timeout=5)
        self.reads.stop()

    def submit(self, job_id: str) -> None:
        self._outbox.put(job_id)

    def publish(self, job_id: str) -> bool:
        """Hand a job to the broker now (blocking); False when the broker cannot be reached (the job stays
        queued in the database and ``redispatch`` tries again)."""
        try:
            self.app.send_task(TASK, args=[job_id], queue=QUEUE)
        except Exception as exc:  # kombu's OperationalError, redis' ConnectionError, ...
            log.warning("job %s: the broker is unreachable (%s); it is published again later", job_id, exc)
            return False
        self.store.mark_dispatched(job_id)
        return True

    def redispatch(self) -> int:
        """Publish again the jobs the broker may have lost; returns how many."""
        now = time.time()
        ids = self.store.undispatched(now - self.settings.visibility_timeout_s(),
                                      now - self.settings.job_lease_s())
        published = sum(self.publish(job_id) for job_id in ids)
        if ids:
            log.info("published again %d of %d jobs the broker may have lost", published, len(ids))
        return published

    def _publish_loop(self) -> None:
        """Publish submitted jobs; between them, count the cluster's queued jobs twice a second (so that
        ``health``, called on the event loop, never waits for the database)."""
        while True:
            if time.monotonic() - self._queued[0] >= QUEUED_EVERY_S:
                self._count_queued()
            try:
                job_id = self._outbox.get(timeout=QUEUED_EVERY_S)
            except queue.Empty:
                continue
            if job_id is None:
                return
            self.publish(job_id)

    def _count_queued(self) -> None:
        try:
            queued = self.store.count_by_status().get("queued", 0)
        except Exception:  # the database is away: keep the last count; requests see it themselves
            log.debug("cannot count queued jobs", exc_info=True)
            queued = self._queued[1]
        self._queued = (time.monotonic(), queued)

    def call(self, task: ReadTask) -> Outcome:
        return self.reads.call(task)

    def model_paths(self, model_id: str) -> ModelPaths:
        return self.reads.model_paths(model_id)

    def health(self) -> PoolHealth:
        """The local read pool, and the jobs queued in the database (the whole cluster's queue, as last
        counted by the publisher thread)."""
        h = self.reads.health()
        return PoolHealth(workers=h.workers, alive=h.alive, busy=h.busy, queued=self._queued[1],
                          restarts=h.restarts)

    def worker_pids(self) -> list[int]:
        return self.reads.worker_pids()


def describe(app: Any) -> str:
    """The broker's address without its password, for logs."""
    return str(app.connection().as_uri(include_password=False))
