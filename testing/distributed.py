"""The distributed mode for tests and benches: N API replicas and M ``layerfreeze worker`` processes on
127.0.0.1, sharing one data directory, one broker (Redis) and one database (PostgreSQL), behind a
round-robin proxy.

    with PostgresCluster() as pg, distributed_service(tmp, pg.create_database()) as cluster:
        cluster.url                      # the proxy: each new connection goes to the next replica
        cluster.apis[1].url              # one replica
        cluster.workers[0].kill()        # SIGKILL a worker host, as a crash would
        cluster.workers[0].start()

Settings go through the environment as for ``testing.service.Service``; ``{"workers": "1"}`` is each
``layerfreeze worker``'s thread and freeze-process count.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from testing import child_env
from testing.procs import descendants, end_session, pool_workers
from testing.redis import RedisServer
from testing.service import Service, free_port, setting_name

WORKER_COMMAND = [sys.executable, "-c", "import sys; from layerfreeze.cli.main import main; "
                  "sys.argv[0] = 'layerfreeze'; raise SystemExit(main())", "worker"]


class WorkerProcess:
    """One ``layerfreeze worker``; ready once it logs that it is (its freeze processes have started, and
    Celery says it takes messages): log level INFO or DEBUG."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> WorkerProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(WORKER_COMMAND, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            text = self.log.read_bytes()[offset:]
            # Celery logs its banner line once its consumer is connected and takes messages.
            if b"layerfreeze worker ready" in text and b"ready." in text.replace(b"worker ready", b""):
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"the worker was not ready after {timeout} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the worker is not running"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def freeze_pids(self) -> list[int]:
        """Its freeze processes (multiprocessing spawn children)."""
        return pool_workers(self.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        code, self.proc = end_session(self.proc, sig, timeout), None
        return code

    def kill(self) -> None:
        """SIGKILL the worker alone, as a lost host would; its freeze processes notice and end."""
        if self.proc is not None and self.proc.poll() is None:
            children = descendants(self.proc.pid)
            self.proc.kill()
            self.proc.wait(10)
            deadline = time.monotonic() + 10
            while any(_alive(p) for p in children) and time.monotonic() < deadline:
                time.sleep(0.1)
        self.stop()

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


class RoundRobinProxy:
    """A TCP proxy on 127.0.0.1 that sends each new connection to the next backend, as a layer-4 load
    balancer does; runs in a thread of this process."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.port = free_port()
        self._next = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="round-robin-proxy", daemon=True)
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RoundRobinProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for writer in list(self._writers):  # connections still open: their pipes see EOF and end
                writer.close()
            pending = asyncio.all_tasks() - {asyncio.current_task()}
            if pending:
                await asyncio.wait(pending, timeout=5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.backends[self._next % len(self.backends)]
        self._next += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(1 << 16):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:  # one side gone: the other is closed too, so a client that hangs up mid-request
                # is seen as gone by the replica at once (no half-open connection in between)
                for w in (dst, writer, up_writer):
                    with contextlib.suppress(OSError, RuntimeError):
                        w.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        for w in (writer, up_writer):
            self._writers.discard(w)
            with contextlib.suppress(OSError, RuntimeError):
                w.close()


class Cluster:
    """N API replicas, M workers and a proxy over one data directory, broker and database."""

    def __init__(self, root: Path, broker_url: str, *, database_url: str, apis: int = 2, workers: int = 2,
                 settings: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.data_dir = self.root / "data"
        shared = {"queue": "celery", "broker_url": broker_url, "workers": "2", "read_workers": "1",
                  "database_url": database_url, **{k: str(v) for k, v in (settings or {}).items()}}
        self.settings = {setting_name(k): str(v) for k, v in shared.items()}
        base = env if env is not None else child_env()
        self.apis = [Service(self.data_dir, self.settings, env=base, log=self.root / f"api{i}.log")
                     for i in range(apis)]
        worker_env = {**base, **self.settings, "LAYERFREEZE_DATA_DIR": str(self.data_dir)}
        self.workers = [WorkerProcess(worker_env, self.root / f"worker{i}.log") for i in range(workers)]
        self.proxy: RoundRobinProxy | None = None
        self.redis: RedisServer | None = None

    @property
    def url(self) -> str:
        assert self.proxy is not None, "the cluster is not running"
        return self.proxy.url

    def start(self) -> Cluster:
        try:
            # The first replica creates the schema; then the rest in parallel with the workers.
            self.apis[0].start(timeout=120)
            for api in self.apis[1:]:
                api.start(wait_ready=False)
            for worker in self.workers:
                worker.start()
            for api in self.apis[1:]:
                api.wait_ready(120)
            self.proxy = RoundRobinProxy([("127.0.0.1", api.port) for api in self.apis]).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        for api in self.apis:
            api.stop()
        for worker in self.workers:
            worker.stop()

    # -- what tests use of a testing.service.Service, for tests that run against either ---------------
    @property
    def base_url(self) -> str:
        return self.url

    @property
    def port(self) -> int:
        assert self.proxy is not None, "the cluster is not running"
        return self.proxy.port

    def client(self, token: str | None = None, timeout: float = 60) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def logs(self) -> str:
        parts = [f"--- {p.log.name}\n{p.log_tail()}" for p in [*self.apis, *self.workers]]
        return "\n".join(parts)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def distributed_service(root: Path, database_url: str, env: dict[str, str] | None = None, *,
                        replicas: int = 2, worker_hosts: int = 2, **settings: Any) -> Iterator[Cluster]:
    """A Redis of its own and a cluster over it and the PostgreSQL database ``database_url``
    (``replicas`` API processes, ``worker_hosts`` workers, each with the setting ``workers`` freeze
    processes); ``cluster.redis`` is the broker."""
    root = Path(root)
    with RedisServer(root / "redis") as redis:
        cluster = Cluster(root, redis.url, apis=replicas, workers=worker_hosts, settings=settings, env=env,
                          database_url=database_url)
        cluster.redis = redis
        with cluster:
            yield cluster
