"""The records' schema on both dialects: ``prepare(db)`` brings a database up to date when a store opens it.

SQLite (the data directory's ``jobs.sqlite3``) keeps its own scheme, so that every data directory ever
written keeps opening without Alembic: ``PRAGMA user_version`` 0/1 (jobs only) is migrated to 2 in one
transaction; tables added later without a change an older release would mind (``pins``, ``job_files``)
are created ``IF NOT EXISTS``. PostgreSQL's schema is the Alembic history in ``storage/migrations`` (the
same tables), upgraded to its head under an advisory lock, so that replicas and workers starting together
take turns.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from layerfreeze.errors import StoreError
from layerfreeze.storage.db import Database, store_error

log = logging.getLogger("layerfreeze.storage")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock key of the schema upgrade: any constant; "layerfrz" in ASCII
ADVISORY_LOCK_KEY = 0x6C61796572667A

SQLITE_SCHEMA = """
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
SQLITE_VERSION = 3
SQLITE_MIGRATE_TO_2 = """
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
# one process of many does at a time. (PostgreSQL: revision 0002.)
SQLITE_MIGRATE_TO_3 = """
ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN dispatched_at REAL;
CREATE TABLE IF NOT EXISTS chores (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    until       REAL NOT NULL
);
"""
SQLITE_MIGRATIONS = ((2, SQLITE_MIGRATE_TO_2), (3, SQLITE_MIGRATE_TO_3))

# Tables an older release of schema 2 ignores, created on every open. Pins: blobs in use by a request that
# has not recorded its reference yet, in the database so that every process sees them. job_files: the files
# of the model directory a job freezes, each a blob the job holds as a single-file job holds its input
# (while jobs.holds_blob), so deleting the model never breaks the job's downloads. (PostgreSQL: 0003.)
SQLITE_ADDED_TABLES = """
CREATE TABLE IF NOT EXISTS pins (
    sha256      TEXT NOT NULL,
    holder      TEXT NOT NULL,
    n           INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (sha256, holder)
);
CREATE TABLE IF NOT EXISTS job_files (
    job_id      TEXT NOT NULL,
    path        TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    PRIMARY KEY (job_id, path)
);
CREATE INDEX IF NOT EXISTS job_files_sha256 ON job_files (sha256);
"""


def prepare(db: Database) -> None:
    """Bring ``db`` up to this release's schema (files of an older data directory move later:
    ``storage.models.ModelStore.migrate_files``)."""
    if db.sqlite:
        _prepare_sqlite(db)
    else:
        upgrade(db)


def _prepare_sqlite(db: Database) -> None:
    db.run_script(SQLITE_SCHEMA)
    ((version,),) = db.query("PRAGMA user_version")
    if version > SQLITE_VERSION:
        raise StoreError(f"the job database has schema version {version}; this release reads up to "
                         f"{SQLITE_VERSION}")
    if version < SQLITE_VERSION:
        with db.tx() as conn:  # one transaction; the version read again under its lock, since another
            # process sharing the file may have migrated it meanwhile
            (version,) = conn.exec_driver_sql("PRAGMA user_version").fetchone() or (0,)
            for target, script in SQLITE_MIGRATIONS:
                if version < target:
                    for statement in script.split(";"):
                        if statement.strip():
                            conn.exec_driver_sql(statement)
            conn.exec_driver_sql(f"PRAGMA user_version={SQLITE_VERSION}")
    db.run_script(SQLITE_ADDED_TABLES)


def upgrade(db: Database) -> str:
    """PostgreSQL: Alembic ``upgrade head`` in one transaction under an advisory lock (concurrent starts
    wait for the first, then find nothing to do). Returns the schema's revision."""
    try:
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext
    except ImportError as exc:
        raise StoreError("PostgreSQL needs the 'distributed' extra (pip install 'layerfreeze[distributed]'): "
                         f"{exc}") from exc
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with db.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            before = MigrationContext.configure(conn).get_current_revision()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            after = MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise store_error(f"cannot upgrade the schema of {db.description}", exc) from exc
    if before != after:
        log.info("database schema upgraded", extra={"from": before, "to": after})
    return after or ""
