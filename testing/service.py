"""A real ``python -m layerfreeze.server`` process on 127.0.0.1, for tests, the stress suites and benches.

    with Service(data_dir, {"workers": "1"}) as svc:   # a free port; ready once /readyz answers 200
        httpx.get(svc.url + "/healthz")
        svc.kill()                                      # SIGKILL, as a crash would
        svc.start()                                     # same data directory, same port

Settings go through the environment, as an operator sets them: ``{"workers": "1"}`` and
``{"LAYERFREEZE_WORKERS": "1"}`` mean the same. A service that names no ``database_url`` gets a fresh
database from ``database_source`` when one is set (the tests' ``--database=postgresql``).
"""

from __future__ import annotations

import contextlib
import io
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import httpx

from testing import child_env
from testing.procs import descendants, end_session, pool_workers, rss_mib

# Where services that name no database keep their records: None = the SQLite file of their data directory;
# else a function that makes a fresh database and returns its URL (the tests' --database=postgresql).
database_source: Callable[[], str] | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def setting_name(key: str) -> str:
    return key if key.startswith("LAYERFREEZE_") else f"LAYERFREEZE_{key.upper()}"


class Service:
    """One service process; ``start()`` again after ``stop()``/``kill()`` keeps its data directory and
    port. It runs in its own session, so that stopping it also ends workers a crash left behind."""

    def __init__(self, data_dir: Path, settings: dict[str, str] | None = None, *,
                 env: dict[str, str] | None = None, port: int | None = None, log: Path | None = None,
                 command: list[str] | None = None, nofile: int | None = None) -> None:
        """``command``: how to start it (default ``python -m layerfreeze.server``); it may name
        ``{port}``, which is filled in. ``nofile``: a file descriptor limit for the process, as a small
        host has."""
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = {setting_name(k): str(v) for k, v in (settings or {}).items()}
        if "LAYERFREEZE_DATABASE_URL" not in self.settings and database_source is not None:
            self.settings["LAYERFREEZE_DATABASE_URL"] = database_source()  # its own, kept across restarts
        self.env = {**(env if env is not None else child_env()), **self.settings,
                    "LAYERFREEZE_HOST": "127.0.0.1", "LAYERFREEZE_PORT": str(self.port),
                    "LAYERFREEZE_DATA_DIR": str(self.data_dir)}
        self.log = log or self.data_dir.parent / f"server-{self.port}.log"
        self.command = [a.replace("{port}", str(self.port))
                        for a in command or [sys.executable, "-m", "layerfreeze.server"]]
        self.nofile = nofile
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return self.url

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0, *, wait_ready: bool = True) -> Service:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         preexec_fn=self._limit_fds if self.nofile else None)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def _limit_fds(self) -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"the service was not ready after {timeout} s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Send ``sig`` (SIGTERM: a graceful stop; SIGKILL: a crash), wait, then end whatever is left of
        its session (workers orphaned by a crash must not keep the port or the data directory busy)."""
        if self.proc is None:
            return None
        code, self.proc = end_session(self.proc, sig, timeout), None
        return code

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (its workers go with it)."""
        self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- use -------------------------------------------------------------------------------------------
    def client(self, token: str | None = None, timeout: float = 60) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def warm_up(self) -> None:
        """One small job per worker, so that first-request imports do not count against timing checks."""
        import torch

        buf = io.BytesIO()
        torch.save(torch.nn.Linear(2, 2).state_dict(), buf)
        with self.client(timeout=120) as client:
            for _ in range(int(self.settings.get("LAYERFREEZE_WORKERS", "2"))):
                r = client.post("/v1/jobs", params={"wait": 60}, data={"spec": "{}"},
                                files={"model": ("warm.pt", buf.getvalue())})
                r.raise_for_status()

    # -- inspection ------------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self.proc is not None, "the service is not running"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def worker_pids(self) -> list[int]:
        """The worker pool's processes."""
        return pool_workers(self.pid)

    def rss_mib(self) -> dict[int, float]:
        """Resident memory of the server and of every process below it."""
        return {pid: rss_mib(pid) for pid in [self.pid, *descendants(self.pid)]}

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


FINISHED = ("succeeded", "failed")


def wait_for(client: httpx.Client, job_id: str, timeout: float = 60,
             until: Collection[str] = FINISHED) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{id}`` until the job's status is one of ``until``; returns the job."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
        time.sleep(0.02)


@contextlib.contextmanager
def running_service(root: Path, env: dict[str, str] | None = None, **settings: str) -> Iterator[str]:
    """A service with its data in ``root / "data"`` and its log in ``root / "server.log"``; yields its
    URL once ready and stops it on exit. ``settings`` by lower-case name (``workers="1"``)."""
    with Service(root / "data", settings, env=env, log=root / "server.log") as svc:
        yield svc.url
