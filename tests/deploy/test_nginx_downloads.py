"""The service behind nginx, configured from the deployment's own template (deploy/nginx/): uploads and
streamed downloads pass through, and a download that is one stored file whole is handed to nginx with
X-Accel-Redirect (setting ``accel_redirect``) and sent from the data directory with sendfile, ranges
included, under the service's own checks and headers. The internal location is not reachable directly.

Needs nginx (Debian's nginx-light): skipped without it, except under CI (``CI`` set), where that is a
failure; ``.ci/run`` installs it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.models import build, save
from fixtures.server import Service
from layerfreeze.api.downloads import repr_digest
from layerfreeze.settings import Settings
from models.test_migration import SCHEMA, _old_job  # the schema-1 data directory of that test
from multifile.hf import save_sharded, tiny_model
from pydantic import ValidationError

from testing.nginx import Nginx, nginx_binary

ACCEL = "/_layerfreeze/data/"
TOKENS = {"tok-alice": "alice", "tok-bob": "bob"}
ALICE = {"authorization": "Bearer tok-alice"}
BOB = {"authorization": "Bearer tok-bob"}
SPEC = {"rules": [{"action": "freeze", "names": ["embeddings"]}]}

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def nginx() -> str:
    binary = nginx_binary()
    if binary is None:
        message = "nginx is not installed (Debian: apt-get install nginx-light; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(f"CI needs nginx for the proxy tests: {message}")
        pytest.skip(message)
    return binary


@pytest.fixture(scope="module")
def stack(nginx: str, tmp_path_factory: pytest.TempPathFactory,
          subprocess_env: dict[str, str]) -> Iterator[tuple[Service, Nginx]]:
    root = tmp_path_factory.mktemp("behind-nginx")
    settings = {"workers": "1", "accel_redirect": ACCEL,
                "tokens": ",".join(f"{t}:{n}" for t, n in TOKENS.items())}
    with Service(root / "data", settings, env=subprocess_env, log=root / "server.log") as svc, \
            Nginx(f"127.0.0.1:{svc.port}", svc.data_dir, ACCEL, binary=nginx) as proxy:
        yield svc, proxy


@pytest.fixture(scope="module")
def frozen(stack: tuple[Service, Nginx], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A sharded model directory uploaded through the proxy and frozen: some files changed (the shards
    that hold the embeddings, the index), the others (config.json, the remaining shards) left whole."""
    _svc, proxy = stack
    directory = save_sharded(tiny_model("bert"), tmp_path_factory.mktemp("bert") / "bert", "safetensors")
    # A tokenizer of a few hundred KiB, as real model directories carry: a file no freeze changes.
    vocab = {f"tok{i:06d}": i for i in range(20_000)}
    (directory / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": vocab}}))
    files = {f.relative_to(directory).as_posix(): f.read_bytes() for f in sorted(directory.rglob("*"))
             if f.is_file()}
    with httpx.Client(base_url=proxy.url, headers=ALICE, timeout=120) as client:
        r = client.post("/v1/models", files=[("file", (p, d, "application/octet-stream"))
                                             for p, d in files.items()])
        assert r.status_code == 201, r.text
        r = client.post("/v1/jobs?wait=60", json={"model": r.json()["id"], "spec": SPEC})
        assert r.status_code in (200, 202), r.text
        job = r.json()
        assert job["status"] == "succeeded", job
        report = client.get(f"/v1/jobs/{job['id']}/report").json()
    listing = {f["path"]: f for f in report["files"]["files"]}
    return {"job": job["id"], "files": files, "listing": listing,
            "whole": sorted(p for p, f in listing.items() if not f["changed"]),
            "changed": sorted(p for p, f in listing.items() if f["changed"])}


def test_whole_stored_files_are_sent_by_nginx_with_the_service_headers(
        stack: tuple[Service, Nginx], frozen: dict[str, Any]) -> None:
    svc, proxy = stack
    job, files, listing = frozen["job"], frozen["files"], frozen["listing"]
    assert {"config.json", "tokenizer.json"} <= set(frozen["whole"]) and frozen["changed"]
    with httpx.Client(headers=ALICE, timeout=60) as client:
        for path in frozen["whole"]:
            sha = listing[path]["sha256"]
            # The service itself answers with the redirect and no body ...
            direct = client.get(f"{svc.url}/v1/jobs/{job}/files/{path}")
            assert direct.status_code == 200 and direct.content == b""
            assert direct.headers["x-accel-redirect"] == f"{ACCEL}blobs/{sha[:2]}/{sha}"
            # ... and through nginx the client gets the file, with the service's validator and digest.
            r = client.get(f"{proxy.url}/v1/jobs/{job}/files/{path}")
            assert r.status_code == 200, r.text
            assert r.content == files[path]
            assert hashlib.sha256(r.content).hexdigest() == sha
            assert r.headers["etag"] == f'"{sha}"'
            assert r.headers["repr-digest"] == repr_digest(sha)
            assert r.headers["content-length"] == str(len(files[path]))
            assert r.headers["content-type"] == "application/octet-stream"
            name = path.split("/")[-1]
            assert r.headers["content-disposition"].startswith(f'attachment; filename="{name}"')
            assert r.headers["cache-control"] == "private, no-cache"
            assert r.headers["accept-ranges"] == "bytes"
            assert "x-accel-redirect" not in r.headers
            assert "last-modified" in r.headers  # nginx's static file handler sent it, not the service

        # Byte ranges are nginx's: one range, a suffix, several (multipart), If-Range with the sha ETag.
        path = "tokenizer.json"
        data, sha, url = files[path], listing[path]["sha256"], f"{proxy.url}/v1/jobs/{job}/files/{path}"
        r = client.get(url, headers={"range": "bytes=100-999"})
        assert r.status_code == 206 and r.content == data[100:1000]
        assert r.headers["content-range"] == f"bytes 100-999/{len(data)}"
        assert r.headers["etag"] == f'"{sha}"'
        r = client.get(url, headers={"range": "bytes=-10"})
        assert r.status_code == 206 and r.content == data[-10:]
        r = client.get(url, headers={"range": "bytes=0-9,20-29"})
        assert r.status_code == 206 and r.headers["content-type"].startswith("multipart/byteranges")
        assert data[:10] in r.content and data[20:30] in r.content
        r = client.get(url, headers={"range": f"bytes={len(data) - 5}-", "if-range": f'"{sha}"'})
        assert r.status_code == 206 and r.content == data[-5:]  # a resumed download, as the client does
        r = client.get(url, headers={"range": "bytes=0-9", "if-range": '"another"'})
        assert r.status_code == 200 and r.content == data  # the validator changed: the whole file

        # The service's own answers stay its own, with and without the proxy: 304, 416, HEAD.
        for base in (proxy.url, svc.url):
            url = f"{base}/v1/jobs/{job}/files/{path}"
            r = client.get(url, headers={"if-none-match": f'"{sha}"'})
            assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == f'"{sha}"'
            r = client.get(url, headers={"range": f"bytes={len(data) + 10}-"})
            assert r.status_code == 416 and r.headers["content-type"] == "application/problem+json"
            r = client.head(url)
            assert r.status_code == 200 and r.headers["content-length"] == str(len(data))
            assert "x-accel-redirect" not in r.headers
    assert "Traceback" not in svc.log.read_text()  # no answer ended in an exception after its headers


def test_computed_downloads_stream_through_the_proxy(stack: tuple[Service, Nginx],
                                                     frozen: dict[str, Any]) -> None:
    svc, proxy = stack
    job, listing = frozen["job"], frozen["listing"]
    with httpx.Client(headers=ALICE, timeout=60) as client:
        rebuilt = {}
        for path in frozen["changed"]:
            direct = client.get(f"{svc.url}/v1/jobs/{job}/files/{path}")
            assert "x-accel-redirect" not in direct.headers and len(direct.content) == listing[path]["bytes"]
            r = client.get(f"{proxy.url}/v1/jobs/{job}/files/{path}")
            assert r.status_code == 200 and r.content == direct.content
            assert hashlib.sha256(r.content).hexdigest() == listing[path]["sha256"]
            assert r.headers["etag"] == f'"{listing[path]["sha256"]}"'
            r = client.get(f"{proxy.url}/v1/jobs/{job}/files/{path}", headers={"range": "bytes=3-40"})
            assert r.status_code == 206 and r.content == direct.content[3:41]
            rebuilt[path] = direct.content
        # The whole output directory as one tar (composed on the fly): through the proxy, intact.
        r = client.get(f"{proxy.url}/v1/jobs/{job}/artifact")
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
        assert "x-accel-redirect" not in client.get(f"{svc.url}/v1/jobs/{job}/artifact").headers
        with tarfile.open(fileobj=io.BytesIO(r.content)) as archive:
            members = {m.name.split("/", 1)[1]: archive.extractfile(m).read()  # type: ignore[union-attr]
                       for m in archive.getmembers()}
        assert members == {**frozen["files"], **rebuilt}


def test_tokens_and_tenants_are_checked_before_the_redirect(stack: tuple[Service, Nginx],
                                                            frozen: dict[str, Any]) -> None:
    _svc, proxy = stack
    url = f"{proxy.url}/v1/jobs/{frozen['job']}/files/config.json"
    r = httpx.get(url, timeout=30)
    assert r.status_code == 401 and r.content != frozen["files"]["config.json"]
    r = httpx.get(url, headers=BOB, timeout=30)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert "x-accel-redirect" not in r.headers


def test_the_internal_location_is_not_reachable_directly(stack: tuple[Service, Nginx],
                                                         frozen: dict[str, Any]) -> None:
    svc, proxy = stack
    sha = frozen["listing"]["config.json"]["sha256"]
    assert (svc.data_dir / "blobs" / sha[:2] / sha).is_file()
    for path in (f"blobs/{sha[:2]}/{sha}", "jobs.sqlite3", f"jobs/{frozen['job']}/patch.json",
                 f"../data/blobs/{sha[:2]}/{sha}", ""):
        for headers in ({}, ALICE):
            r = httpx.get(f"{proxy.url}{ACCEL}{path}", headers=headers, timeout=30)
            assert r.status_code == 404, (path, r.status_code)
            assert frozen["files"]["config.json"] not in r.content
    # nor by a client that sends the redirect header itself: it is a response header, read from the API only
    r = httpx.get(f"{proxy.url}/healthz", headers={"x-accel-redirect": f"{ACCEL}jobs.sqlite3"}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")


def test_a_full_output_kept_from_before_stored_models_is_sent_by_nginx(
        nginx: str, tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """A job finished before outputs were stored as patches has its whole output on disk: nginx sends it."""
    data = tmp_path / "svc" / "data"
    data.mkdir(parents=True)
    src = save(build("seq3"), tmp_path / "m.pt", "state_dict")
    db = sqlite3.connect(data / "jobs.sqlite3", isolation_level=None)
    db.executescript(SCHEMA)
    _old_job(db, data, "old-done", src, "succeeded")
    db.close()
    output = (data / "jobs" / "old-done" / "output").read_bytes()
    sha = hashlib.sha256(output).hexdigest()
    with Service(data, {"workers": "1", "accel_redirect": ACCEL}, env=subprocess_env,
                 log=tmp_path / "server.log") as svc, \
            Nginx(f"127.0.0.1:{svc.port}", svc.data_dir, ACCEL, binary=nginx) as proxy:
        direct = httpx.get(f"{svc.url}/v1/jobs/old-done/artifact", timeout=30)
        assert direct.status_code == 200 and direct.content == b""
        assert direct.headers["x-accel-redirect"] == f"{ACCEL}jobs/old-done/output"
        r = httpx.get(f"{proxy.url}/v1/jobs/old-done/artifact", timeout=30)
        assert r.status_code == 200 and r.content == output
        assert r.headers["etag"] == f'"{sha}"' and r.headers["repr-digest"] == repr_digest(sha)
        assert 'filename="m.frozen.pt"' in r.headers["content-disposition"]
        r = httpx.get(f"{proxy.url}/v1/jobs/old-done/artifact", headers={"range": "bytes=64-127"}, timeout=30)
        assert r.status_code == 206 and r.content == output[64:128]
        # the service counts what it handed to the proxy as sent
        metrics = httpx.get(f"{svc.url}/metrics", timeout=30).text
        sent = [float(line.split()[-1]) for line in metrics.splitlines()
                if line.startswith("layerfreeze_download_bytes_total ")]
        assert sent == [2 * len(output) + 64]  # the direct redirect, the full download, the range


@pytest.mark.parametrize("value", ["data", "/data", "data/", "/a b/", "/../", "/x/../y/"])
def test_accel_redirect_setting_must_be_a_path_prefix(value: str) -> None:
    with pytest.raises(ValidationError, match="accel_redirect"):
        Settings(accel_redirect=value)


def test_accel_redirect_is_off_by_default() -> None:
    assert Settings().accel_redirect == ""
    assert Settings(accel_redirect="/_layerfreeze/data/").accel_redirect == "/_layerfreeze/data/"
