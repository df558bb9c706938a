"""Start and stop a real layerfreeze service process on 127.0.0.1 for the suites.

    with Service(data_dir, env) as svc:    # python -m layerfreeze.server on a free port
        httpx.get(svc.url + "/healthz")
        svc.kill()                          # SIGKILL, as a crash would
        svc.start()                         # same data dir, same port

Settings go through the environment (``LAYERFREEZE_*``), as an operator would set them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SERVICE_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This checkout's code first on the path, plus settings."""
    env = dict(os.environ)
    paths = [
        str(SERVICE_ROOT / "service"),
        str(SERVICE_ROOT / "clients" / "python"),
        str(SERVICE_ROOT / "tests"),
        str(SERVICE_ROOT),
    ]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Service:
    def __init__(
        self,
        data_dir: Path,
        settings: dict[str, str] | None = None,
        *,
        port: int | None = None,
        log: Path | None = None,
        nofile: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = {
            "LAYERFREEZE_DATA_DIR": str(self.data_dir),
            "LAYERFREEZE_WORKERS": "2",
            "LAYERFREEZE_LOG_LEVEL": "WARNING",
            **(settings or {}),
        }
        self.log = log or self.data_dir.parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.nofile = nofile  # a file descriptor limit for the server process (as a small host has)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0, *, wait_ready: bool = True) -> Service:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "layerfreeze.server", "--host", "127.0.0.1", "--port", str(self.port)],
                env=child_env(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self._limit_fds if self.nofile else None,
            )
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
                raise RuntimeError(f"service exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"service not ready after {timeout}s: {self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL of the whole process group if it lingers."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
        self._kill_group()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL the server process only (its workers see their parent vanish)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._kill_group()  # no orphan may keep the port or the data dir busy
        self.proc = None

    def _kill_group(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def warm_up(self) -> None:
        """One small job per worker, so first-request imports do not count against timing checks."""
        import io

        import torch

        buf = io.BytesIO()
        torch.save(torch.nn.Linear(2, 2).state_dict(), buf)
        with httpx.Client(base_url=self.url, timeout=120) as client:
            for _ in range(int(self.settings.get("LAYERFREEZE_WORKERS", "2"))):
                r = client.post(
                    "/v1/jobs",
                    params={"wait": 60},
                    data={"spec": "{}"},
                    files={"model": ("warm.pt", buf.getvalue())},
                )
                r.raise_for_status()

    # -- inspection ----------------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        """Descendant processes of the server (its worker pool)."""
        return descendants(self.pid)

    def rss_mib(self) -> dict[int, float]:
        return {pid: rss_mib(pid) for pid in [self.pid, *self.worker_pids()]}

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
