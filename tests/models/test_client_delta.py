"""The Python client downloads only a patch when it holds the job's input, rebuilds the output
byte-identical to the service's artifact, and falls back to the full download when the patch does not
fit; ``delta=True`` skips the upload of a file the service already stores."""

from __future__ import annotations

import copy
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.models import build, save
from layerfreeze_client import Client, Retry
from layerfreeze_client._errors import IntegrityError
from layerfreeze_client._patch import rebuild, single_file

from models.conftest import TOKENS
from testing.files import umask
from testing.transports import DropsFirstPatch


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


def test_async_client_rebuilds_from_the_patch(service, tmp_path: Path) -> None:
    import asyncio

    from layerfreeze_client import AsyncClient

    url, _ = service
    src = save(build("seq3", seed=24), tmp_path / "a.pt", "module")
    spec = {"rules": [{"action": "freeze", "names": ["2"]}]}
    rec = Recording()

    async def run() -> Any:
        async with AsyncClient(url, token=TOKENS["alice"]) as client:
            return await client.freeze(src, spec, tmp_path / "async.pt", progress=False)

    result = asyncio.run(run())
    with _client(url, rec) as client:
        full = client.freeze(src, spec, tmp_path / "sync.pt", progress=False, delta=False)
    assert result.output.read_bytes() == full.output.read_bytes()


def test_every_way_to_the_output_writes_it_like_a_download(service, tmp_path: Path) -> None:
    """Rebuilt or downloaded: the mode cp gives under the umask, a progress count that ends at the output's
    size, and the job's output name when the target is a directory."""
    url, _ = service
    src = save(build("cnn", seed=25), tmp_path / "u.pt", "checkpoint")
    spec = {"rules": [{"action": "freeze", "names": ["0"]}]}
    into = tmp_path / "into"
    names = []
    with umask(0o027):
        for delta, fetched in ((None, "/patch"), (False, "/artifact")):
            into.mkdir(exist_ok=True)
            for target in (tmp_path / f"{delta}.pt", into):
                seen: list[tuple[int, int | None]] = []
                rec = Recording()
                with _client(url, rec) as client:
                    result = client.freeze(src, spec, target, delta=delta,
                                           progress=lambda done, total, seen=seen: seen.append((done, total)))
                assert [p for m, p in rec.paths if p.endswith(fetched)], rec.paths
                size = result.output.stat().st_size
                assert stat.S_IMODE(result.output.stat().st_mode) == 0o640, (delta, target)
                assert seen[-1] == (size, size) and all(t is None or d <= t for d, t in seen)
                if target == into:
                    names.append(result.output.relative_to(into))
            for leftover in into.iterdir():
                leftover.unlink()
    assert names[0] == names[1] and len(names[0].parts) == 1


def test_resumed_upload_progress_counts_what_the_service_holds(service, tmp_path: Path) -> None:
    url, _ = service
    src = save(build("cnn", seed=26), tmp_path / "r.pt", "checkpoint")
    size = src.stat().st_size
    seen: list[tuple[int, int | None]] = []
    transport = DropsFirstPatch()
    with Client(url, token=TOKENS["alice"], transport=transport, retry=Retry(retries=3, backoff=0.01)) as c:
        c.upload_model(src, progress=lambda done, total: seen.append((done, total)))
    assert transport.dropped
    assert (4096, size) in seen  # counted back to where the service's bytes end
    assert seen[-1] == (size, size) and all(d <= size for d, _ in seen)


@pytest.mark.parametrize("damage", ["bad base64", "range outside the base", "segments not a list"])
def test_a_malformed_patch_is_an_integrity_error_and_leaves_nothing(service, tmp_path: Path,
                                                                    damage: str) -> None:
    url, _ = service
    src = save(build("seq3", seed=27), tmp_path / "m.pt", "state_dict")
    with _client(url) as client:
        job = client.freeze(src, {"rules": [{"action": "freeze", "names": ["0"]}]}, tmp_path / "ok.pt",
                            progress=False).job
        entry = copy.deepcopy(single_file(client.patch(job)))
    if damage == "bad base64":
        entry["segments"].append({"data": "not base64!"})
    elif damage == "range outside the base":
        entry["segments"].insert(0, {"base": [0, src.stat().st_size + 1]})
    else:
        entry["segments"] = {"base": [0, 1]}
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(IntegrityError):
        rebuild(src, entry, out / "m.frozen.pt")
    assert list(out.iterdir()) == []
