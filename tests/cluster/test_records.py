"""What the distributed mode keeps in the records and on the shared volume, on both dialects: a job's
attempts (only the latest may finish it), re-publication of jobs a broker lost, chore leases, and the
age thresholds that keep one process from sweeping another's files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from layerfreeze.storage.blobs import BlobStore
from layerfreeze.storage.jobs import JobRecord, JobStore
from layerfreeze.storage.models import ModelStore


def job(job_id: str) -> JobRecord:
    return JobRecord(id=job_id, tenant="", status="queued", created_at=time.time(), dry_run=False,
                     spec="{}", input_filename="m.pt", input_bytes=1, input_sha256="0" * 64)


@pytest.fixture
def store(tmp_path: Path, database_url: str):
    blobs = BlobStore(tmp_path / "data", private_tmp=True)
    blobs.prepare()
    s = JobStore(blobs.db_path, database_url)
    yield s
    s.close()


def test_only_the_latest_attempt_finishes_a_job(store: JobStore) -> None:
    store.create(job("j1"))
    first = store.claim("j1")
    assert first is not None and first.attempts == 1
    assert store.claim("j1") is None  # a second copy of the message
    second = store.take_over("j1", first.attempts)  # its worker was lost
    assert second is not None and second.attempts == 2
    assert store.take_over("j1", first.attempts) is None  # someone else took it over already
    assert not store.succeed("j1", output_bytes=1, output_sha256="a" * 64, attempt=first.attempts)
    assert not store.fail("j1", {"status": 500}, attempt=first.attempts)
    assert store.get("j1").status == "running"
    assert store.succeed("j1", output_bytes=1, output_sha256="a" * 64, attempt=second.attempts)
    assert store.get("j1").status == "succeeded" and store.get("j1").attempts == 2


def test_jobs_a_broker_may_have_lost_are_found(store: JobStore) -> None:
    for name in ("queued-new", "queued-old", "running-live", "running-lost"):
        store.create(job(name))
    store.mark_dispatched("queued-new")
    for name in ("running-live", "running-lost"):
        store.claim(name)
    now = time.time()
    # Read as from the future: everything is past its redelivery time; only a running job past its lease
    # (older than running_before) counts.
    found = store.undispatched(now + 10, running_before=now - 10)
    assert found == ["queued-new", "queued-old"]
    everything = ["queued-new", "queued-old", "running-live", "running-lost"]
    assert store.undispatched(now + 10, running_before=now + 10) == everything
    store.mark_dispatched("queued-old")
    assert "queued-old" not in store.undispatched(now - 10, running_before=now + 10)


def test_a_chore_is_leased_to_one_owner_at_a_time(store: JobStore) -> None:
    assert store.take_chore("cleanup", "a", 0.3)
    assert not store.take_chore("cleanup", "b", 0.3)
    assert store.take_chore("cleanup", "a", 0.3)  # the holder renews it
    assert store.take_chore("other", "b", 0.3)
    time.sleep(0.35)
    assert store.take_chore("cleanup", "b", 0.3)  # expired: another owner takes it


def test_sweeps_of_a_shared_directory_spare_recent_files(store: JobStore, tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "data", private_tmp=True)
    models = ModelStore(store, blobs)
    old = time.time() - 7200
    for name in ("old-orphan", "new-orphan", "known"):
        (blobs.jobs_dir / name).mkdir()
    (blobs.jobs_dir / "known" / "report.json.part").write_bytes(b"being written")
    os.utime(blobs.jobs_dir / "old-orphan", (old, old))
    (blobs.models_dir / "being-read").mkdir()
    for sha, when in (("a" * 64, old), ("b" * 64, None)):
        path = blobs.content.path(sha)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
        if when:
            os.utime(path, (when, when))
    cutoff = time.time() - 3600
    assert blobs.sweep({"known"}, set(), older_than=cutoff) == 1
    assert sorted(p.name for p in blobs.jobs_dir.iterdir()) == ["known", "new-orphan"]
    assert (blobs.jobs_dir / "known" / "report.json.part").exists()  # may be another process's write
    assert (blobs.models_dir / "being-read").exists()
    models.collect(older_than=cutoff)
    assert not blobs.content.exists("a" * 64) and blobs.content.exists("b" * 64)


def test_private_temp_folders_of_live_processes_are_kept(tmp_path: Path) -> None:
    mine = BlobStore(tmp_path / "data", private_tmp=True)
    mine.prepare()
    (mine.tmp_dir / "upload.part").write_bytes(b"x")
    dead = mine.shared_tmp / f"{os.uname().nodename}.999999999.abcd"  # a pid that cannot exist
    dead.mkdir()
    other = BlobStore(tmp_path / "data", private_tmp=True)
    other.prepare()  # another process starting on the same directory
    assert (mine.tmp_dir / "upload.part").exists()
    assert not dead.exists()
