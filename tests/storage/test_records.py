"""The record stores (jobs, models and blobs, idempotency keys) on both dialects: SQLite in the data
directory and a real PostgreSQL database (``database_url`` runs each test on both)."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from layerfreeze.errors import JobConflict, JobNotFound, ModelNotFound, StoreError
from layerfreeze.storage.blobs import BlobStore
from layerfreeze.storage.idempotency import IdempotencyStore
from layerfreeze.storage.jobs import JobRecord, JobStore
from layerfreeze.storage.models import ModelFile, ModelRecord, ModelStore
from layerfreeze.storage.schema import SQLITE_MIGRATE_TO_2, SQLITE_SCHEMA, SQLITE_VERSION
from sqlalchemy import text

PROBLEM = {"status": 500, "detail": "interrupted by restart"}


def job(job_id: str, tenant: str = "", sha: str = "0" * 64, dry_run: bool = False) -> JobRecord:
    return JobRecord(id=job_id, tenant=tenant, status="queued", created_at=time.time(), dry_run=dry_run,
                     spec='{"rules": []}', input_filename="m.pt", input_bytes=1, input_sha256=sha)


def model(model_id: str, tenant: str, files: dict[str, bytes]) -> ModelRecord:
    entries = tuple(ModelFile(name, len(data), hashlib.sha256(data).hexdigest())
                    for name, data in files.items())
    sha = entries[0].sha256 if len(entries) == 1 else hashlib.sha256(repr(entries).encode()).hexdigest()
    return ModelRecord(id=model_id, tenant=tenant, sha256=sha, bytes=sum(f.bytes for f in entries),
                       format="torch-zip", created_at=time.time(), summary={"tensors": 2}, files=entries)


@pytest.fixture
def stores(tmp_path: Path, database_url: str):
    blobs = BlobStore(tmp_path / "data")
    blobs.prepare()
    store = JobStore(blobs.db_path, database_url)
    yield store, ModelStore(store, blobs), blobs
    store.close()


def stored_blob(models: ModelStore, blobs: BlobStore, data: bytes) -> str:
    """Adopt ``data`` as a blob (pinned, as an upload being recorded is); its sha256."""
    sha = hashlib.sha256(data).hexdigest()
    tmp = blobs.temp_path()
    tmp.write_bytes(data)
    models.adopt_blob(tmp, sha, len(data))
    return sha


def test_job_lifecycle_paging_and_conflicts(stores) -> None:
    store, _, _ = stores
    for i in range(5):
        created = store.create(job(f"j{i}", tenant="a" if i % 2 == 0 else "b"))
        assert created.seq > 0 and created.status == "queued"
    claimed = store.claim("j0")
    assert claimed is not None and claimed.status == "running" and claimed.started_at is not None
    assert store.claim("j0") is None  # only once
    assert store.succeed("j0", output_bytes=3, output_sha256=None, output_filename="m.frozen.pt")
    assert not store.succeed("j0", output_bytes=4, output_sha256=None)  # no longer running
    assert store.undigested() == ["j0"]
    store.set_output_digest("j0", "1" * 64)
    store.set_output_digest("j0", "2" * 64)  # the first digest stands
    done = store.get("j0")
    assert (done.status, done.output_bytes, done.output_sha256, done.output_filename) == (
        "succeeded", 3, "1" * 64, "m.frozen.pt")
    assert store.undigested() == []
    assert store.claim("j1") is not None
    with pytest.raises(JobConflict):
        store.delete("j1", None)
    with pytest.raises(JobNotFound):
        store.get("j1", tenant="a")  # another tenant's job does not exist for "a"
    with pytest.raises(JobNotFound):
        store.delete("j2", "b")
    assert [r.id for r in store.list("a", 2, None)] == ["j4", "j2"]
    assert [r.id for r in store.list("a", 2, store.get("j2").seq)] == ["j0"]
    assert [r.id for r in store.list(None, 10, None)] == ["j4", "j3", "j2", "j1", "j0"]
    assert store.fail("j3", {"status": 422, "detail": "bad"})
    assert not store.fail("j3", {"status": 500, "detail": "again"})
    assert store.get("j3").error == {"status": 422, "detail": "bad"}
    assert store.delete("j3", "b").id == "j3" and "j3" not in store.ids()
    assert store.count_by_status() == {"queued": 2, "running": 1, "succeeded": 1, "failed": 0}
    assert store.writable() and store.writable()
    for bad in ("a\x00b", "\x00"):  # a NUL in an id from a request: no such job (PostgreSQL text has none)
        with pytest.raises(JobNotFound):
            store.get(bad)
        with pytest.raises(JobNotFound):
            store.delete(bad, None)


def test_recovery_retention_and_reopening(stores, tmp_path: Path, database_url: str) -> None:
    store, _, blobs = stores
    for i in range(4):
        store.create(job(f"j{i}"))
    store.claim("j0")
    store.succeed("j0", output_bytes=1, output_sha256="1" * 64)
    store.claim("j1")
    store.close()

    reopened = JobStore(blobs.db_path, database_url)  # as after a crash
    try:
        assert reopened.recover(PROBLEM) == ["j2", "j3"]
        failed = reopened.get("j1")
        assert failed.status == "failed" and failed.error == PROBLEM and failed.finished_at is not None
        assert reopened.count_by_status() == {"queued": 2, "running": 0, "succeeded": 1, "failed": 1}
        assert sorted(reopened.expired(time.time() + 1)) == ["j0", "j1"]
        assert reopened.expired(time.time() - 3600) == []
        reopened.purge("j0")
        reopened.purge("j2")  # queued: not purged
        assert reopened.ids() == {"j1", "j2", "j3"}
    finally:
        reopened.close()


def test_models_dedupe_per_tenant_and_delete(stores) -> None:
    _, models, _ = stores
    first, new = models.create(model("m1", "alice", {"a.pt": b"weights"}))
    assert new and first.seq > 0
    again, new = models.create(model("m2", "alice", {"a.pt": b"weights"}))
    assert not new and again.id == "m1" and again.files == first.files
    other, new = models.create(model("m3", "bob", {"a.pt": b"weights"}))
    assert new and other.id == "m3"
    directory, _ = models.create(model("m4", "alice", {"config.json": b"{}", "w.safetensors": b"w"}))
    assert [f.path for f in models.get("m4").files] == ["config.json", "w.safetensors"]
    assert models.find("alice", first.sha256).id == "m1"
    assert models.find("carol", first.sha256) is None
    assert [m.id for m in models.list("alice", 10, None)] == ["m4", "m1"]
    assert [m.id for m in models.list("alice", 10, directory.seq)] == ["m1"]
    assert [m.id for m in models.list(None, 10, None, sha256=first.sha256)] == ["m3", "m1"]
    assert models.get("m1").summary == {"tensors": 2}
    with pytest.raises(ModelNotFound):
        models.get("m1", tenant="bob")
    with pytest.raises(ModelNotFound):
        models.delete("m1", "bob")
    for bad in ("m1\x00", "\x00"):
        with pytest.raises(ModelNotFound):
            models.get(bad)
        with pytest.raises(ModelNotFound):
            models.delete(bad, None)
    deleted = models.delete("m4", "alice")
    assert len(deleted.files) == 2 and models.ids() == {"m1", "m3"}


def test_blob_references_pins_and_release(stores) -> None:
    store, models, blobs = stores
    sha = stored_blob(models, blobs, b"model bytes")
    assert blobs.content.path(sha).read_bytes() == b"model bytes"
    assert not models.release(sha)  # pinned by the upload being recorded
    store.create(job("j1", sha=sha))
    models.unpin(sha)  # the job holds it now
    assert blobs.content.exists(sha)
    models.pin(sha)  # a second job on it
    store.create(job("j2", sha=sha, dry_run=True))
    models.unpin(sha)
    store.claim("j1")
    store.fail("j1", {"status": 422})
    assert not models.release(sha)  # j2 still holds it
    store.claim("j2")
    store.succeed("j2", output_bytes=None, output_sha256=None)  # a dry run holds nothing once finished
    assert models.release(sha)
    assert not blobs.content.exists(sha)
    with pytest.raises(ModelNotFound):
        models.pin(sha)  # gone: a job on it is refused
    listing = "f" * 64
    models.pin(listing, blob=False)  # a directory's listing digest names no blob
    models.unpin(listing)

    kept = stored_blob(models, blobs, b"kept by a model")
    models.create(model("m1", "", {"m.pt": b"kept by a model"}))
    models.unpin(kept)
    assert blobs.content.exists(kept)
    models.delete("m1", None)
    assert models.release(kept) and not blobs.content.exists(kept)


def test_start_up_collection(stores) -> None:
    store, models, blobs = stores
    used = stored_blob(models, blobs, b"used")
    store.create(job("j1", sha=used))
    stored_blob(models, blobs, b"unused")
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    with models.db.tx() as db:  # as if another process of this host had pinned them, then died
        db.execute(text("UPDATE pins SET holder=:dead"), {"dead": f"{socket.gethostname()}:{ended.pid}:0"})
    assert models.forget_pins() == 2  # as at start-up
    stray = hashlib.sha256(b"stray").hexdigest()
    blobs.content.path(stray).parent.mkdir(exist_ok=True)
    blobs.content.path(stray).write_bytes(b"stray")  # a file without a record
    assert models.collect() == 2
    assert blobs.content.shas() == {used}
    assert models.expire_pins(time.time() + 1) == 0


def test_idempotency_keys(stores) -> None:
    store, _, _ = stores
    keys = IdempotencyStore(store)
    assert keys.claim("alice", "k1") is None
    in_flight = keys.claim("alice", "k1")
    assert in_flight is not None and in_flight.status is None
    assert keys.claim("bob", "k1") is None  # per tenant
    body = bytes(range(256))
    keys.complete("alice", "k1", "fp", 201, {"location": "/v1/jobs/x"}, body)
    answered = keys.claim("alice", "k1")
    assert answered is not None
    assert (answered.fingerprint, answered.status, answered.headers, answered.body) == (
        "fp", 201, {"location": "/v1/jobs/x"}, body)
    keys.release("alice", "k1")  # answered keys stay
    keys.release("bob", "k1")  # in flight: given back
    assert keys.claim("bob", "k1") is None
    assert keys.expire(time.time() + 1) == 2
    assert keys.claim("alice", "k1") is None


def _old_database(path: Path, version: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(SQLITE_SCHEMA)
    db.execute("INSERT INTO jobs (id, tenant, status, created_at, dry_run, spec, input_filename, "
               "input_bytes, input_sha256) VALUES ('old', '', 'queued', 1.0, 0, '{}', 'm.pt', 1, ?)",
               ("0" * 64,))
    if version == 2:
        db.executescript(SQLITE_MIGRATE_TO_2 + f";PRAGMA user_version={version}")
    db.close()


@pytest.mark.parametrize("version", [1, 2])
def test_sqlite_files_of_older_releases_open(tmp_path: Path, version: int) -> None:
    path = tmp_path / "jobs.sqlite3"
    _old_database(path, version)
    store = JobStore(path)
    try:
        assert store.get("old").status == "queued" and store.get("old").model_id is None
        assert store.claim("old") is not None
    finally:
        store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SQLITE_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_sqlite_file_of_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    sqlite3.connect(path).execute(f"PRAGMA user_version={SQLITE_VERSION + 1}")
    with pytest.raises(StoreError, match=f"schema version {SQLITE_VERSION + 1}"):
        JobStore(path)


def test_start_up_forgets_the_pins_of_ended_processes(stores, database_url: str) -> None:
    """SQLite: this service is the only process, every pin goes. A shared database: only this host's pins
    of processes that ended (or of an earlier process with this pid); other hosts' pins age out."""
    _, models, _ = stores
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    host = socket.gethostname()
    holders = [f"{host}:{ended.pid}:0001", f"{host}:{os.getpid()}:0002", "elsewhere:1:0003", models.holder]
    with models.db.tx() as db:
        for holder in holders:
            db.execute(text("INSERT INTO pins (sha256, holder, n, created_at) "
                            "VALUES (:sha, :holder, 1, :now)"),
                       {"sha": "a" * 64, "holder": holder, "now": time.time() - 10})
    kept = {r[0] for r in models.db.query("SELECT holder FROM pins")}
    assert kept == set(holders)
    if database_url:
        assert models.forget_pins() == 2
        assert {r[0] for r in models.db.query("SELECT holder FROM pins")} == set(holders[2:])
        assert models.expire_pins(time.time() - 3600) == 0
        assert models.expire_pins(time.time()) == 2
    else:
        assert models.forget_pins() == 4
