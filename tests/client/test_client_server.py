"""The client against the real service process: every call, typed errors, auth, async."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
import torch
from fixtures.models import build, save
from layerfreeze_client import (
    AsyncClient,
    AuthError,
    Client,
    ConflictError,
    InvalidInputError,
    JobFailedError,
    NotFoundError,
    PayloadTooLargeError,
    RejectedError,
    Spec,
)

from .conftest import MAX_UPLOAD, LiveServer

pytestmark = pytest.mark.server


@pytest.fixture
def client(live_server: LiveServer) -> Client:
    with Client(live_server.url, token=live_server.token, poll_interval=0.05) as c:
        yield c


def saved(tmp_path: Path, name: str = "seq3", fmt: str = "state_dict") -> Path:
    suffix = ".safetensors" if fmt == "safetensors" else ".pt"
    return save(build(name), tmp_path / f"{name}{suffix}", fmt)


def test_freeze_writes_a_verified_checkpoint_with_the_flags_inside(client: Client, tmp_path: Path) -> None:
    model = saved(tmp_path)
    result = client.freeze(model, Spec().freeze(names=["0"]), progress=False)
    assert result.job.succeeded and result.output == tmp_path / "seq3.frozen.pt"
    assert result.report.output is not None
    assert hashlib.sha256(result.output.read_bytes()).hexdigest() == result.report.output.sha256
    assert result.report.input.sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    assert result.report.format == "torch.state_dict"
    assert result.report.frozen() == ["0.weight", "0.bias"]
    assert result.report.parameters[0].rule == 0 and result.report.parameters[2].rule is None
    loaded = torch.load(result.output, weights_only=True)
    assert {k: v.requires_grad for k, v in loaded.items()} == result.report.states()
    original = torch.load(model, weights_only=True)
    assert all(torch.equal(original[k], loaded[k]) for k in original)  # bytes unchanged


def test_inspect_reports_without_writing(client: Client, tmp_path: Path) -> None:
    model = saved(tmp_path, "cnn", "module")
    result = client.inspect(model, progress=False)
    assert result.output is None and result.job.dry_run
    names = [p.name for p in result.report.parameters]
    assert names == [n for n, _ in build("cnn").named_parameters()]
    assert all(p.requires_grad for p in result.report.parameters)
    assert {b.name for b in result.report.buffers} >= {"1.running_mean", "1.running_var"}
    assert result.report.modules[0].name == "" and result.report.modules[0].state == "trainable"
    assert not list(tmp_path.glob("*.frozen*"))


def test_spec_errors_carry_pointers_and_suggestions(client: Client, tmp_path: Path) -> None:
    model = saved(tmp_path)
    with pytest.raises(InvalidInputError) as info:
        client.freeze(model, Spec().freeze(names=["00"]), progress=False)
    err = info.value
    assert err.status == 422 and err.detail
    assert any(e.pointer.startswith("/rules/0") for e in err.errors), err.errors
    with pytest.raises(InvalidInputError) as bad:
        client.submit(model, {"rules": [{"action": "melt", "names": ["0"]}]})
    assert any(e.pointer.startswith("/rules/0") for e in bad.value.errors)


def test_a_file_that_is_not_a_checkpoint_fails_its_job(client: Client, tmp_path: Path) -> None:
    junk = tmp_path / "notes.pt"
    junk.write_bytes(b"these are not weights\n" * 100)
    with pytest.raises(RejectedError) as info:
        client.freeze(junk, {}, progress=False)
    assert isinstance(info.value, JobFailedError) and info.value.job is not None
    assert info.value.job.status == "failed" and 400 <= info.value.status < 500
    with pytest.raises(ConflictError):
        client.report(info.value.job)


def test_an_oversized_upload_is_refused_not_retried(client: Client, tmp_path: Path) -> None:
    big = tmp_path / "big.pt"
    with big.open("wb") as f:
        f.truncate(MAX_UPLOAD + 1)  # sparse: cheap to make, read as zeros
    with pytest.raises(PayloadTooLargeError) as info:
        client.submit(big, {})
    assert info.value.status == 413 and str(MAX_UPLOAD) in info.value.detail


def test_job_calls_list_report_download_delete(client: Client, tmp_path: Path) -> None:
    model = saved(tmp_path)
    first = client.submit(model, {}, progress=False)
    second = client.submit(model, Spec().freeze(params=["bias"]))
    done = client.wait(second, timeout=60)
    assert done.finished and done.input.sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    client.wait(first.id, timeout=60)
    ids = [j.id for j in client.jobs(page_size=1)]
    assert ids.index(second.id) < ids.index(first.id)  # newest first, across pages
    report = client.report(second.id)
    assert report.frozen() == ["0.bias", "2.bias"]
    assert report.output is not None
    (tmp_path / "dl").mkdir()
    out = client.download(second.id, tmp_path / "dl", sha256=report.output.sha256)  # the service's name
    assert out == tmp_path / "dl" / "seq3.frozen.pt"
    assert hashlib.sha256(out.read_bytes()).hexdigest() == report.output.sha256
    client.delete(second)
    with pytest.raises(NotFoundError):
        client.job(second.id)
    with pytest.raises(NotFoundError):
        client.download(first.id + "0", tmp_path / "none.pt")


def test_tokens_are_required_and_tenants_kept_apart(live_server: LiveServer, tmp_path: Path) -> None:
    model = saved(tmp_path)
    with Client(live_server.url, token="") as anonymous, pytest.raises(AuthError) as info:
        anonymous.list_jobs()
    assert info.value.status == 401
    with Client(live_server.url, token=live_server.token) as alice, \
            Client(live_server.url, token=live_server.other_token) as bob:
        job = alice.submit(model, {}, wait=30)
        with pytest.raises(NotFoundError):
            bob.job(job)
        assert job.id not in {j.id for j in bob.jobs()}


def test_async_client_round_trip(live_server: LiveServer, tmp_path: Path) -> None:
    model = saved(tmp_path, "nested", "module")

    async def run() -> None:
        async with AsyncClient(live_server.url, token=live_server.token, poll_interval=0.05) as client:
            results = await asyncio.gather(
                client.freeze(model, Spec().freeze(names=["encoder"]), tmp_path / "a.pt", progress=False),
                client.inspect(model, progress=False),
            )
            frozen, dry = results
            assert frozen.output is not None and frozen.output.exists()
            assert all(p.name.startswith("encoder.") for p in frozen.report.parameters if not p.requires_grad)
            assert dry.output is None
            assert await client.health()

    asyncio.run(run())


def test_finetune_example_runs_against_the_service(live_server: LiveServer, repo_root: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(repo_root / "examples" / "finetune.py"), "--steps", "3"],
                         env=live_server.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "frozen and bit-identical after 3 steps: 0.weight, 2.weight" in out.stdout
    assert "trainable and updated: 0.bias, 2.bias, 4.weight, 4.bias" in out.stdout


def test_cli_against_the_service(live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from layerfreeze_client.cli import EXIT_OK, EXIT_REJECTED, main

    for key in ("LAYERFREEZE_URL", "LAYERFREEZE_TOKEN"):
        monkeypatch.setenv(key, live_server.env[key])
    model = saved(tmp_path, "cnn", "module")
    assert main(["freeze", str(model), "--freeze", "types:BatchNorm2d", "0"]) == EXIT_OK
    out = capsys.readouterr().out
    written = tmp_path / "cnn.frozen.pt"
    assert f"wrote {written}" in out and written.exists()
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line[:1] == " " and line.split()}
    assert lines["0"][1:3] == ["Conv2d", "frozen"] and lines["3"][1:3] == ["Conv2d", "trainable"]
    assert "warnings:" in out  # frozen BatchNorm layers still update their running statistics in train()

    assert main(["freeze", str(model), "--freeze", "encoder", "--json"]) == EXIT_REJECTED
    captured = capsys.readouterr()
    assert "/rules/0" in captured.err and "Traceback" not in captured.err and captured.out == ""

    assert main(["inspect", str(model), "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["output"] is None and data["report"]["summary"]["frozen"] == 0
    job_id = data["job"]["id"]
    assert main(["delete", job_id]) == EXIT_OK
    assert main(["report", job_id]) == EXIT_REJECTED
    assert "not found" in capsys.readouterr().err.lower()
