"""Stored models and the blobs behind them, in the record database (schema: storage.schema).

A blob (an uploaded file, by sha256) is referenced by every model file that has its content and by every
job that holds it as its input or as a file of its model directory (``job_files``), while
``jobs.holds_blob`` (succeeded jobs with an artifact, and jobs not yet finished). ``release`` deletes
a blob when nothing references it any more; uploads being read are ``pin``-ned meanwhile, so a
concurrent deletion never takes a blob out from under them.

Pins are rows (``pins``: sha256, holder = this process as ``process_holder`` names it, count), so
that a release in any process that shares the database sees them. ``adopt_blob`` and ``pin`` lock the
blob's row while they pin it and ``release`` locks it while it counts references and deletes, so on
PostgreSQL the two never interleave; a blob's file is published only once its row and pin are committed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import text

from layerfreeze.errors import ModelNotFound
from layerfreeze.storage.blobs import BlobStore
from layerfreeze.storage.db import storable
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

_REFS = ("SELECT (SELECT COUNT(*) FROM model_files WHERE sha256=:sha) + "
         "(SELECT COUNT(*) FROM jobs WHERE input_sha256=:sha AND holds_blob=1) + "
         "(SELECT COUNT(*) FROM job_files f JOIN jobs j ON j.id=f.job_id "
         "WHERE f.sha256=:sha AND j.holds_blob=1) + "
         "(SELECT COUNT(*) FROM pins WHERE sha256=:sha)")

# Pins older than this belong to a process that died holding them (a pin lasts while one request records
# what it received); ``expire_pins`` drops them.
PIN_MAX_AGE_S = 86400


def _mtime(path: Any) -> float:
    try:
        return float(path.stat().st_mtime)
    except OSError:
        return float("inf")


class ModelStore:
    """Model records and blob references, in the JobStore's database."""

    def __init__(self, jobs: JobStore, blobs: BlobStore) -> None:
        self.jobs = jobs
        self.db = jobs.db
        self.blobs = blobs
        self.holder = process_holder()

    # -- blobs ---------------------------------------------------------------------------------------

    def adopt_blob(self, tmp: Any, sha256: str, size: int) -> None:
        """Store a complete upload as the blob ``sha256`` (once) and pin it until ``unpin``."""
        try:
            with self.db.tx() as db:
                # ON CONFLICT DO UPDATE locks an existing row: a concurrent release waits, then sees the pin
                db.execute(text("INSERT INTO blobs (sha256, bytes, created_at) VALUES (:sha, :bytes, :now) "
                                "ON CONFLICT (sha256) DO UPDATE SET bytes=excluded.bytes"),
                           {"sha": sha256, "bytes": size, "now": time.time()})
                self._add_pin(db, sha256)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        try:
            self.blobs.content.adopt(tmp, sha256)
        except BaseException:
            self.unpin(sha256)
            raise

    def pin(self, sha256: str, blob: bool = True) -> None:
        """Keep a stored blob while a job that will hold it is being recorded. ``blob=False``: a model
        directory's listing digest, which names no blob (its files are held by the model)."""
        with self.db.tx(durable=False) as db:
            if blob and db.execute(text(f"SELECT sha256 FROM blobs WHERE sha256=:sha{self.db.for_share}"),
                                   {"sha": sha256}).fetchone() is None:
                raise ModelNotFound("the model's file is gone")
            self._add_pin(db, sha256)
        if blob and not self.blobs.content.exists(sha256):
            self.unpin(sha256)
            raise ModelNotFound("the model's file is gone")

    def _add_pin(self, db: Any, sha256: str) -> None:
        db.execute(text("INSERT INTO pins (sha256, holder, n, created_at) VALUES (:sha, :holder, 1, :now) "
                        "ON CONFLICT (sha256, holder) DO UPDATE "
                        "SET n=pins.n + 1, created_at=excluded.created_at"),
                   {"sha": sha256, "holder": self.holder, "now": time.time()})

    def unpin(self, sha256: str) -> None:
        self._drop_pin(sha256)
        self.release(sha256)

    def _drop_pin(self, sha256: str) -> None:
        with self.db.tx(durable=False) as db:
            args = {"sha": sha256, "holder": self.holder}
            db.execute(text("UPDATE pins SET n=n - 1 WHERE sha256=:sha AND holder=:holder"), args)
            db.execute(text("DELETE FROM pins WHERE sha256=:sha AND holder=:holder AND n <= 0"), args)

    def forget_pins(self) -> int:
        """At start-up: drop the pins of dead processes. On SQLite this service is the only process (the
        data directory's lock): all of them. On a shared database, those of this host whose process is
        gone, or is this one's pid in an earlier life (a container's pid 1); other hosts' pins age out
        (``expire_pins``)."""
        if self.db.sqlite:
            with self.db.tx() as db:
                return db.execute(text("DELETE FROM pins")).rowcount
        host = socket.gethostname()
        dead = [holder for (holder,) in self.db.query("SELECT DISTINCT holder FROM pins")
                if holder != self.holder and _dead_here(holder, host)]
        with self.db.tx() as db:
            return sum(db.execute(text("DELETE FROM pins WHERE holder=:holder"), {"holder": h}).rowcount
                       for h in dead)

    def expire_pins(self, before: float) -> int:
        with self.db.tx() as db:
            return db.execute(text("DELETE FROM pins WHERE created_at < :before"),
                              {"before": before}).rowcount

    def release(self, sha256: str) -> bool:
        """Delete the blob if nothing references or pins it; True when it was deleted."""
        with self.db.tx() as db:
            row = db.execute(text(f"SELECT sha256 FROM blobs WHERE sha256=:sha{self.db.for_update}"),
                             {"sha": sha256}).fetchone()
            if row is None:  # no blob (a directory's listing digest), or one being recorded by another
                return False  # process that we cannot lock yet: nothing of ours to delete
            if db.execute(text(_REFS), {"sha": sha256}).scalar_one():
                return False
            db.execute(text("DELETE FROM blobs WHERE sha256=:sha"), {"sha": sha256})
            # in the transaction, the row still locked: an adopt of the same content waits for it
            self.blobs.content.remove(sha256)
        return True

    def release_all(self, shas: Any) -> None:
        """``release`` each blob (a job's input, or every file of its model directory)."""
        for sha in dict.fromkeys(shas):
            self.release(sha)

    def collect(self, older_than: float | None = None) -> int:
        """At start-up: drop blob files without a record, records without a file, unreferenced blobs.
        ``older_than`` (a time; the distributed mode, where another process may have published a file
        and not yet recorded it): a file without a record goes only when untouched since then."""
        files = self.blobs.content.shas()
        rows = {r[0] for r in self.db.query("SELECT sha256 FROM blobs")}
        if older_than is not None:
            files -= {sha for sha in files - rows if _mtime(self.blobs.content.path(sha)) >= older_than}
        for sha in files - rows:
            self.blobs.content.remove(sha)
        with self.db.tx() as db:
            for sha in rows - files:
                db.execute(text("DELETE FROM blobs WHERE sha256=:sha AND NOT EXISTS "
                                "(SELECT 1 FROM pins WHERE pins.sha256=blobs.sha256)"), {"sha": sha})
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
            rows = self.db.query("SELECT input_sha256, input_bytes FROM jobs WHERE id=:id",
                                 {"id": job_dir.name})
            if not rows:
                continue  # an orphan: the sweep removes it
            sha, size = rows[0]
            tmp = self.blobs.temp_path("migrate")
            shutil.move(src, tmp)
            self.adopt_blob(tmp, sha, size)
            self._drop_pin(sha)
            moved += 1
        return moved

    # -- models --------------------------------------------------------------------------------------

    def find(self, tenant: str, sha256: str) -> ModelRecord | None:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM models WHERE tenant=:tenant AND sha256=:sha",
                             {"tenant": tenant, "sha": sha256})
        return self._with_files(rows[0]) if rows else None

    def create(self, model: ModelRecord) -> tuple[ModelRecord, bool]:
        """Record a model whose files are stored; (the model, True) or, when the tenant already has
        this content, (the existing model, False)."""
        with self.db.tx() as db:
            # the unique (tenant, sha256) index decides between concurrent creators of the same content
            seq = db.execute(text(
                "INSERT INTO models (id, tenant, sha256, bytes, format, created_at, summary) "
                "VALUES (:id, :tenant, :sha, :bytes, :format, :created_at, :summary) "
                "ON CONFLICT (tenant, sha256) DO NOTHING RETURNING seq"),
                {"id": model.id, "tenant": model.tenant, "sha": model.sha256, "bytes": model.bytes,
                 "format": model.format, "created_at": model.created_at,
                 "summary": json.dumps(model.summary)}).scalar_one_or_none()
            if seq is not None:
                if model.files:
                    db.execute(text("INSERT INTO model_files (model_id, idx, path, bytes, sha256) "
                                    "VALUES (:model_id, :idx, :path, :bytes, :sha)"),
                               [{"model_id": model.id, "idx": i, "path": f.path, "bytes": f.bytes,
                                 "sha": f.sha256} for i, f in enumerate(model.files)])
                return replace(model, seq=seq), True
            row = db.execute(text(f"SELECT {_COLUMNS} FROM models WHERE tenant=:tenant AND sha256=:sha"),
                             {"tenant": model.tenant, "sha": model.sha256}).one()
            files = db.execute(text("SELECT path, bytes, sha256 FROM model_files WHERE model_id=:id "
                                    "ORDER BY idx"), {"id": row[1]}).fetchall()
        return _record(tuple(row), [tuple(f) for f in files]), False

    def get(self, model_id: str, tenant: str | None = None) -> ModelRecord:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM models WHERE id=:id", {"id": model_id}) \
            if storable(model_id) else []
        if not rows or (tenant is not None and rows[0][2] != tenant):
            raise ModelNotFound(f"no model {model_id}", model_id=model_id)
        return self._with_files(rows[0])

    def list(self, tenant: str | None, limit: int, before_seq: int | None,
             sha256: str | None = None) -> list[ModelRecord]:
        where: list[str] = []
        args: dict[str, Any] = {"limit": limit}
        for column, value in (("tenant", tenant), ("seq", before_seq), ("sha256", sha256)):
            if value is not None:
                where.append(f"{column}{'<' if column == 'seq' else '='}:{column}")
                args[column] = value
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.db.query(f"SELECT {_COLUMNS} FROM models {clause} ORDER BY seq DESC LIMIT :limit", args)
        return [self._with_files(r) for r in rows]

    def delete(self, model_id: str, tenant: str | None) -> ModelRecord:
        """Remove the model's record; its blobs stay while jobs hold them (the caller releases them)."""
        if not storable(model_id):
            raise ModelNotFound(f"no model {model_id}", model_id=model_id)
        with self.db.tx() as db:
            row = db.execute(text(f"SELECT {_COLUMNS} FROM models WHERE id=:id{self.db.for_update}"),
                             {"id": model_id}).fetchone()
            if row is None or (tenant is not None and row[2] != tenant):
                raise ModelNotFound(f"no model {model_id}", model_id=model_id)
            files = db.execute(text("SELECT path, bytes, sha256 FROM model_files WHERE model_id=:id "
                                    "ORDER BY idx"), {"id": model_id}).fetchall()
            db.execute(text("DELETE FROM model_files WHERE model_id=:id"), {"id": model_id})
            db.execute(text("DELETE FROM models WHERE id=:id"), {"id": model_id})
        return _record(tuple(row), [tuple(f) for f in files])

    def ids(self) -> set[str]:
        return {r[0] for r in self.db.query("SELECT id FROM models")}

    def _with_files(self, row: tuple[Any, ...]) -> ModelRecord:
        files = self.db.query("SELECT path, bytes, sha256 FROM model_files WHERE model_id=:id ORDER BY idx",
                              {"id": row[1]})
        return _record(row, files)


_holder: tuple[int, str] | None = None


def process_holder() -> str:
    """This process's name on its pins: ``host:pid:tag`` (the tag tells it from an earlier process that had
    the same pid, as a container's pid 1 has)."""
    global _holder
    if _holder is None or _holder[0] != os.getpid():
        _holder = (os.getpid(), f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}")
    return _holder[1]


def _dead_here(holder: str, host: str) -> bool:
    """Whether the pin holder ``host:pid:tag`` (not this process) was a process of this host that has
    ended."""
    name, _, pid_text = holder.rpartition(":")[0].rpartition(":")
    if name != host or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # an earlier process with our pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _record(row: tuple[Any, ...], files: list[tuple[Any, ...]]) -> ModelRecord:
    seq, id_, tenant, sha, size, fmt, created, summary = row
    return ModelRecord(id=id_, tenant=tenant, sha256=sha, bytes=size, format=fmt, created_at=created,
                       summary=json.loads(summary), files=tuple(ModelFile(*f) for f in files), seq=seq)
