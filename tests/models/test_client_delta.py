"""The Python client downloads only a patch when it holds the job's input, rebuilds the output
byte-identical to the service's artifact, and falls back to the full download when the patch does not
fit; ``delta=True`` skips the upload of a file the service already stores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fixtures.models import build, save
from layerfreeze_client import Client
from layerfreeze_client._errors import IntegrityError
from layerfreeze_client._patch import rebuild, single_file

from models.conftest import TOKENS


class Recording(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.paths: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append((request.method, request.url.path))
        return super().handle_request(request)


def _client(url: str, transport: httpx.BaseTransport | None = None) -> Client:
    return Client(url, token=TOKENS["alice"], transport=transport)


def test_delta_download_and_skipped_upload(service, tmp_path: Path) -> None:
    url, _ = service
    src = save(build("cnn", seed=21), tmp_path / "cnn.pt", "checkpoint")
    spec = {"rules": [{"action": "freeze", "names": ["0"]}]}
    full = tmp_path / "full.pt"
    with _client(url) as client:
        reference = client.freeze(src, spec, full, progress=False, delta=False)
    rec = Recording()
    with _client(url, rec) as client:
        result = client.freeze(src, spec, tmp_path / "delta.pt", progress=False)
    assert result.output.read_bytes() == full.read_bytes()
    assert result.report.output.sha256 == reference.report.output.sha256
    assert ("GET", f"/v1/jobs/{result.job.id}/patch") in rec.paths
    assert not [p for m, p in rec.paths if p.endswith("/artifact")]

    rec = Recording()
    with _client(url, rec) as client:  # the service has the file: nothing is uploaded
        again = client.freeze(src, spec, tmp_path / "again.pt", progress=False, delta=True)
    assert again.output.read_bytes() == full.read_bytes()
    assert ("GET", "/v1/models") in rec.paths
    assert not [p for m, p in rec.paths if m == "POST" and p == "/v1/models"]
    assert again.job.raw["model"] == result.job.raw["model"]

    with _client(url) as client:
        patch = client.patch(result.job)
    other = save(build("cnn", seed=22), tmp_path / "other.pt", "checkpoint")
    with pytest.raises(IntegrityError):  # another file of the same size is no base for this patch
        rebuild(other, single_file(patch), tmp_path / "wrong.pt")
    assert not (tmp_path / "wrong.pt").exists()


def test_client_cli_delta_flag(service, tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    url, _ = service
    src = save(build("seq3", seed=23), tmp_path / "s.pt", "state_dict")
    env = {**subprocess_env, "LAYERFREEZE_URL": url, "LAYERFREEZE_TOKEN": TOKENS["alice"]}
    outs = []
    for flag in ("--delta", "--no-delta"):
        out = tmp_path / f"out{flag}.pt"
        run = subprocess.run([sys.executable, "-m", "layerfreeze_client", "freeze", str(src), "--freeze", "0",
                              "-o", str(out), flag, "--no-progress"], env=env, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, run.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
