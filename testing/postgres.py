"""A real PostgreSQL server on 127.0.0.1 for tests and benches, from the distribution's server binaries.

    with PostgresCluster() as pg:          # initdb into a temporary directory, start on a free port
        url = pg.create_database()         # postgresql://layerfreeze:...@127.0.0.1:PORT/test_1 (fresh)
        ...
        pg.drop_database(url)

The binaries are Debian's (``/usr/lib/postgresql/<newest version>/bin``; ``LAYERFREEZE_TEST_PG_BINDIR``
names another directory, and ``initdb`` on ``PATH`` is the last resort). PostgreSQL refuses to run as
root: under root the cluster belongs to the ``postgres`` system user (the Debian package creates it).
The server listens on 127.0.0.1 only (no Unix socket), with password authentication, and without fsync:
a test cluster trades crash safety for speed. Start and stop are bounded in time.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from testing.service import free_port

USER = "layerfreeze"
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",  # every service process has a pool (storage.db.POOL_SIZE + MAX_OVERFLOW)
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
}


def find_bindir() -> Path | None:
    """The newest installed server's bin directory (it has initdb and postgres), or None."""
    override = os.environ.get("LAYERFREEZE_TEST_PG_BINDIR")
    if override:
        return Path(override) if (Path(override) / "initdb").is_file() else None

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", p.parent.parent.name)) or (0,)

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class PostgresCluster:
    """One initdb'd cluster in a temporary directory and its ``postgres`` process."""

    def __init__(self, bindir: Path | None = None, port: int | None = None) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise FileNotFoundError("no PostgreSQL server binaries (initdb): install the 'postgresql' "
                                    "package")
        self.bindir = found
        self.port = port or free_port()
        self.password = secrets.token_hex(12)
        self.root = Path(tempfile.mkdtemp(prefix="layerfreeze-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:  # initdb and postgres refuse root
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        self._count = 0

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> PostgresCluster:
        deadline = time.monotonic() + timeout
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as:
            os.chown(pwfile, self._as["user"], self._as["group"])
        subprocess.run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER,
                        "--pwfile", str(pwfile), "--auth", "scram-sha-256", "-E", "UTF8", "--locale", "C",
                        "--no-sync"],
                       check=True, capture_output=True, timeout=max(1.0, deadline - time.monotonic()),
                       cwd=self.root, **self._as)
        pwfile.unlink()
        options = [arg for k, v in SERVER_SETTINGS.items() for arg in ("-c", f"{k}={v}")]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), *options],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True, **self._as)
        self._wait_ready(deadline)
        return self

    def _wait_ready(self, deadline: float) -> None:
        import psycopg

        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                last = exc
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"postgres was not ready in time ({last}):\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT: running transactions are rolled back), SIGKILL past ``timeout``;
        the cluster's directory goes."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases -------------------------------------------------------------------------------------

    def url(self, database: str) -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; its URL."""
        self._count += 1
        name = f"{prefix}_{os.getpid()}_{self._count}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.encode())

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""
