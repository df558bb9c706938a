"""A real service process on 127.0.0.1 (free port, temporary data directory) for the service tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fixtures.server import free_port


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class Server:
    """One ``python -m layerfreeze.server`` process; ``restart()`` keeps its data directory and port."""

    def __init__(self, data_dir: Path, env: dict[str, str], settings: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, **{f"LAYERFREEZE_{k.upper()}": str(v) for k, v in settings.items()},
                    "LAYERFREEZE_DATA_DIR": str(data_dir), "LAYERFREEZE_PORT": str(self.port),
                    "LAYERFREEZE_HOST": "127.0.0.1"}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 60) -> None:
        logf = open(self.log, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen([sys.executable, "-m", "layerfreeze.server"], env=self.env,
                                     stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"{self.base_url}/readyz", timeout=2)
                if r.status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"server not ready in {timeout}s: {self.log.read_text()[-3000:]}")

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        return [p for p in children(self.proc.pid) if "spawn_main" in cmdline(p)]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        workers = self.worker_pids()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in workers:  # after a SIGKILL of the server its workers are orphans: end them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc = None

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60)


@pytest.fixture
def make_server(tmp_path: Path, subprocess_env: dict[str, str]) -> Iterator:
    servers: list[Server] = []

    def make(**settings: str) -> Server:
        data = tmp_path / f"data{len(servers)}"
        server = Server(data, subprocess_env, {"workers": "2", **settings})
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, subprocess_env: dict[str, str]) -> Iterator[Server]:
    """A shared server for tests that do not disturb it."""
    data = tmp_path_factory.mktemp("service") / "data"
    srv = Server(data, subprocess_env, {"workers": "2"})
    srv.start()
    yield srv
    srv.stop()
