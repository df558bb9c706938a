"""The worker pool (worker/pool.py) with its real store, blobs and models but no HTTP: a job runs in a
worker process and its outcome is recorded; a refused input, a killed worker or an overrun fails only its own
job; a dead or overdue worker is replaced and the next job runs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from layerfreeze.formats.segments import SegmentReader, from_patch_segments
from layerfreeze.metrics import Metrics
from layerfreeze.settings import Settings
from layerfreeze.storage.blobs import BlobStore
from layerfreeze.storage.jobs import JobRecord, JobStore
from layerfreeze.storage.models import ModelStore
from layerfreeze.worker.pool import LocalWorkerPool

from testing.hostile import payload_pickle, torch_zip
from testing.procs import gone

FREEZE_WEIGHT = '{"rules": [{"action": "freeze", "names": ["weight"]}]}'


def linear_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save(torch.nn.Linear(3, 2).state_dict(), buf)
    return buf.getvalue()


class Harness:
    """A started pool over a fresh data directory; ``on_finished`` lands in ``self.finished``."""

    def __init__(self, data_dir: Path, **settings: object) -> None:
        self.settings = Settings(data_dir=data_dir, **settings)  # type: ignore[arg-type]
        self.blobs = BlobStore(self.settings.data_dir)
        self.blobs.prepare()
        self.store = JobStore(self.blobs.db_path, self.settings.database_url)
        self.models = ModelStore(self.store, self.blobs)
        self.metrics = Metrics()
        self.finished: queue.Queue[str] = queue.Queue()
        self.pool = LocalWorkerPool(self.settings, self.store, self.blobs, self.metrics,
                                    on_finished=self.finished.put, models=self.models)
        self.pool.start()

    def submit(self, data: bytes, spec: str = FREEZE_WEIGHT) -> str:
        """What ``POST /v1/jobs`` does with an upload: store it as a blob (pinned until the job that
        holds it is recorded), record the job as the model it will create, queue it."""
        job_id = uuid.uuid4().hex
        sha256 = hashlib.sha256(data).hexdigest()
        tmp = self.blobs.temp_path()
        tmp.write_bytes(data)
        self.models.adopt_blob(tmp, sha256, len(data))
        try:
            self.store.create(JobRecord(
                id=job_id, tenant="", status="queued", created_at=time.time(), dry_run=False, spec=spec,
                input_filename="m.pt", input_bytes=len(data), input_sha256=sha256, model_id=job_id))
        finally:
            self.models.unpin(sha256)
        self.pool.submit(job_id)
        return job_id

    def output(self, record: JobRecord) -> bytes:
        """A succeeded job's output, rebuilt from its patch over its input blob (as downloads serve it)."""
        patch = json.loads(self.blobs.patch_path(record.id).read_bytes())
        assert patch["base"] == {"sha256": record.input_sha256, "bytes": record.input_bytes}
        with SegmentReader(self.blobs.content.path(record.input_sha256),
                           from_patch_segments(patch["segments"])) as reader:
            return b"".join(reader.chunks())

    def wait(self, job_id: str, timeout: float = 60) -> JobRecord:
        assert self.finished.get(timeout=timeout) == job_id
        return self.store.get(job_id)

    def wait_status(self, job_id: str, status: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.store.get(job_id).status != status:
            assert time.monotonic() < deadline, f"job {job_id} never {status}"
            time.sleep(0.02)

    def restarts(self, reason: str) -> float:
        return self.metrics.worker_restarts.labels(reason)._value.get()

    def close(self) -> None:
        self.pool.stop()
        self.store.close()


@pytest.fixture
def harness(tmp_path: Path, records_database: Callable[[], str]) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**settings: object) -> Harness:
        made.append(Harness(tmp_path / f"data{len(made)}",
                            **{"workers": 1, "database_url": records_database(), **settings}))
        return made[-1]

    yield make
    for h in made:
        h.close()


def test_a_job_runs_in_a_worker_and_its_outcome_is_recorded(harness: Callable[..., Harness]) -> None:
    h = harness()
    job_id = h.submit(linear_bytes())
    record = h.wait(job_id)
    assert record.status == "succeeded", record.error
    assert h.blobs.content.exists(record.input_sha256)  # the succeeded job holds its input blob
    assert not h.blobs.output_path(job_id).exists()  # the output is a patch over it, not a copy
    out = h.output(record)
    assert record.output_sha256 == hashlib.sha256(out).hexdigest()
    assert record.output_bytes == len(out)
    assert json.loads(h.blobs.report_path(job_id).read_bytes())["output"]["sha256"] == record.output_sha256
    assert record.model_id in h.models.ids()  # its first read of the upload made it a stored model
    assert h.blobs.model_stored_path(record.model_id).exists()
    frozen = torch.load(io.BytesIO(out), weights_only=True)
    assert set(frozen) == {"weight", "bias"}
    health = h.pool.health()
    assert (health.workers, health.alive, health.busy, health.restarts) == (1, 1, 0, 0)


def test_a_refused_input_fails_only_its_job_and_keeps_the_worker(harness: Callable[..., Harness],
                                                                 tmp_path: Path) -> None:
    h = harness()
    (pid,) = h.pool.worker_pids()
    hostile = torch_zip(payload_pickle("os_system", 2, str(tmp_path / "ran")))
    bad = h.wait(h.submit(hostile))
    assert bad.status == "failed" and bad.error is not None and bad.error["status"] == 422
    assert not (tmp_path / "ran").exists()
    assert not any(h.blobs.job_dir(bad.id).glob("*"))  # no report, no patch, no half-written file
    assert not h.blobs.content.exists(bad.input_sha256)  # a failed job holds no file: its blob is gone
    assert bad.model_id not in h.models.ids() and not h.blobs.model_dir(bad.model_id).exists()
    assert h.wait(h.submit(linear_bytes())).status == "succeeded"
    assert h.pool.worker_pids() == [pid] and h.pool.health().restarts == 0


def test_a_worker_killed_mid_job_fails_that_job_and_is_replaced(harness: Callable[..., Harness]) -> None:
    h = harness()
    (pid,) = h.pool.worker_pids()
    os.kill(pid, signal.SIGSTOP)  # the job it is handed hangs until the kill
    job_id = h.submit(linear_bytes())
    h.wait_status(job_id, "running")
    os.kill(pid, signal.SIGKILL)
    lost = h.wait(job_id)
    assert lost.status == "failed" and lost.error is not None and lost.error["status"] >= 500
    assert h.wait(h.submit(linear_bytes())).status == "succeeded"
    (new_pid,) = h.pool.worker_pids()
    assert new_pid != pid and gone(pid)
    assert h.restarts("died") == 1


def test_a_job_over_its_time_limit_fails_and_the_worker_is_replaced(harness: Callable[..., Harness]) -> None:
    h = harness(job_timeout_s=1)
    (pid,) = h.pool.worker_pids()
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    overdue = h.wait(h.submit(linear_bytes()))
    assert 1 <= time.monotonic() - t0 < 20
    assert overdue.status == "failed" and overdue.error is not None and overdue.error["status"] == 422
    assert h.wait(h.submit(linear_bytes())).status == "succeeded"
    assert gone(pid) and h.restarts("time_limit") == 1


def test_an_idle_worker_that_dies_is_replaced_before_the_next_job(harness: Callable[..., Harness]) -> None:
    h = harness()
    (pid,) = h.pool.worker_pids()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while h.restarts("died_idle") < 1:  # found by the idle supervisor, not by the next job
        assert time.monotonic() < deadline, "the dead worker was not noticed"
        time.sleep(0.05)
    assert h.wait(h.submit(linear_bytes())).status == "succeeded"
    (new_pid,) = h.pool.worker_pids()
    assert new_pid != pid and h.restarts("died") == 0


def test_stop_ends_every_worker(harness: Callable[..., Harness]) -> None:
    h = harness(workers=2)
    pids = h.pool.worker_pids()
    h.pool.stop()
    assert all(gone(p) for p in pids) and h.pool.health().alive == 0


def test_a_replacement_counts_as_alive_only_once_started_and_stop_meanwhile_is_clean(
        harness: Callable[..., Harness]) -> None:
    """A worker being replaced is not yet ready (``/readyz`` must not count it), and a pool stopped while a
    replacement starts ends it without crashing the supervisor thread."""
    h = harness()
    (slot,) = h.pool._slots
    (pid,) = h.pool.worker_pids()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while h.restarts("died_idle") < 1:  # the supervisor has begun the replacement
        assert time.monotonic() < deadline, "the dead worker was not noticed"
        time.sleep(0.01)
    if not slot.ready:
        assert h.pool.health().alive == 0
    h.pool.stop()
    slot.thread.join(timeout=10)
    assert not slot.thread.is_alive() and h.pool.health().alive == 0
    assert all(gone(p) for p in (pid, *h.pool.worker_pids()))


def test_await_ready_after_a_concurrent_stop_is_a_start_error(harness: Callable[..., Harness]) -> None:
    from layerfreeze.worker.pool import WorkerStartError

    h = harness()
    (slot,) = h.pool._slots
    (pid,) = h.pool.worker_pids()
    slot.retire(kill=True)
    slot.launch()  # a replacement on its way up ...
    assert not slot.alive()
    slot.retire(kill=True)  # ... retired by stop() on another thread
    with pytest.raises(WorkerStartError, match="stopped while it started"):
        slot.await_ready()
    assert gone(pid)
