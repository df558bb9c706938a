"""The record database: the SQLite file in the data directory (the default) or PostgreSQL
(``LAYERFREEZE_DATABASE_URL``), behind one small interface that the stores share.

    db = Database.open(data_dir / "jobs.sqlite3", url)
    with db.tx() as conn:                       # one write transaction; StoreError on a database error
        conn.execute(text("UPDATE ..."), {...})
    rows = db.query("SELECT ...", {...})        # one read

The SQL is SQLAlchemy Core ``text()`` that both dialects accept (``ON CONFLICT``, ``RETURNING``; flags are
integers 0/1 on both). ``for_update``/``for_share`` are row-lock suffixes: empty on SQLite, where
``BEGIN IMMEDIATE`` already serializes every write transaction.

SQLite: one connection shared by the event loop's threads and the worker supervisors, serialized by a lock
(every transaction is short); WAL; ``synchronous=FULL`` for durable commits, ``NORMAL`` for those a crash
may undo harmlessly. PostgreSQL: a connection pool (several processes and hosts share the database), READ
COMMITTED transactions whose state changes are single conditional statements or take row locks first; a
commit that need not be durable sets ``synchronous_commit`` off for itself.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from layerfreeze.errors import StoreError

# PostgreSQL pool: the API's threads (anyio's default limiter: 40) and the worker supervisors share it;
# past pool_size + max_overflow a request waits up to POOL_TIMEOUT_S, then answers 503 (StoreError).
POOL_SIZE = 8
MAX_OVERFLOW = 24
POOL_TIMEOUT_S = 10.0

POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def is_postgres_url(url: str) -> bool:
    return urlsplit(url).scheme in POSTGRES_SCHEMES


def sqlalchemy_url(url: str) -> str:
    """``postgresql://...`` as SQLAlchemy names psycopg 3 (its default driver for the bare scheme is
    psycopg2)."""
    scheme, sep, rest = url.partition("://")
    if scheme not in POSTGRES_SCHEMES or not sep:
        raise StoreError(f"not a PostgreSQL URL: {redact(url)}")
    return f"postgresql+psycopg://{rest}"


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def storable(value: str) -> bool:
    """Whether a text can be stored, so looked up: PostgreSQL's text holds no NUL character (a record
    named with one cannot exist; ids from a request may carry one)."""
    return "\x00" not in value


def store_error(what: str, exc: BaseException) -> StoreError:
    """``what: <the driver's first line>`` (SQLAlchemy's own text adds the SQL and its parameters)."""
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return StoreError(f"{what}: {detail[0] if detail else type(exc).__name__}")


class Database:
    """An engine with the transaction discipline of its dialect (see the module's doc)."""

    def __init__(self, engine: Engine, description: str) -> None:
        self.engine = engine
        self.description = description
        self.dialect = engine.dialect.name
        self.sqlite = self.dialect == "sqlite"
        self.for_update = "" if self.sqlite else " FOR UPDATE"
        self.for_share = "" if self.sqlite else " FOR SHARE"
        self._lock = threading.Lock()
        self._conn: Connection | None = None

    @classmethod
    def open(cls, sqlite_path: Path, url: str = "") -> Database:
        """SQLite at ``sqlite_path`` when ``url`` is empty, else the PostgreSQL database at ``url``."""
        return cls.postgres(url) if url else cls.sqlite_file(sqlite_path)

    @classmethod
    def sqlite_file(cls, path: Path) -> Database:
        engine = create_engine(
            f"sqlite:///{Path(path)}", poolclass=StaticPool,
            connect_args={"check_same_thread": False, "timeout": 10.0, "isolation_level": None})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we say BEGIN IMMEDIATE / COMMIT ourselves
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut

        db = cls(engine, f"the job database at {path}")
        try:
            db._conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as exc:
            raise store_error(f"cannot open {db.description}", exc) from exc
        return db

    @classmethod
    def postgres(cls, url: str) -> Database:
        try:
            engine = create_engine(sqlalchemy_url(url), pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW,
                                   pool_timeout=POOL_TIMEOUT_S, pool_pre_ping=True, pool_recycle=1800,
                                   connect_args={"connect_timeout": 10,
                                                 "application_name": "layerfreeze"})
        except ImportError as exc:
            raise StoreError("LAYERFREEZE_DATABASE_URL names PostgreSQL, which needs the 'distributed' "
                             f"extra (pip install 'layerfreeze[distributed]'): {exc}") from exc
        except SQLAlchemyError as exc:
            raise store_error(f"cannot use the database {redact(url)}", exc) from exc
        return cls(engine, f"the database {redact(url)}")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self.engine.dispose()

    # -- use -----------------------------------------------------------------------------------------

    @contextmanager
    def tx(self, durable: bool = True) -> Iterator[Connection]:
        """One write transaction. ``durable=False`` skips waiting for the log flush, for changes a crash
        may undo harmlessly; the next durable commit persists them too."""
        if self.sqlite:
            with self._lock:
                conn = self._connection()
                try:
                    conn.exec_driver_sql(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    try:
                        yield conn
                    except BaseException:
                        conn.exec_driver_sql("ROLLBACK")
                        raise
                    conn.exec_driver_sql("COMMIT")
                except SQLAlchemyError as exc:
                    raise store_error("job database error", exc) from exc
            return
        try:
            with self.engine.begin() as conn:
                if not durable:
                    conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                yield conn
        except SQLAlchemyError as exc:
            raise store_error("job database error", exc) from exc

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """The rows of one read (autocommit on SQLite, a short transaction on PostgreSQL)."""
        try:
            if self.sqlite:
                with self._lock:
                    return [tuple(r) for r in self._connection().execute(text(sql), params or {})]
            with self.engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(sql), params or {})]
        except SQLAlchemyError as exc:
            raise store_error("job database error", exc) from exc

    def run_script(self, script: str) -> None:
        """SQLite only: statements separated by ``;`` in one transaction (schema set-up)."""
        with self.tx() as conn:
            for statement in script.split(";"):
                if statement.strip():
                    conn.exec_driver_sql(statement)

    def _connection(self) -> Connection:
        if self._conn is None:
            raise StoreError(f"{self.description} is closed")
        return self._conn
