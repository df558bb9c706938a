"""``layerfreeze migrate``: the schema of a PostgreSQL database by Alembic, safe when several processes
start at once (advisory lock), and the SQLite file of a data directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from layerfreeze.storage.db import Database
from layerfreeze.storage.jobs import JobStore
from layerfreeze.storage.schema import MIGRATIONS

from testing.service import free_port

MIGRATE = [sys.executable, "-m", "layerfreeze.cli.main", "migrate"]
# The newest revision: the migrations are numbered 0001, 0002, ... in storage/migrations/versions.
HEAD = max(p.name[:4] for p in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def test_concurrent_migrations_of_one_database(postgres_url: str, subprocess_env: dict[str, str]) -> None:
    env = {**subprocess_env, "LAYERFREEZE_DATABASE_URL": postgres_url}
    procs = [subprocess.Popen(MIGRATE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert f"schema at revision {HEAD}" in out and ":***@" in out  # the password is not shown
    db = Database.postgres(postgres_url)
    try:
        assert db.query("SELECT version_num FROM alembic_version") == [(HEAD,)]
        tables = {r[0] for r in db.query("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        assert {"jobs", "blobs", "models", "model_files", "idempotency", "pins", "heartbeat",
                "job_files"} <= tables
    finally:
        db.close()
    JobStore(Path("unused"), postgres_url).close()  # a store opens the upgraded database as it is


def test_migrate_refuses_other_databases_and_takes_sqlite(tmp_path: Path,
                                                         subprocess_env: dict[str, str]) -> None:
    env = {**subprocess_env, "LAYERFREEZE_DATABASE_URL": "mysql://root:secret@db/x"}
    done = subprocess.run(MIGRATE, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 78 and "LAYERFREEZE_DATABASE_URL" in done.stderr and "secret" not in done.stderr
    env = {**subprocess_env, "LAYERFREEZE_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(MIGRATE, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "jobs.sqlite3").is_file()


def test_both_dialects_have_the_same_tables_and_columns(tmp_path: Path, postgres_url: str) -> None:
    """The Alembic history and the SQLite statements describe one schema (storage.schema keeps them in
    step): the stores' SQL is the same on both."""
    sqlite = JobStore(tmp_path / "jobs.sqlite3")
    postgres = JobStore(tmp_path / "unused", postgres_url)
    try:
        tables = [r[0] for r in sqlite.db.query("SELECT name FROM sqlite_master WHERE type='table' "
                                                "AND name NOT LIKE 'sqlite_%'")]
        lite = {t: {r[1] for r in sqlite.db.query(f"PRAGMA table_info({t})")} for t in tables}
        pg: dict[str, set[str]] = {}
        columns = postgres.db.query("SELECT table_name, column_name FROM information_schema.columns "
                                    "WHERE table_schema='public' AND table_name <> 'alembic_version'")
        for table, column in columns:
            pg.setdefault(table, set()).add(column)
        assert lite == pg
    finally:
        sqlite.close()
        postgres.close()


def test_serve_with_an_unreachable_database_stops_with_one_line(tmp_path: Path,
                                                                subprocess_env: dict[str, str]) -> None:
    url = f"postgresql://layerfreeze:hunter2@127.0.0.1:{free_port()}/records"  # nothing listens there
    env = {**subprocess_env, "LAYERFREEZE_DATABASE_URL": url, "LAYERFREEZE_DATA_DIR": str(tmp_path / "data"),
           "LAYERFREEZE_PORT": str(free_port())}
    done = subprocess.run([sys.executable, "-m", "layerfreeze.cli.main", "serve"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 12
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot upgrade the schema of the database" in lines[0]
    assert "layerfreeze:***@127.0.0.1" in lines[0] and "hunter2" not in done.stderr
