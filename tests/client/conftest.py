"""A real layerfreeze service process on 127.0.0.1 (free port, temporary data directory, two tokens)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

TOKEN_A, TOKEN_B = "token-alice", "token-bob"
MAX_UPLOAD = 32 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    token: str
    other_token: str
    log: Path
    env: dict[str, str]


@pytest.fixture(scope="session")
def live_server(request: pytest.FixtureRequest, subprocess_env: dict[str, str]) -> Iterator[LiveServer]:
    # Its own directory, not pytest's numbered ones: kept (and named on stderr) when a test failed.
    root = Path(tempfile.mkdtemp(prefix="layerfreeze-client-server-"))
    port = free_port()
    env = {**subprocess_env, "LAYERFREEZE_HOST": "127.0.0.1", "LAYERFREEZE_PORT": str(port),
           "LAYERFREEZE_DATA_DIR": str(root / "data"), "LAYERFREEZE_WORKERS": "1",
           "LAYERFREEZE_TOKENS": f"{TOKEN_A}:alice,{TOKEN_B}:bob", "LAYERFREEZE_JOB_TIMEOUT_S": "120",
           "LAYERFREEZE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD)}
    log = root / "server.log"
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "layerfreeze.server"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the service exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"the service did not become ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        own = ("LAYERFREEZE_URL", "LAYERFREEZE_TOKEN")
        client_env = {k: v for k, v in subprocess_env.items() if k not in own}
        yield LiveServer(url=url, token=TOKEN_A, other_token=TOKEN_B, log=log,
                         env={**client_env, "LAYERFREEZE_URL": url, "LAYERFREEZE_TOKEN": TOKEN_A})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if request.session.testsfailed:
            print(f"\nclient tests: the service's log and data are kept in {root}", file=sys.__stderr__)
        else:
            shutil.rmtree(root, ignore_errors=True)
