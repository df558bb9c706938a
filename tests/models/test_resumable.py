"""Resumable uploads (tus 1.0): an upload cut off halfway resumes from the service's offset, and the
stored model is byte-identical to the file; the Python client resumes by itself."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from fixtures.models import build, save
from layerfreeze_client import AsyncClient, Client, Retry

from models.conftest import TOKENS, client
from testing.transports import (
    AsyncDropsFirstPatch,
    AsyncGateway,
    AsyncHoldsFirstPatch,
    DropsFirstPatch,
    HoldsFirstPatch,
)

TUS = {"tus-resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


def _cut_off_patch(url: str, location: str, body: bytes, sent: int) -> None:
    """A PATCH that announces the whole body, sends ``sent`` bytes of it and hangs up."""
    parts = urlsplit(url)
    head = (f"PATCH {location} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {TOKENS['alice']}\r\n"
            f"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: {OCTETS}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((parts.hostname, parts.port)) as s:
        s.sendall(head + body[:sent])
        time.sleep(0.3)


def test_upload_cut_off_halfway_resumes_byte_identical(service, tmp_path: Path) -> None:
    url, data_dir = service
    src = save(build("transformer", seed=31), tmp_path / "t.pt", "module")
    data = src.read_bytes()
    half = len(data) // 2
    with client(url) as c:
        assert c.options("/v1/uploads").headers["tus-version"] == "1.0.0"
        name = base64.b64encode(b"t.pt").decode()
        created = c.post("/v1/uploads", headers={**TUS, "upload-length": str(len(data)),
                                                "upload-metadata": f"filename {name}"})
        assert created.status_code == 201
        location = created.headers["location"]
        _cut_off_patch(url, location, data, half)
        deadline = time.monotonic() + 10
        while (offset := int(c.head(location, headers=TUS).headers["upload-offset"])) < half:
            assert time.monotonic() < deadline, offset
            time.sleep(0.05)
        assert offset == half  # everything that arrived was kept
        assert c.post("/v1/models", json={"upload": location}).status_code == 409  # not complete yet
        wrong = c.patch(location, content=data[offset + 1:], headers={
            **TUS, "upload-offset": str(offset + 1), "content-type": OCTETS})
        assert wrong.status_code == 409
        deadline = time.monotonic() + 10
        while True:  # the cut-off PATCH holds the upload until its server has seen the client go
            done = c.patch(location, content=data[offset:], headers={
                **TUS, "upload-offset": str(offset), "content-type": OCTETS})
            if done.status_code != 409 or "in progress" not in done.text or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert done.status_code == 204 and int(done.headers["upload-offset"]) == len(data)
        with client(url, "bob") as bob:
            assert bob.head(location, headers=TUS).status_code == 404  # another tenant's upload
        model = c.post("/v1/models", json={"upload": location})
        assert model.status_code == 201, model.text
        sha = hashlib.sha256(data).hexdigest()
        assert model.json()["sha256"] == sha and model.json()["files"][0]["path"] == "t.pt"
        assert (data_dir / "blobs" / sha[:2] / sha).read_bytes() == data
        assert c.head(location, headers=TUS).status_code == 404  # the upload became the model
        assert c.post("/v1/uploads", headers={"upload-length": "5"}).status_code == 412


def test_client_resumes_by_itself(service, tmp_path: Path) -> None:
    url, _ = service
    src = save(build("cnn", seed=32), tmp_path / "c.pt", "checkpoint")
    transport = DropsFirstPatch()
    with Client(url, token=TOKENS["alice"], transport=transport, retry=Retry(retries=3, backoff=0.01)) as c:
        model = c.upload_model(src)
    assert transport.dropped
    assert model["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()


def test_client_resumes_while_the_broken_patch_is_still_held(service, tmp_path: Path) -> None:
    """The service answers 409 while it is still inside the broken PATCH; the client waits and resumes."""
    url, _ = service
    src = save(build("cnn", seed=33), tmp_path / "c.pt", "checkpoint")
    transport = HoldsFirstPatch(hold=1.0)
    with Client(url, token=TOKENS["alice"], transport=transport, retry=Retry(retries=6, backoff=0.2)) as c:
        model = c.upload_model(src)
    assert transport.dropped
    assert model["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()

def _raw(url: str, head: str) -> bytes:
    """One request with header bytes as given (latin-1), and the status line of the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
        s.sendall(head.replace("\n", "\r\n").encode("latin-1") + b"\r\n")
        return s.recv(4096).split(b"\r\n", 1)[0]


def test_malformed_upload_numbers_are_4xx_and_change_nothing(service, tmp_path: Path) -> None:
    url, _ = service
    auth = f"Authorization: Bearer {TOKENS['alice']}\nTus-Resumable: 1.0.0\n"
    for bad in ("\xb2", "1" * 5000, "-1"):  # '²' passes str.isdigit(); int() refuses 5,000 digits
        status = _raw(url, f"POST /v1/uploads HTTP/1.1\nHost: x\n{auth}Upload-Length: {bad}\n"
                           "Content-Length: 0\nConnection: close\n")
        assert status.split()[1] in (b"400", b"431"), (bad[:8], status)
    with client(url) as c:
        created = c.post("/v1/uploads", headers={**TUS, "upload-length": "4"})
        assert created.status_code == 201
        location = created.headers["location"]
    for bad in ("\xb2", "1" * 5000, "+0"):
        status = _raw(url, f"PATCH {location} HTTP/1.1\nHost: x\n{auth}Upload-Offset: {bad}\n"
                           f"Content-Type: {OCTETS}\nContent-Length: 4\nConnection: close\n\nabcd")
        assert status.split()[1] in (b"409", b"431"), (bad[:8], status)
    with client(url) as c:
        assert c.head(location, headers=TUS).headers["upload-offset"] == "0"  # nothing was taken


def _stored(data_dir: Path, sha: str) -> bytes:
    return (data_dir / "blobs" / sha[:2] / sha).read_bytes()


def test_async_client_uploads_resumably_and_resumes_by_itself(service, tmp_path: Path) -> None:
    """A whole upload is one PATCH; a dropped PATCH and one the service still holds are resumed, and
    the stored model is byte-identical to the file each time."""
    url, data_dir = service
    fast = Retry(retries=6, backoff=0.2)

    async def upload(src: Path, transport: AsyncDropsFirstPatch | AsyncHoldsFirstPatch) -> dict:
        async with AsyncClient(url, token=TOKENS["alice"], transport=transport, retry=fast) as c:
            return await c.upload_model(src)

    for seed, transport in ((34, AsyncDropsFirstPatch()), (35, AsyncHoldsFirstPatch(hold=1.0))):
        src = save(build("cnn", seed=seed), tmp_path / f"c{seed}.pt", "checkpoint")
        model = asyncio.run(upload(src, transport))
        sha = hashlib.sha256(src.read_bytes()).hexdigest()
        assert transport.patches >= 2  # the broken PATCH, then the rest from the service's offset
        assert model["sha256"] == sha and model["files"][0]["path"] == src.name
        assert _stored(data_dir, sha) == src.read_bytes()


def test_async_client_sends_one_multipart_request_without_resumable_uploads(service, tmp_path: Path
                                                                             ) -> None:
    """Behind a gateway that does not pass /v1/uploads the model goes as one multipart request, and it
    is the same stored model as by tus."""
    url, data_dir = service
    src = save(build("cnn", seed=36), tmp_path / "c.pt", "checkpoint")
    gateway = AsyncGateway(refuse="/v1/uploads")

    async def upload() -> tuple[dict, dict]:
        async with AsyncClient(url, token=TOKENS["alice"], transport=gateway) as c:
            by_form = await c.upload_model(src)
        async with AsyncClient(url, token=TOKENS["alice"]) as c:
            by_tus = await c.upload_model(src)
        return by_form, by_tus

    by_form, by_tus = asyncio.run(upload())
    assert gateway.calls == [("OPTIONS", "/v1/uploads"), ("POST", "/v1/models")]  # asked, went without
    assert by_form["id"] == by_tus["id"]
    assert _stored(data_dir, by_form["sha256"]) == src.read_bytes()


def test_async_freeze_with_delta_skips_the_upload_of_a_stored_file(service, tmp_path: Path) -> None:
    url, _ = service
    src = save(build("cnn", seed=37), tmp_path / "c.pt", "checkpoint")
    gateway = AsyncGateway()

    async def run() -> tuple[dict, Path]:
        async with AsyncClient(url, token=TOKENS["alice"]) as c:
            stored = await c.upload_model(src)
        async with AsyncClient(url, token=TOKENS["alice"], transport=gateway) as c:
            result = await c.freeze(src, {"rules": [{"action": "freeze", "names": ["*"]}]},
                                    tmp_path / "out.pt", progress=False, delta=True)
        assert result.job.model == stored["id"]
        return stored, result.output

    _stored_model, output = asyncio.run(run())
    assert not [c for c in gateway.calls if c[0] in ("PATCH", "POST") and "upload" in c[1]]
    jobs = [r for r in gateway.requests if (r.method, r.url.path) == ("POST", "/v1/jobs")]
    assert [r.headers["content-type"] for r in jobs] == ["application/json"]  # by the stored model's id
    assert output.is_file()
