"""A real layerfreeze service process on 127.0.0.1 (free port, temporary data directory, two tokens)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.server import running_service

TOKEN_A, TOKEN_B = "token-alice", "token-bob"
MAX_UPLOAD = 32 * 1024 * 1024


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
    try:
        with running_service(root, subprocess_env, workers="1", tokens=f"{TOKEN_A}:alice,{TOKEN_B}:bob",
                             job_timeout_s="120", max_upload_bytes=str(MAX_UPLOAD)) as url:
            own = ("LAYERFREEZE_URL", "LAYERFREEZE_TOKEN")
            client_env = {k: v for k, v in subprocess_env.items() if k not in own}
            yield LiveServer(url=url, token=TOKEN_A, other_token=TOKEN_B, log=root / "server.log",
                             env={**client_env, "LAYERFREEZE_URL": url, "LAYERFREEZE_TOKEN": TOKEN_A})
    finally:
        if request.session.testsfailed:
            print(f"\nclient tests: the service's log and data are kept in {root}", file=sys.__stderr__)
        else:
            shutil.rmtree(root, ignore_errors=True)
