"""``layerfreeze-client`` behaves like a Unix tool, against the real service: files as ``cp`` makes them,
tables whose headers match their columns, the same output to a pipe as to a terminal, quiet when its reader
goes away, and failed jobs handled without links that lead nowhere."""

from __future__ import annotations

import json
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fixtures.models import build, save
from layerfreeze_client import Client, ConflictError, JobFailedError
from layerfreeze_client.cli import EXIT_OK, EXIT_REJECTED

from testing.files import umask

from .conftest import LiveServer

pytestmark = pytest.mark.server


def client_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "layerfreeze_client", *args], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(build("nested"), tmp_path_factory.mktemp("manners") / "nested.pt", "module")


@pytest.fixture(scope="module")
def finished_job(live_server: LiveServer, model: Path) -> str:
    with Client(live_server.url, token=live_server.token, poll_interval=0.05) as c:
        job = c.submit(model, {"rules": [{"action": "freeze", "names": ["encoder"]}]}, wait=30)
        return c.wait(job, 60).id


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_downloads_follow_the_umask_like_cp(live_server: LiveServer, model: Path, finished_job: str,
                                           tmp_path: Path, mask: int) -> None:
    expected = 0o666 & ~mask
    with umask(mask):
        frozen = client_cli(["freeze", str(model), "--freeze", "encoder", "-o", str(tmp_path / "f.pt"),
                             "--report", str(tmp_path / "r.json")], live_server.env)
        downloaded = client_cli(["download", finished_job, "-o", str(tmp_path / "d.pt")], live_server.env)
    assert frozen.returncode == downloaded.returncode == EXIT_OK, frozen.stderr + downloaded.stderr
    for name in ("f.pt", "r.json", "d.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def _columns(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_the_jobs_table_has_a_header_for_every_column(live_server: LiveServer, model: Path,
                                                      finished_job: str) -> None:
    assert client_cli(["inspect", str(model)], live_server.env).returncode == EXIT_OK  # a dry run too
    out = client_cli(["jobs"], live_server.env)
    assert out.returncode == EXIT_OK, out.stderr
    header, rule, *rows = out.stdout.splitlines()
    assert _columns(header) == ["id", "status", "created", "input", "size", "kind"]
    assert len(rule.split()) == 6
    kinds = {_columns(row)[-1] for row in rows}
    assert {"freeze", "dry run"} <= kinds
    assert all(len(_columns(row)) == 6 for row in rows)


def test_report_prints_the_same_table_to_a_pipe_and_pretty_json_with_json(
        live_server: LiveServer, finished_job: str) -> None:
    table = client_cli(["report", finished_job], live_server.env)  # stdout is a pipe here
    assert table.returncode == EXIT_OK, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == "format: torch.module" and "parameters: " in table.stdout and len(lines) > 10
    assert any(line.startswith("module ") for line in lines)
    as_json = client_cli(["report", finished_job, "--json"], live_server.env)
    assert as_json.returncode == EXIT_OK
    assert as_json.stdout.startswith("{\n  ") and len(as_json.stdout.splitlines()) > 50  # indented
    served = httpx.get(f"{live_server.url}/v1/jobs/{finished_job}/report",
                       headers={"authorization": f"Bearer {live_server.token}"}).json()
    assert json.loads(as_json.stdout) == served


@pytest.mark.parametrize("command", [["jobs"], ["report", "JOB"], ["report", "JOB", "--json"]])
def test_a_closed_pipe_ends_it_quietly_like_cat(live_server: LiveServer, finished_job: str,
                                                command: list[str]) -> None:
    args = [finished_job if a == "JOB" else a for a in command]
    proc = subprocess.Popen([sys.executable, "-m", "layerfreeze_client", *args], env=live_server.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the first line (``| head -0``)
    _, err = proc.communicate(timeout=120)
    assert err == "" and proc.returncode == -signal.SIGPIPE


def test_a_failed_job_has_no_dead_links_and_the_client_says_why(live_server: LiveServer,
                                                                 tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    with Client(live_server.url, token=live_server.token, poll_interval=0.05) as c:
        job = c.submit(bad, {})
        with pytest.raises(JobFailedError) as failed:
            c.wait(job, 60)
        done = failed.value.job
        assert done is not None and done.status == "failed"
        assert done.links.self == f"/v1/jobs/{done.id}"
        assert done.links.report is None and done.links.artifact is None
        with pytest.raises(ConflictError):
            c.report(done)
        with pytest.raises(ConflictError):
            c.download(done, tmp_path / "never.pt")
        assert not (tmp_path / "never.pt").exists()
    out = client_cli(["report", done.id], live_server.env)
    assert out.returncode == EXIT_REJECTED and "failed" in out.stderr and "Traceback" not in out.stderr


def test_a_value_that_matches_nothing_shows_as_a_warning_in_the_table(live_server: LiveServer,
                                                                      model: Path) -> None:
    frozen = client_cli(["freeze", str(model), "--dry-run", "--freeze", "head", "encoder"], live_server.env)
    assert frozen.returncode == EXIT_OK, frozen.stderr
    assert "/rules/0/names/0: name pattern 'head' matches no parameter or module" in frozen.stdout
    assert "[unmatched_value]" in frozen.stdout and "did you mean" in frozen.stdout
    dead = client_cli(["freeze", str(model), "--dry-run", "--freeze", "head"], live_server.env)
    assert dead.returncode == EXIT_REJECTED and "/rules/0" in dead.stderr
