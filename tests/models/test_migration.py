"""A data directory written before stored models (schema 1: each job kept its own input and output)
is migrated on start: uploads move into the content store, finished jobs are still served, queued ones
run, and the database carries the new schema version."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import httpx
from fixtures.models import build, save
from fixtures.server import running_service
from layerfreeze.freeze import freeze_file
from layerfreeze.storage.schema import SQLITE_SCHEMA as SCHEMA
from layerfreeze.storage.schema import SQLITE_VERSION as SCHEMA_VERSION


def _old_job(db: sqlite3.Connection, data: Path, job_id: str, src: Path, status: str) -> None:
    job_dir = data / "jobs" / job_id
    job_dir.mkdir(parents=True)
    (job_dir / "input").write_bytes(src.read_bytes())
    out_sha = out_bytes = None
    if status == "succeeded":
        report = freeze_file(src, {"rules": [{"action": "freeze", "names": ["0"]}]}, job_dir / "output")
        (job_dir / "report.json").write_text(report.model_dump_json())
        out_sha, out_bytes = report.output.sha256, report.output.bytes
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    db.execute("INSERT INTO jobs (id, tenant, status, created_at, finished_at, dry_run, spec, "
               "input_filename, input_bytes, input_sha256, output_filename, output_bytes, output_sha256) "
               "VALUES (?, '', ?, ?, ?, 0, ?, 'm.pt', ?, ?, 'm.frozen.pt', ?, ?)",
               (job_id, status, time.time(), time.time() if status == "succeeded" else None,
                json.dumps({"rules": [{"action": "freeze", "names": ["0"]}]}), src.stat().st_size, sha,
                out_bytes, out_sha))


def test_schema_one_data_directory_is_migrated(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    data = tmp_path / "svc" / "data"
    data.mkdir(parents=True)
    src = save(build("seq3"), tmp_path / "m.pt", "state_dict")
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    db = sqlite3.connect(data / "jobs.sqlite3", isolation_level=None)
    db.executescript(SCHEMA)
    _old_job(db, data, "old-done", src, "succeeded")
    _old_job(db, data, "old-queued", src, "queued")
    db.close()
    old_artifact = (data / "jobs" / "old-done" / "output").read_bytes()

    # database_url="": the SQLite file of the data directory, whatever database the other tests use
    with running_service(tmp_path / "svc", subprocess_env, workers="1", database_url="") as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        done = c.get("/v1/jobs/old-done").json()
        assert done["status"] == "succeeded"
        assert c.get(done["links"]["artifact"]).content == old_artifact
        deadline = time.monotonic() + 30
        while (queued := c.get("/v1/jobs/old-queued").json())["status"] != "succeeded":
            assert queued["status"] != "failed", queued
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert c.get(queued["links"]["artifact"]).content == old_artifact  # same input, same spec
        assert [m["sha256"] for m in c.get("/v1/models").json()["items"]] == [sha]
    assert not (data / "jobs" / "old-done" / "input").exists()
    assert (data / "blobs" / sha[:2] / sha).read_bytes() == src.read_bytes()
    version = sqlite3.connect(data / "jobs.sqlite3").execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION
