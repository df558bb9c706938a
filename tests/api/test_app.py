"""``create_app`` over a runtime the test builds: the real store, blobs and models with a fake pool that
runs nothing, so the HTTP edge is tested by itself (what it stores, what it queues, how it answers while
the pool is busy, full or down) without worker processes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from layerfreeze.api.app import create_app
from layerfreeze.api.service import Service
from layerfreeze.metrics import Metrics
from layerfreeze.settings import Settings
from layerfreeze.storage.blobs import BlobStore
from layerfreeze.storage.jobs import JobStore
from layerfreeze.storage.models import ModelStore
from layerfreeze.worker.digests import Digester
from layerfreeze.worker.queue import PoolHealth

SPEC = '{"rules": [{"action": "freeze", "names": ["0"]}]}'


class FakePool:
    """A ``JobQueue`` that only records what it is given; the test decides how jobs end."""

    def __init__(self, workers: int = 1) -> None:
        self.running = True
        self.workers = self.alive = workers
        self.submitted: list[str] = []

    def start(self) -> None: ...

    def stop(self) -> None:
        self.running = False

    def submit(self, job_id: str) -> None:
        self.submitted.append(job_id)

    def health(self) -> PoolHealth:
        return PoolHealth(workers=self.workers, alive=self.alive, busy=0, queued=len(self.submitted),
                          restarts=0)


@pytest.fixture
def runtime(tmp_path: Path, records_database: Callable[[], str]) -> Iterator[Service]:
    settings = Settings(data_dir=tmp_path / "data", queue_max=3, database_url=records_database())
    blobs = BlobStore(settings.data_dir)
    blobs.prepare()
    store = JobStore(blobs.db_path, settings.database_url)
    digests = Digester(store, blobs)
    digests.start()
    yield Service(settings=settings, blobs=blobs, store=store, pool=FakePool(),
                  metrics=Metrics(), models=ModelStore(store, blobs), digests=digests)
    digests.stop()
    store.close()


@pytest.fixture
def client(runtime: Service) -> Iterator[TestClient]:
    with TestClient(create_app(runtime.settings, runtime)) as c:
        yield c


def submit(client: TestClient, data: bytes = b"model bytes", **params: str):  # type: ignore[no-untyped-def]
    return client.post("/v1/jobs", params=params, data={"spec": SPEC}, files={"model": ("m.pt", data)})


def test_an_accepted_upload_is_stored_and_queued_before_any_worker_sees_it(
        client: TestClient, runtime: Service) -> None:
    r = submit(client, b"\x80\x02}.")
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued"
    assert runtime.pool.submitted == [job["id"]]  # type: ignore[attr-defined]
    record = runtime.store.get(job["id"])
    assert record.status == "queued"
    assert record.input_sha256 == hashlib.sha256(b"\x80\x02}.").hexdigest() == job["input"]["sha256"]
    assert runtime.blobs.content.path(record.input_sha256).read_bytes() == b"\x80\x02}."  # stored by content
    assert not runtime.models.release(record.input_sha256)  # held by the queued job: not collectable
    assert record.model_id == job["id"]  # a new upload: the job reads it into the model it creates
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
    assert client.get(f"/v1/jobs/{job['id']}/report").status_code == 409  # not finished: nothing to fetch


def test_a_waiting_request_answers_when_the_pool_reports_the_end(client: TestClient,
                                                                 runtime: Service) -> None:
    """A job failed by the pool while the request waits: the request answers with the failure."""
    def fail_on_submit(job_id: str) -> None:
        runtime.store.claim(job_id)
        runtime.store.fail(job_id, {"type": "about:blank", "title": "Worker lost", "status": 500,
                                    "detail": "worker killed by signal 9 (SIGKILL)"})
        runtime.waiters.notify(job_id)

    runtime.pool.submit = fail_on_submit  # type: ignore[method-assign]
    r = submit(client, wait="10")
    assert r.status_code >= 500
    body = r.json()
    assert body["job"]["status"] == "failed" and "signal 9" in body["detail"]


def test_a_full_queue_is_429_with_retry_after(client: TestClient, runtime: Service) -> None:
    for _ in range(3):
        assert submit(client).status_code == 202
    r = submit(client)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.headers["content-type"].startswith("application/problem+json")
    assert len(runtime.pool.submitted) == 3  # type: ignore[attr-defined]


def test_readiness_follows_the_pool(client: TestClient, runtime: Service) -> None:
    assert client.get("/readyz").status_code == 200
    runtime.pool.alive = 0  # type: ignore[attr-defined]
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["workers"] is False
    assert client.get("/healthz").status_code == 200  # alive, though not ready


def test_a_stopping_pool_takes_no_new_job(client: TestClient, runtime: Service) -> None:
    runtime.pool.running = False
    r = submit(client)
    assert r.status_code == 503 and "retry-after" in r.headers
    assert runtime.store.count_by_status()["queued"] == 0
    assert runtime.blobs.content.shas() == set()  # refused before the upload was stored
