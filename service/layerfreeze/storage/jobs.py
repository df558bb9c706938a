"""Job records in SQLite (WAL). The only module that imports sqlite3.

One connection shared by the API's event loop and the worker supervisors, serialized by a lock;
every statement is a short transaction, so holding the lock costs microseconds.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from layerfreeze.errors import JobConflict, JobNotFound, StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    tenant          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    created_at      REAL NOT NULL,
    started_at      REAL,
    finished_at     REAL,
    dry_run         INTEGER NOT NULL,
    spec            TEXT NOT NULL,
    input_filename  TEXT NOT NULL,
    input_bytes     INTEGER NOT NULL,
    input_sha256    TEXT NOT NULL,
    output_filename TEXT,
    output_bytes    INTEGER,
    output_sha256   TEXT,
    error           TEXT
);
CREATE INDEX IF NOT EXISTS jobs_tenant_seq ON jobs (tenant, seq);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE TABLE IF NOT EXISTS heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL);
"""

# Schema version 2 (PRAGMA user_version): uploads become blobs addressed by sha256, referenced by models
# (model_files) and by jobs (jobs.input_sha256 while jobs.holds_blob); a job may name its model.
SCHEMA_VERSION = 3
MIGRATE_TO_2 = """
ALTER TABLE jobs ADD COLUMN model_id TEXT;
ALTER TABLE jobs ADD COLUMN holds_blob INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN inline_digest INTEGER NOT NULL DEFAULT 1;
CREATE INDEX IF NOT EXISTS jobs_input_sha256 ON jobs (input_sha256);
CREATE TABLE IF NOT EXISTS blobs (
    sha256      TEXT PRIMARY KEY,
    bytes       INTEGER NOT NULL,
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    tenant      TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    format      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    summary     TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS models_tenant_sha256 ON models (tenant, sha256);
CREATE INDEX IF NOT EXISTS models_tenant_seq ON models (tenant, seq);
CREATE TABLE IF NOT EXISTS model_files (
    model_id    TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    path        TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    PRIMARY KEY (model_id, idx)
);
CREATE INDEX IF NOT EXISTS model_files_sha256 ON model_files (sha256);
CREATE TABLE IF NOT EXISTS idempotency (
    tenant      TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status      INTEGER,
    headers     TEXT,
    body        BLOB,
    created_at  REAL NOT NULL,
    PRIMARY KEY (tenant, key)
);
"""

# Schema version 3: a job's attempts (the distributed mode starts a job again when its worker is lost, and
# only the latest attempt may finish it), when it was last handed to the broker, and leases on chores that
# one process of many should do at a time.
MIGRATE_TO_3 = """
ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN dispatched_at REAL;
CREATE TABLE IF NOT EXISTS chores (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    until       REAL NOT NULL
);
"""
MIGRATIONS = ((2, MIGRATE_TO_2), (3, MIGRATE_TO_3))

STATUSES = ("queued", "running", "succeeded", "failed")


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


class JobStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                       timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut
            self._db.executescript(SCHEMA)
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the job database at {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        """Bring an older database up to SCHEMA_VERSION in one transaction (files move later:
        ``storage.models.migrate_files``)."""
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreError(f"the job database has schema version {version}; this release reads up to "
                             f"{SCHEMA_VERSION}")
        if version >= SCHEMA_VERSION:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            # Read again inside the write lock: another process sharing the file may have migrated it.
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            for target, script in MIGRATIONS:
                if version < target:
                    for statement in script.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction. ``durable=False`` skips the WAL fsync for changes a crash may undo
        harmlessly (queued -> running: recovery treats both the same); the next durable commit persists
        them too."""
        with self._lock:
            try:
                self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"job database error: {exc}") from exc

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"job database error: {exc}") from exc

    # -- writes -------------------------------------------------------------------------------------

    def create(self, job: JobRecord) -> JobRecord:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO jobs (id, tenant, status, created_at, dry_run, spec, input_filename, "
                "input_bytes, input_sha256, output_filename, model_id, inline_digest) "
                "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.tenant, job.created_at, int(job.dry_run), job.spec, job.input_filename,
                 job.input_bytes, job.input_sha256, job.output_filename, job.model_id,
                 int(job.inline_digest)),
            )
            return replace(job, seq=cur.lastrowid or 0, status="queued")

    def claim(self, job_id: str) -> JobRecord | None:
        """queued -> running (attempt 1); None when the job is gone or no longer queued (deleted
        meanwhile, or taken by another worker)."""
        with self._tx(durable=False) as db:
            cur = db.execute("UPDATE jobs SET status='running', started_at=?, attempts=attempts+1 "
                             "WHERE id=? AND status='queued'", (time.time(), job_id))
            if cur.rowcount != 1:
                return None
            row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _row_to_record(row)

    def take_over(self, job_id: str, attempt: int) -> JobRecord | None:
        """Start attempt ``attempt + 1`` of a job left running by a lost worker; None when another
        process took it over first (or it finished meanwhile)."""
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET started_at=?, attempts=attempts+1 "
                             "WHERE id=? AND status='running' AND attempts=?", (time.time(), job_id, attempt))
            if cur.rowcount != 1:
                return None
            row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _row_to_record(row)

    def succeed(self, job_id: str, *, output_bytes: int | None, output_sha256: str | None,
                output_filename: str | None = None, attempt: int | None = None) -> bool:
        """running -> succeeded; with ``attempt``, only while that attempt is the job's latest. False when
        nothing changed (a stale attempt, or the job was failed meanwhile)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET status='succeeded', finished_at=?, output_bytes=?, output_sha256=?, "
                "output_filename=COALESCE(?, output_filename), error=NULL, "
                "holds_blob=CASE WHEN dry_run THEN 0 ELSE holds_blob END WHERE id=? AND status='running' "
                "AND (? IS NULL OR attempts=?)",
                (time.time(), output_bytes, output_sha256, output_filename, job_id, attempt, attempt),
            )
            return cur.rowcount == 1

    def fail(self, job_id: str, problem: dict[str, Any], attempt: int | None = None) -> bool:
        """A failed job has no artifact: it stops holding its input blob (the caller may release it).
        With ``attempt``, only while that attempt is the job's latest; False when nothing changed."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET status='failed', finished_at=?, error=?, holds_blob=0 WHERE id=? "
                "AND status IN ('queued', 'running') AND (? IS NULL OR attempts=?)",
                (time.time(), json.dumps(problem), job_id, attempt, attempt),
            )
            return cur.rowcount == 1

    def mark_dispatched(self, job_id: str) -> None:
        with self._tx(durable=False) as db:
            db.execute("UPDATE jobs SET dispatched_at=? WHERE id=?", (time.time(), job_id))

    def undispatched(self, queued_before: float, running_before: float) -> list[str]:
        """Jobs the broker may have lost (a broker restarted without its data): queued and not handed
        over since ``queued_before``, or running since before ``running_before`` (past their lease) and
        not handed over again since. Oldest first."""
        rows = self._query(
            "SELECT id FROM jobs WHERE (status='queued' AND COALESCE(dispatched_at, created_at) < ?) "
            "OR (status='running' AND started_at < ? AND COALESCE(dispatched_at, 0) < ?) ORDER BY seq",
            (queued_before, running_before, queued_before))
        return [r[0] for r in rows]

    def take_chore(self, name: str, owner: str, lease_s: float) -> bool:
        """A lease on a periodic chore, so that one process of many does it: True when ``owner`` holds it
        for the next ``lease_s`` seconds."""
        now = time.time()
        with self._tx(durable=False) as db:
            cur = db.execute(
                "INSERT INTO chores (name, owner, until) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
                "SET owner=excluded.owner, until=excluded.until WHERE chores.until < ? OR chores.owner=?",
                (name, owner, now + lease_s, now, owner))
            return cur.rowcount == 1

    def set_model(self, job_id: str, model_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET model_id=? WHERE id=?", (model_id, job_id))

    def set_output_digest(self, job_id: str, sha256: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET output_sha256=? WHERE id=? AND output_sha256 IS NULL",
                       (sha256, job_id))

    def undigested(self) -> list[str]:
        """Succeeded jobs with an artifact whose digest is not yet known (oldest first)."""
        rows = self._query("SELECT id FROM jobs WHERE status='succeeded' AND dry_run=0 "
                           "AND output_sha256 IS NULL ORDER BY seq")
        return [r[0] for r in rows]

    def delete(self, job_id: str, tenant: str | None) -> JobRecord:
        """Remove a job's record unless it is running (JobConflict). The caller removes its files."""
        with self._tx() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None or (tenant is not None and row[2] != tenant):
                raise JobNotFound(f"no job {job_id}", job_id=job_id)
            record = _row_to_record(row)
            if record.status == "running":
                raise JobConflict(f"job {job_id} is running; delete it once it has finished",
                                  job_id=job_id, status=record.status)
            db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
        return record

    def recover(self, problem: dict[str, Any]) -> list[str]:
        """After a restart: fail jobs that were running (with ``problem``), return the queued ones
        oldest first."""
        with self._tx() as db:
            for (job_id,) in db.execute("SELECT id FROM jobs WHERE status='running'").fetchall():
                db.execute("UPDATE jobs SET status='failed', finished_at=?, error=?, holds_blob=0 WHERE id=?",
                           (time.time(), json.dumps(problem), job_id))
            rows = db.execute("SELECT id FROM jobs WHERE status='queued' ORDER BY seq").fetchall()
        return [r[0] for r in rows]

    def expired(self, before: float) -> list[str]:
        rows = self._query("SELECT id FROM jobs WHERE status IN ('succeeded', 'failed') AND finished_at < ?",
                           (before,))
        return [r[0] for r in rows]

    def purge(self, job_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE id=? AND status IN ('succeeded', 'failed')", (job_id,))

    def writable(self) -> bool:
        try:
            with self._tx(durable=False) as db:
                db.execute("INSERT OR REPLACE INTO heartbeat (id, at) VALUES (1, ?)", (time.time(),))
        except StoreError:
            return False
        return True

    # -- reads --------------------------------------------------------------------------------------

    def get(self, job_id: str, tenant: str | None = None) -> JobRecord:
        """The job, or JobNotFound (also for another tenant's job: its existence is not disclosed)."""
        rows = self._query(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,))
        if not rows or (tenant is not None and rows[0][2] != tenant):
            raise JobNotFound(f"no job {job_id}", job_id=job_id)
        return _row_to_record(rows[0])

    def list(self, tenant: str | None, limit: int, before_seq: int | None) -> list[JobRecord]:
        """Newest first; ``before_seq`` is the cursor (the seq of the last job of the previous page)."""
        where: list[str] = []
        args: list[str | int] = []
        if tenant is not None:
            where.append("tenant=?")
            args.append(tenant)
        if before_seq is not None:
            where.append("seq<?")
            args.append(before_seq)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._query(f"SELECT {_COLUMNS} FROM jobs {clause} ORDER BY seq DESC LIMIT ?",
                           (*args, limit))
        return [_row_to_record(r) for r in rows]

    def ids(self) -> set[str]:
        return {r[0] for r in self._query("SELECT id FROM jobs")}

    def count_by_status(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in self._query("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
            counts[status] = n
        return counts
