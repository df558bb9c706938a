"""Stored models and the blobs behind them, in the job database (see storage.jobs for the schema).

A blob (an uploaded file, by sha256) is referenced by every model file that has its content and by every
job that holds it as its input or as a file of its model directory (``job_files``), while
``jobs.holds_blob`` (succeeded jobs with an artifact, and jobs not yet finished). ``release`` deletes
a blob when nothing references it any more; uploads being read are ``pin``-ned meanwhile, so a
concurrent deletion never takes a blob out from under them.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from layerfreeze.errors import ModelNotFound
from layerfreeze.storage.blobs import BlobStore
from layerfreeze.storage.jobs import JobStore


@dataclass(frozen=True, slots=True)
class ModelFile:
    path: str
    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class ModelRecord:
    id: str
    tenant: str
    sha256: str
    bytes: int
    format: str
    created_at: float
    summary: dict[str, Any]
    files: tuple[ModelFile, ...] = field(default_factory=tuple)
    seq: int = 0

    @property
    def filename(self) -> str:
        return self.files[0].path if self.files else "model"


_COLUMNS = "seq, id, tenant, sha256, bytes, format, created_at, summary"

_REFS = ("SELECT (SELECT COUNT(*) FROM model_files WHERE sha256=?) + "
         "(SELECT COUNT(*) FROM jobs WHERE input_sha256=? AND holds_blob=1) + "
         "(SELECT COUNT(*) FROM job_files f JOIN jobs j ON j.id=f.job_id "
         "WHERE f.sha256=? AND j.holds_blob=1)")


class ModelStore:
    """Model records and blob references, over the JobStore's connection and lock."""

    def __init__(self, jobs: JobStore, blobs: BlobStore) -> None:
        self.jobs = jobs
        self.blobs = blobs
        self._pins: Counter[str] = Counter()

    # -- blobs ---------------------------------------------------------------------------------------

    def adopt_blob(self, tmp: Any, sha256: str, size: int) -> None:
        """Store a complete upload as the blob ``sha256`` (once) and pin it until ``unpin``."""
        with self.jobs._lock:
            self._pins[sha256] += 1
        try:
            self.blobs.content.adopt(tmp, sha256)
            with self.jobs._tx() as db:
                db.execute("INSERT OR IGNORE INTO blobs (sha256, bytes, created_at) VALUES (?, ?, ?)",
                           (sha256, size, time.time()))
        except BaseException:
            self.unpin(sha256)
            raise

    def pin(self, sha256: str, blob: bool = True) -> None:
        """Keep a stored blob while a job that will hold it is being recorded. ``blob=False``: a model
        directory's listing digest, which names no blob (its files are held by the model)."""
        with self.jobs._lock:
            self._pins[sha256] += 1
        if blob and not self.blobs.content.exists(sha256):
            self.unpin(sha256)
            raise ModelNotFound("the model's file is gone")

    def unpin(self, sha256: str) -> None:
        with self.jobs._lock:
            self._pins[sha256] -= 1
            if self._pins[sha256] <= 0:
                del self._pins[sha256]
        self.release(sha256)

    def release(self, sha256: str) -> bool:
        """Delete the blob if nothing references or pins it; True when it was deleted."""
        with self.jobs._tx() as db:
            if self._pins.get(sha256):
                return False
            (refs,) = db.execute(_REFS, (sha256, sha256, sha256)).fetchone()
            if refs:
                return False
            db.execute("DELETE FROM blobs WHERE sha256=?", (sha256,))
            self.blobs.content.remove(sha256)  # under the lock: a concurrent adopt waits for it
        return True

    def release_all(self, shas: Any) -> None:
        """``release`` each blob (a job's input, or every file of its model directory)."""
        for sha in dict.fromkeys(shas):
            self.release(sha)

    def collect(self) -> int:
        """At start-up: drop blob files without a record, records without a file, unreferenced blobs."""
        files = self.blobs.content.shas()
        rows = {r[0] for r in self.jobs._query("SELECT sha256 FROM blobs")}
        for sha in files - rows:
            self.blobs.content.remove(sha)
        with self.jobs._tx() as db:
            for sha in rows - files:
                db.execute("DELETE FROM blobs WHERE sha256=?", (sha,))
        removed = len(files - rows)
        for sha in rows & files:
            removed += self.release(sha)
        return removed

    def migrate_files(self) -> int:
        """Schema 2 keeps uploads as blobs: move every ``jobs/<id>/input`` of an older data directory
        into the content store (idempotent: a crash midway resumes at the next start)."""
        moved = 0
        for job_dir in self.blobs.jobs_dir.iterdir():
            src = job_dir / "input"
            if not src.is_file():
                continue
            rows = self.jobs._query("SELECT input_sha256, input_bytes FROM jobs WHERE id=?", (job_dir.name,))
            if not rows:
                continue  # an orphan: the sweep removes it
            sha, size = rows[0]
            tmp = self.blobs.temp_path("migrate")
            shutil.move(src, tmp)
            self.adopt_blob(tmp, sha, size)
            with self.jobs._lock:
                self._pins[sha] -= 1
                if self._pins[sha] <= 0:
                    del self._pins[sha]
            moved += 1
        return moved

    # -- models --------------------------------------------------------------------------------------

    def find(self, tenant: str, sha256: str) -> ModelRecord | None:
        rows = self.jobs._query(f"SELECT {_COLUMNS} FROM models WHERE tenant=? AND sha256=?",
                                (tenant, sha256))
        return self._with_files(rows[0]) if rows else None

    def create(self, model: ModelRecord) -> tuple[ModelRecord, bool]:
        """Record a model whose files are stored; (the model, True) or, when the tenant already has
        this content, (the existing model, False)."""
        with self.jobs._tx() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM models WHERE tenant=? AND sha256=?",
                             (model.tenant, model.sha256)).fetchone()
            if row is None:
                cur = db.execute(
                    "INSERT INTO models (id, tenant, sha256, bytes, format, created_at, summary) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (model.id, model.tenant, model.sha256, model.bytes, model.format, model.created_at,
                     json.dumps(model.summary)))
                db.executemany(
                    "INSERT INTO model_files (model_id, idx, path, bytes, sha256) VALUES (?, ?, ?, ?, ?)",
                    [(model.id, i, f.path, f.bytes, f.sha256) for i, f in enumerate(model.files)])
                return replace(model, seq=cur.lastrowid or 0), True
        existing = self._with_files(row)
        return existing, False

    def get(self, model_id: str, tenant: str | None = None) -> ModelRecord:
        rows = self.jobs._query(f"SELECT {_COLUMNS} FROM models WHERE id=?", (model_id,))
        if not rows or (tenant is not None and rows[0][2] != tenant):
            raise ModelNotFound(f"no model {model_id}", model_id=model_id)
        return self._with_files(rows[0])

    def list(self, tenant: str | None, limit: int, before_seq: int | None,
             sha256: str | None = None) -> list[ModelRecord]:
        where, args = [], []
        for column, value in (("tenant=?", tenant), ("seq<?", before_seq), ("sha256=?", sha256)):
            if value is not None:
                where.append(column)
                args.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.jobs._query(f"SELECT {_COLUMNS} FROM models {clause} ORDER BY seq DESC LIMIT ?",
                                (*args, limit))
        return [self._with_files(r) for r in rows]

    def delete(self, model_id: str, tenant: str | None) -> ModelRecord:
        """Remove the model's record; its blobs stay while jobs hold them (the caller releases them)."""
        with self.jobs._tx() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM models WHERE id=?", (model_id,)).fetchone()
            if row is None or (tenant is not None and row[2] != tenant):
                raise ModelNotFound(f"no model {model_id}", model_id=model_id)
            files = db.execute("SELECT path, bytes, sha256 FROM model_files WHERE model_id=? ORDER BY idx",
                               (model_id,)).fetchall()
            db.execute("DELETE FROM model_files WHERE model_id=?", (model_id,))
            db.execute("DELETE FROM models WHERE id=?", (model_id,))
        return _record(row, files)

    def ids(self) -> set[str]:
        return {r[0] for r in self.jobs._query("SELECT id FROM models")}

    def _with_files(self, row: tuple[Any, ...]) -> ModelRecord:
        files = self.jobs._query("SELECT path, bytes, sha256 FROM model_files WHERE model_id=? ORDER BY idx",
                                 (row[1],))
        return _record(row, files)


def _record(row: tuple[Any, ...], files: list[tuple[Any, ...]]) -> ModelRecord:
    seq, id_, tenant, sha, size, fmt, created, summary = row
    return ModelRecord(id=id_, tenant=tenant, sha256=sha, bytes=size, format=fmt, created_at=created,
                       summary=json.loads(summary), files=tuple(ModelFile(*f) for f in files), seq=seq)
