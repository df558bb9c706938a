"""Job records, in the SQLite file of the data directory or in PostgreSQL (``storage.db``).

Every change is one short transaction; a state change that several processes may race on (a claim, a
success, a deletion) is a single conditional statement or locks its row first, so exactly one wins.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text

from layerfreeze.errors import JobConflict, JobNotFound, StoreError
from layerfreeze.storage import schema
from layerfreeze.storage.db import Database, storable

STATUSES = ("queued", "running", "succeeded", "failed")
_ATTEMPT = " AND attempts=:attempt"  # a change only the job's latest attempt may make


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    tenant: str
    status: str
    created_at: float
    dry_run: bool
    spec: str
    input_filename: str
    input_bytes: int
    input_sha256: str
    seq: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    output_filename: str | None = None
    output_bytes: int | None = None
    output_sha256: str | None = None
    error: dict[str, Any] | None = None
    model_id: str | None = None
    inline_digest: bool = True  # the output sha256 is part of the job (multipart jobs, as in v1)
    attempts: int = 0  # times the job was started; only the latest attempt may finish it
    files: tuple[tuple[str, int, str], ...] = ()  # a model directory's (path, bytes, sha256): job_files

    @property
    def blobs(self) -> tuple[str, ...]:
        """Every blob the job holds: its input, or its model directory's files."""
        return (self.input_sha256, *(sha for _p, _n, sha in self.files))

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed")


_COLUMNS = (
    "seq, id, tenant, status, created_at, started_at, finished_at, dry_run, spec, input_filename, "
    "input_bytes, input_sha256, output_filename, output_bytes, output_sha256, error, model_id, "
    "inline_digest, attempts"
)


def _row_to_record(row: tuple[Any, ...]) -> JobRecord:
    (seq, id_, tenant, status, created, started, finished, dry_run, spec, in_name, in_bytes, in_sha,
     out_name, out_bytes, out_sha, error, model_id, inline_digest, attempts) = row
    return JobRecord(
        id=id_, tenant=tenant, status=status, created_at=created, dry_run=bool(dry_run), spec=spec,
        input_filename=in_name, input_bytes=in_bytes, input_sha256=in_sha, seq=seq, started_at=started,
        finished_at=finished, output_filename=out_name, output_bytes=out_bytes, output_sha256=out_sha,
        error=json.loads(error) if error else None, model_id=model_id, inline_digest=bool(inline_digest),
        attempts=attempts,
    )


_FILES = "SELECT path, bytes, sha256 FROM job_files WHERE job_id=:id ORDER BY path"


def _files(db: Connection, job_id: str) -> tuple[tuple[str, int, str], ...]:
    return tuple((str(p), int(n), str(s)) for p, n, s in db.execute(text(_FILES), {"id": job_id}))


def _with_files(db: Connection, row: Any) -> JobRecord | None:
    """The record of a row just claimed, with its model directory's files (None for no row)."""
    if row is None:
        return None
    record = _row_to_record(tuple(row))
    return replace(record, files=_files(db, record.id))


def _drop_files(db: Connection, job_id: str) -> tuple[tuple[str, int, str], ...]:
    files = _files(db, job_id)
    db.execute(text("DELETE FROM job_files WHERE job_id=:id"), {"id": job_id})
    return files


class JobStore:
    """``JobStore(path)``: the SQLite file at ``path``; ``JobStore(path, url)`` with a PostgreSQL URL: that
    database (``path`` unused). Opening brings the schema up to date (``storage.schema``)."""

    def __init__(self, path: Path, url: str = "") -> None:
        self.path = Path(path)
        self.db = Database.open(self.path, url)
        try:
            schema.prepare(self.db)
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _tx(self, durable: bool = True) -> Iterator[Connection]:
        """One write transaction (``Database.tx``)."""
        with self.db.tx(durable) as conn:
            yield conn

    def _query(self, sql: str, args: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self.db.query(sql, args)

    # -- writes -------------------------------------------------------------------------------------

    def create(self, job: JobRecord) -> JobRecord:
        with self._tx() as db:
            seq = db.execute(text(
                "INSERT INTO jobs (id, tenant, status, created_at, dry_run, spec, input_filename, "
                "input_bytes, input_sha256, output_filename, model_id, inline_digest) "
                "VALUES (:id, :tenant, 'queued', :created_at, :dry_run, :spec, :input_filename, "
                ":input_bytes, :input_sha256, :output_filename, :model_id, :inline_digest) RETURNING seq"),
                {"id": job.id, "tenant": job.tenant, "created_at": job.created_at,
                 "dry_run": int(job.dry_run), "spec": job.spec, "input_filename": job.input_filename,
                 "input_bytes": job.input_bytes,
                 "input_sha256": job.input_sha256, "output_filename": job.output_filename,
                 "model_id": job.model_id, "inline_digest": int(job.inline_digest)},
            ).scalar_one()
            if job.files:
                db.execute(text("INSERT INTO job_files (job_id, path, bytes, sha256) "
                                "VALUES (:id, :path, :bytes, :sha)"),
                           [{"id": job.id, "path": p, "bytes": n, "sha": s} for p, n, s in job.files])
        return replace(job, seq=seq, status="queued")

    def claim(self, job_id: str) -> JobRecord | None:
        """queued -> running (attempt 1), with the job's directory files; None when the job is gone or no
        longer queued (deleted, or claimed by another process meanwhile)."""
        with self._tx(durable=False) as db:
            row = db.execute(text(f"UPDATE jobs SET status='running', started_at=:now, attempts=attempts+1 "
                                  f"WHERE id=:id AND status='queued' RETURNING {_COLUMNS}"),
                             {"now": time.time(), "id": job_id}).fetchone()
            return _with_files(db, row)

    def take_over(self, job_id: str, attempt: int) -> JobRecord | None:
        """Start attempt ``attempt + 1`` of a job left running by a lost worker; None when another
        process took it over first (or it finished meanwhile)."""
        with self._tx() as db:
            row = db.execute(text(f"UPDATE jobs SET started_at=:now, attempts=attempts+1 WHERE id=:id "
                                  f"AND status='running' AND attempts=:attempt RETURNING {_COLUMNS}"),
                             {"now": time.time(), "id": job_id, "attempt": attempt}).fetchone()
            return _with_files(db, row)

    def succeed(self, job_id: str, *, output_bytes: int | None, output_sha256: str | None,
                output_filename: str | None = None, attempt: int | None = None) -> bool:
        """running -> succeeded; with ``attempt``, only while that attempt is the job's latest. False when
        nothing changed (failed or deleted meanwhile, or a stale attempt)."""
        with self._tx() as db:
            return db.execute(text(
                "UPDATE jobs SET status='succeeded', finished_at=:now, output_bytes=:bytes, "
                "output_sha256=:sha, output_filename=COALESCE(:name, output_filename), error=NULL, "
                "holds_blob=CASE WHEN dry_run=1 THEN 0 ELSE holds_blob END "
                f"WHERE id=:id AND status='running'{_ATTEMPT if attempt is not None else ''}"),
                {"now": time.time(), "bytes": output_bytes, "sha": output_sha256, "name": output_filename,
                 "id": job_id, "attempt": attempt},
            ).rowcount == 1

    def fail(self, job_id: str, problem: dict[str, Any], attempt: int | None = None) -> bool:
        """A failed job has no artifact: it stops holding its input blob (the caller may release it).
        With ``attempt``, only while that attempt is the job's latest. False when nothing changed (the
        job had already finished, is gone, or a stale attempt)."""
        with self._tx() as db:
            return db.execute(text(
                "UPDATE jobs SET status='failed', finished_at=:now, error=:error, holds_blob=0 WHERE id=:id "
                f"AND status IN ('queued', 'running'){_ATTEMPT if attempt is not None else ''}"),
                {"now": time.time(), "error": json.dumps(problem), "id": job_id, "attempt": attempt},
            ).rowcount == 1

    def mark_dispatched(self, job_id: str) -> None:
        with self._tx(durable=False) as db:
            db.execute(text("UPDATE jobs SET dispatched_at=:now WHERE id=:id"),
                       {"now": time.time(), "id": job_id})

    def undispatched(self, queued_before: float, running_before: float) -> list[str]:
        """Jobs the broker may have lost (a broker restarted without its data): queued and not handed
        over since ``queued_before``, or running since before ``running_before`` (past their lease) and
        not handed over again since. Oldest first."""
        rows = self._query(
            "SELECT id FROM jobs WHERE (status='queued' AND COALESCE(dispatched_at, created_at) < :q) "
            "OR (status='running' AND started_at < :r AND COALESCE(dispatched_at, 0) < :q) ORDER BY seq",
            {"q": queued_before, "r": running_before})
        return [r[0] for r in rows]

    def take_chore(self, name: str, owner: str, lease_s: float) -> bool:
        """A lease on a periodic chore, so that one process of many does it: True when ``owner`` holds it
        for the next ``lease_s`` seconds."""
        now = time.time()
        with self._tx(durable=False) as db:
            return db.execute(text(
                "INSERT INTO chores (name, owner, until) VALUES (:name, :owner, :until) ON CONFLICT (name) "
                "DO UPDATE SET owner=excluded.owner, until=excluded.until "
                "WHERE chores.until < :now OR chores.owner=:owner"),
                {"name": name, "owner": owner, "until": now + lease_s, "now": now}).rowcount == 1

    def set_model(self, job_id: str, model_id: str) -> None:
        with self._tx() as db:
            db.execute(text("UPDATE jobs SET model_id=:model WHERE id=:id"),
                       {"model": model_id, "id": job_id})

    def set_output_digest(self, job_id: str, sha256: str) -> None:
        with self._tx() as db:
            db.execute(text("UPDATE jobs SET output_sha256=:sha WHERE id=:id AND output_sha256 IS NULL"),
                       {"sha": sha256, "id": job_id})

    def undigested(self) -> list[str]:
        """Succeeded jobs with an artifact whose digest is not yet known (oldest first)."""
        rows = self._query("SELECT id FROM jobs WHERE status='succeeded' AND dry_run=0 "
                           "AND output_sha256 IS NULL ORDER BY seq")
        return [r[0] for r in rows]

    def delete(self, job_id: str, tenant: str | None) -> JobRecord:
        """Remove a job's record unless it is running (JobConflict). The caller removes its files."""
        if not storable(job_id):
            raise JobNotFound(f"no job {job_id}", job_id=job_id)
        with self._tx() as db:
            row = db.execute(text(f"SELECT {_COLUMNS} FROM jobs WHERE id=:id{self.db.for_update}"),
                             {"id": job_id}).fetchone()
            if row is None or (tenant is not None and row[2] != tenant):
                raise JobNotFound(f"no job {job_id}", job_id=job_id)
            record = _row_to_record(tuple(row))
            if record.status == "running":
                raise JobConflict(f"job {job_id} is running; delete it once it has finished",
                                  job_id=job_id, status=record.status)
            db.execute(text("DELETE FROM jobs WHERE id=:id"), {"id": job_id})
            files = _drop_files(db, job_id)
        return replace(record, files=files)

    def recover(self, problem: dict[str, Any]) -> list[str]:
        """After a restart: fail jobs that were running (with ``problem``), return the queued ones
        oldest first."""
        with self._tx() as db:
            db.execute(text("UPDATE jobs SET status='failed', finished_at=:now, error=:error, holds_blob=0 "
                            "WHERE status='running'"),
                       {"now": time.time(), "error": json.dumps(problem)})
            rows = db.execute(text("SELECT id FROM jobs WHERE status='queued' ORDER BY seq")).fetchall()
        return [r[0] for r in rows]

    def expired(self, before: float) -> list[str]:
        rows = self._query("SELECT id FROM jobs WHERE status IN ('succeeded', 'failed') "
                           "AND finished_at < :before", {"before": before})
        return [r[0] for r in rows]

    def purge(self, job_id: str) -> tuple[tuple[str, int, str], ...]:
        """Remove a finished job's record; the files it held (the caller releases them)."""
        with self._tx() as db:
            deleted = db.execute(text("DELETE FROM jobs WHERE id=:id AND status IN ('succeeded', 'failed')"),
                                 {"id": job_id}).rowcount
            return _drop_files(db, job_id) if deleted else ()

    def job_files(self, job_id: str) -> tuple[tuple[str, int, str], ...]:
        """The model directory's files a job freezes, by path; () for a single-file job."""
        rows = self._query(_FILES, {"id": job_id})
        return tuple((str(p), int(n), str(s)) for p, n, s in rows)

    def writable(self) -> bool:
        try:
            with self._tx(durable=False) as db:
                db.execute(text("INSERT INTO heartbeat (id, at) VALUES (1, :now) "
                                "ON CONFLICT (id) DO UPDATE SET at=excluded.at"), {"now": time.time()})
        except StoreError:
            return False
        return True

    # -- reads --------------------------------------------------------------------------------------

    def get(self, job_id: str, tenant: str | None = None) -> JobRecord:
        """The job, or JobNotFound (also for another tenant's job: its existence is not disclosed)."""
        rows = self._query(f"SELECT {_COLUMNS} FROM jobs WHERE id=:id", {"id": job_id}) \
            if storable(job_id) else []
        if not rows or (tenant is not None and rows[0][2] != tenant):
            raise JobNotFound(f"no job {job_id}", job_id=job_id)
        return _row_to_record(rows[0])

    def list(self, tenant: str | None, limit: int, before_seq: int | None) -> list[JobRecord]:
        """Newest first; ``before_seq`` is the cursor (the seq of the last job of the previous page)."""
        where: list[str] = []
        args: dict[str, Any] = {"limit": limit}
        if tenant is not None:
            where.append("tenant=:tenant")
            args["tenant"] = tenant
        if before_seq is not None:
            where.append("seq<:before")
            args["before"] = before_seq
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._query(f"SELECT {_COLUMNS} FROM jobs {clause} ORDER BY seq DESC LIMIT :limit", args)
        return [_row_to_record(r) for r in rows]

    def ids(self) -> set[str]:
        return {r[0] for r in self._query("SELECT id FROM jobs")}

    def count_by_status(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in self._query("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
            counts[status] = n
        return counts
