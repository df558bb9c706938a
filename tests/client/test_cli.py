"""``layerfreeze-client``: output and exit codes, against a stub service on a real socket."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fixtures.server import free_port
from layerfreeze_client import Spec
from layerfreeze_client.cli import (
    EXIT_INTEGRITY,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_SERVICE,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    main,
    spec_from_flags,
)

from .fakeservice import FakeService, StubHTTPServer, problem


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights" * 1000)
    return path


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch):
    service = FakeService()
    with StubHTTPServer(service.handle) as server:
        monkeypatch.setenv("LAYERFREEZE_URL", server.url)
        monkeypatch.delenv("LAYERFREEZE_TOKEN", raising=False)
        yield service


def test_flags_build_ordered_rules() -> None:
    rules = [("freeze", ["encoder", "types:LayerNorm"]), ("unfreeze", ["params:bias"]),
             ("freeze", ["until:x"])]
    assert spec_from_flags(rules, strict=False) == (
        Spec(strict=False).freeze(names=["encoder"]).freeze(types=["LayerNorm"]).unfreeze(params=["bias"])
        .freeze(until="x")
    )


def test_freeze_prints_the_report_and_writes_beside_the_input(stub: FakeService, model_file: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["freeze", str(model_file), "--freeze", "0", "--unfreeze", "params:bias"]) == EXIT_OK
    out = capsys.readouterr().out
    job = next(iter(stub.jobs.values()))
    assert job.spec == Spec().freeze(names=["0"]).unfreeze(params=["bias"]).to_dict()
    out_file = model_file.with_name("model.frozen.pt")
    assert out_file.read_bytes() == job.artifact
    assert f"wrote {out_file}" in out
    assert "module" in out and "partial" in out and "frozen 1" in out
    assert "a warning from the fake" in out


def test_freeze_json_and_spec_file(stub: FakeService, model_file: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(Spec().freeze(names=["0"]).to_json())
    report = tmp_path / "report.json"
    code = main(["freeze", str(model_file), "--spec", str(spec), "-o", str(tmp_path / "o.pt"), "--json",
                 "--report", str(report)])
    assert code == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["output"] == str(tmp_path / "o.pt") and data["job"]["status"] == "succeeded"
    assert json.loads(report.read_text()) == data["report"]


def test_job_commands(stub: FakeService, model_file: Path, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(model_file)]) == EXIT_OK
    assert "0.weight" not in capsys.readouterr().out  # the module table, not the parameter list
    job_id = next(iter(stub.jobs))
    assert main(["jobs"]) == EXIT_OK
    assert job_id in capsys.readouterr().out
    assert main(["report", job_id, "--params"]) == EXIT_OK
    assert "0.weight" in capsys.readouterr().out
    assert main(["jobs", "--json"]) == EXIT_OK
    assert [j["id"] for j in json.loads(capsys.readouterr().out)] == [job_id]
    assert main(["freeze", str(model_file), "--freeze", "0", "-o", str(tmp_path / "a.pt")]) == EXIT_OK
    second = list(stub.jobs)[-1]
    assert main(["download", second, "-o", str(tmp_path / "b.pt")]) == EXIT_OK
    assert (tmp_path / "b.pt").read_bytes() == (tmp_path / "a.pt").read_bytes()
    assert main(["delete", second]) == EXIT_OK
    capsys.readouterr()
    assert main(["report", second]) == EXIT_REJECTED
    assert f"no job {second}" in capsys.readouterr().err


def test_exit_codes(stub: FakeService, model_file: Path, tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USAGE
    assert main(["freeze", str(model_file)]) == EXIT_USAGE  # neither --spec nor --freeze
    spec_file = _write(tmp_path, {})
    assert main(["freeze", str(model_file), "--spec", spec_file, "--freeze", "0"]) == EXIT_USAGE
    assert main(["freeze", str(model_file), "--unfreeze", "params:bias", "-o", str(tmp_path / "u.pt")]) == 0
    assert main(["freeze", str(tmp_path / "missing.pt"), "--freeze", "0"]) == EXIT_USAGE
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["freeze", str(model_file), "--spec", str(bad)]) == EXIT_USAGE
    capsys.readouterr()

    assert main(["freeze", str(model_file), "--spec", _write(tmp_path, {"bogus": 1})]) == EXIT_REJECTED
    err = capsys.readouterr().err
    assert "/bogus" in err and "rules" in err and "Traceback" not in err

    stub.corrupt_artifact = True
    assert main(["freeze", str(model_file), "--freeze", "0", "-o", str(tmp_path / "c.pt")]) == EXIT_INTEGRITY
    assert not (tmp_path / "c.pt").exists()
    stub.corrupt_artifact = False

    stub.faults.append(lambda r: problem(500, "Internal server error", "it broke"))
    assert main(["jobs"]) == EXIT_SERVICE
    assert "it broke" in capsys.readouterr().err

    port = free_port()  # nothing listens there
    assert main(["jobs", "--url", f"http://127.0.0.1:{port}", "--retries", "1"]) == EXIT_UNREACHABLE
    assert "Traceback" not in capsys.readouterr().err


def _write(tmp_path: Path, spec: dict) -> str:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(spec))
    return str(path)


def test_retries_against_a_socket_that_answers_503_then_200(model_file: Path) -> None:
    from layerfreeze_client import Client, Retry

    service = FakeService()
    busy = {"left": 2}

    def not_ready(request: httpx.Request) -> httpx.Response | None:
        if busy["left"]:
            busy["left"] -= 1
            resp = problem(503, "Not ready", "starting up")
            if busy["left"]:
                resp.headers["Retry-After"] = "1"
            return resp
        return None

    service.faults.append(not_ready)
    with StubHTTPServer(service.handle) as server, \
            Client(server.url, retry=Retry(retries=3, backoff=0.01), poll_interval=0.01) as client:
        start = time.monotonic()
        result = client.freeze(model_file, {}, model_file.with_name("r.pt"), progress=False)
    assert time.monotonic() - start >= 1.0  # Retry-After: 1 was honoured
    posts = [r for r in service.requests if r.method == "POST"]
    assert len(posts) == 3  # the upload was sent again, whole, after each 503
    assert all(len(r.content) == len(posts[-1].content) for r in posts)
    assert result.output is not None and result.output.read_bytes() == service.jobs[result.job.id].artifact


def test_console_entry_prints_no_traceback(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    env = {**subprocess_env, "LAYERFREEZE_URL": f"http://127.0.0.1:{free_port()}"}
    out = subprocess.run([sys.executable, "-m", "layerfreeze_client", "jobs", "--retries", "1"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == EXIT_UNREACHABLE
    assert "cannot complete" in out.stderr and "Traceback" not in out.stderr
