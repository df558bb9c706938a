"""``layerfreeze-client``'s global options work before and after the command, against real sockets.

Each option is given in both positions to the installed console entry (a subprocess), with the environment
pointing elsewhere, so an option that is silently dropped shows as the wrong answer.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import socket
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fixtures.models import build, save
from fixtures.server import free_port
from layerfreeze_client.cli import EXIT_OK, EXIT_REJECTED, EXIT_SERVICE, EXIT_UNREACHABLE

from .conftest import LiveServer
from .fakeservice import StubHTTPServer, problem

pytestmark = pytest.mark.server


def client(args: list[str], env: dict[str, str], timeout: float = 60,
           **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "layerfreeze_client", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, **kwargs)


def both_positions(option: list[str], command: list[str]) -> Iterator[list[str]]:
    """``OPTION COMMAND ARGS`` and ``COMMAND ARGS OPTION``."""
    yield [*option, *command]
    yield [*command, *option]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(build("seq3"), tmp_path_factory.mktemp("options") / "m.pt", "state_dict")


@pytest.mark.parametrize("command", [["jobs"], ["freeze", "MODEL", "--freeze", "0"]])
def test_url_in_either_position_is_the_one_used(live_server: LiveServer, model: Path,
                                                command: list[str]) -> None:
    """The environment names a working service; ``--url`` names a port where nothing listens."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    command = [str(model) if a == "MODEL" else a for a in command]
    for args in both_positions(["--url", nowhere], command):
        out = client([*args, "--retries", "0"], live_server.env)
        assert out.returncode == EXIT_UNREACHABLE, (args, out.stdout, out.stderr)
        assert nowhere in out.stderr and "Traceback" not in out.stderr


def test_token_json_in_either_position(live_server: LiveServer, model: Path) -> None:
    submitted = client(["--json", "inspect", str(model)], live_server.env)
    assert submitted.returncode == EXIT_OK, submitted.stderr
    job_id = json.loads(submitted.stdout)["job"]["id"]
    for args in both_positions(["--json"], ["jobs"]):
        out = client(args, live_server.env)
        assert out.returncode == EXIT_OK, out.stderr
        assert job_id in [j["id"] for j in json.loads(out.stdout)]  # JSON, not a table
    for args in both_positions(["--token", live_server.other_token], ["jobs", "--json"]):
        out = client(args, live_server.env)
        assert out.returncode == EXIT_OK, out.stderr
        assert job_id not in [j["id"] for j in json.loads(out.stdout)]  # the other tenant's view
    for args in both_positions(["--token", "not-a-token"], ["jobs"]):
        out = client(args, live_server.env)
        assert out.returncode == EXIT_REJECTED and "Traceback" not in out.stderr, out.stderr


def test_retries_in_either_position(subprocess_env: dict[str, str]) -> None:
    seen: list[httpx.Request] = []

    def busy(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        response = problem(503, "Not ready", "starting up")
        response.headers["Retry-After"] = "0"
        return response

    with StubHTTPServer(busy) as server:
        for args in both_positions(["--retries", "2"], ["jobs"]):
            seen.clear()
            out = client([*args, "--url", server.url], subprocess_env)
            assert out.returncode == EXIT_SERVICE, out.stderr
            assert len(seen) == 3  # the first attempt and two retries


def test_timeout_in_either_position(subprocess_env: dict[str, str]) -> None:
    """A socket that accepts connections (the backlog) but never answers: only ``--timeout`` ends it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        for args in both_positions(["--timeout", "0.5"], ["jobs"]):
            out = client([*args, "--url", url, "--retries", "0"], subprocess_env, timeout=30)
            assert out.returncode == EXIT_UNREACHABLE, out.stderr


def _stderr_on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal (stdout a pipe); what the terminal showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # rows, columns
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc = subprocess.run([sys.executable, "-m", "layerfreeze_client", *args], stdout=subprocess.PIPE,
                              stderr=slave, env=env, timeout=60)
    finally:
        os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


def test_progress_bars_only_on_a_terminal_and_no_progress_in_either_position(
        live_server: LiveServer, model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.pt"
    code, terminal = _stderr_on_a_terminal(["freeze", str(model), "--freeze", "0", "-o", str(out)],
                                           live_server.env)
    assert code == EXIT_OK, terminal
    assert "upload m.pt" in terminal and "download out.pt" in terminal
    assert "100%" in terminal  # the bars end where the transfer ended, not at 0%
    for args in both_positions(["--no-progress"], ["freeze", str(model), "--freeze", "0", "-o", str(out)]):
        code, terminal = _stderr_on_a_terminal(args, live_server.env)
        assert code == EXIT_OK and "%" not in terminal, terminal
    piped = client(["freeze", str(model), "--freeze", "0", "-o", str(out)], live_server.env)
    assert piped.returncode == EXIT_OK and piped.stderr == ""  # stderr a pipe: no bar
