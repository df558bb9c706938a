"""Hostile requests: over-size uploads, pickles that would run code, missing or foreign tokens."""

from __future__ import annotations

import os
import pickle
import secrets
import socket
import time
from pathlib import Path

import httpx
import pytest
import torch
from svc_helpers import checkpoint, submit

pytestmark = pytest.mark.server


def _leftovers(server) -> list[Path]:
    return [*(server.data_dir / "tmp").iterdir(), *(server.data_dir / "jobs").iterdir()]


def test_oversize_upload_is_413_and_leaves_nothing(make_server, tmp_path: Path) -> None:
    server = make_server(max_upload_bytes=str(64 * 1024), max_form_field_bytes="1024")
    big = tmp_path / "big.pt"
    big.write_bytes(os.urandom(1024 * 1024))
    with server.client() as c:
        r = submit(c, big, {})  # Content-Length known: refused before the body is read
        assert r.status_code == 413
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["maximum"] == 64 * 1024

        boundary = secrets.token_hex(8)

        def body():  # chunked, no Content-Length: refused while streaming
            yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"; filename=\"x.pt\"\r\n"
                   "Content-Type: application/octet-stream\r\n\r\n").encode()
            for _ in range(16):
                yield b"\0" * (32 * 1024)
            yield f"\r\n--{boundary}--\r\n".encode()

        r = c.post("/v1/jobs", content=body(),
                   headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 413

        small = tmp_path / "small.pt"
        small.write_bytes(b"\0" * 100)
        r = submit(c, small, {"rules": [{"action": "freeze", "names": ["x" * 2000]}]})
        assert r.status_code == 413 and r.json()["limit"] == "max_form_field_bytes"
        assert c.get("/v1/jobs").json()["items"] == []
        assert c.get("/healthz").status_code == 200
    assert _leftovers(server) == []


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["zip", "legacy", "protocol0"])
def test_malicious_pickle_is_rejected_and_never_runs(server, tmp_path: Path, kind: str) -> None:
    marker = tmp_path / f"pwned-{kind}"
    evil = tmp_path / f"evil-{kind}.pt"
    payload = {"weight": torch.zeros(2), "x": _Payload(marker)}
    if kind == "zip":
        torch.save(payload, evil)
    elif kind == "legacy":
        torch.save(payload, evil, _use_new_zipfile_serialization=False)
    else:
        evil.write_bytes(pickle.dumps(_Payload(marker), protocol=0))
    assert not marker.exists()
    with server.client() as c:
        r = submit(c, evil, {}, wait=30)
        assert 400 <= r.status_code < 500, r.text
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["job"]["status"] == "failed" and body["detail"]
        time.sleep(0.2)
        assert not marker.exists()
        assert c.get("/readyz").status_code == 200


def test_tokens_401_and_tenants_see_only_their_jobs(make_server, tmp_path: Path) -> None:
    server = make_server(tokens="tok-alice:alice,tok-bob:bob")
    src = checkpoint(tmp_path, "seq3")
    with httpx.Client(base_url=server.base_url) as anon:
        r = submit(anon, src, {})
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.headers["content-type"] == "application/problem+json"
        assert anon.get("/v1/jobs").status_code == 401
        assert anon.get("/v1/jobs", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert anon.get("/healthz").status_code == 200
    with server.client("tok-alice") as alice, server.client("tok-bob") as bob:
        job = submit(alice, src, {}, wait=30).json()
        assert job["status"] == "succeeded"
        for path in ("", "/report", "/artifact"):
            assert alice.get(f"/v1/jobs/{job['id']}{path}").status_code == 200
            other = bob.get(f"/v1/jobs/{job['id']}{path}")
            assert other.status_code == 404 and other.json()["status"] == 404
        assert bob.delete(f"/v1/jobs/{job['id']}").status_code == 404
        assert bob.get("/v1/jobs").json()["items"] == []
        assert [j["id"] for j in alice.get("/v1/jobs").json()["items"]] == [job["id"]]


def test_malformed_multipart_is_4xx_quickly(server) -> None:
    boundary = "b0und4ry"
    ctype = {"content-type": f"multipart/form-data; boundary={boundary}"}
    junk = os.urandom(1024 * 1024)
    bodies = [
        junk,  # no boundary at all
        b"--" + boundary.encode() + b"\r\n" + b"X-Junk: y\r\n" * 10_000 + b"\r\n",  # header flood
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n{{}}\r\n--{boundary}--\r\n"
        .encode(),  # no model part
    ]
    with server.client() as c:
        for body in bodies:
            t0 = time.monotonic()
            r = c.post("/v1/jobs", content=body, headers=ctype)
            assert 400 <= r.status_code < 500, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert time.monotonic() - t0 < 5
    raw = (f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype['content-type']}\r\n"
           "Content-Length: -1\r\nConnection: close\r\n\r\nxxxx").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw)
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 4"), status_line
    assert list((server.data_dir / "tmp").iterdir()) == []
