"""Upload, job, report, download through a real server; the artifact carries the report's flags."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from svc_helpers import checkpoint, load_flags, report_flags, submit, wait_for

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(server_any_mode):
    """Every test here runs against the embedded and the distributed mode (fixtures.modes)."""
    return server_any_mode


def test_freeze_roundtrip_artifact_has_report_flags(server, tmp_path: Path) -> None:
    src = checkpoint(tmp_path, "seq3")
    with server.client() as c:
        r = submit(c, src, {"rules": [{"action": "freeze", "names": ["0"]}]})
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["location"] == f"/v1/jobs/{job['id']}" == job["links"]["self"]
        assert job["input"] == {"filename": src.name, "bytes": src.stat().st_size,
                                "sha256": hashlib.sha256(src.read_bytes()).hexdigest()}
        job = wait_for(c, job["id"])
        assert job["status"] == "succeeded", job
        assert job["created_at"].endswith("Z") and job["finished_at"].endswith("Z")

        report = c.get(job["links"]["report"]).json()
        flags = report_flags(report)
        assert flags == {"0.weight": False, "0.bias": False, "2.weight": True, "2.bias": True}

        art = c.get(job["links"]["artifact"])
        assert art.status_code == 200
        digest = hashlib.sha256(art.content).digest()
        assert art.headers["etag"] == f'"{digest.hex()}"'
        assert art.headers["repr-digest"] == f"sha-256=:{base64.b64encode(digest).decode()}:"
        assert art.headers["content-disposition"].startswith(
            f'attachment; filename="{src.stem}.frozen{src.suffix}"')
        assert report["output"]["sha256"] == digest.hex() == job["output"]["sha256"]
        assert load_flags(art.content) == flags


def test_artifact_name_follows_the_detected_format(server, tmp_path: Path) -> None:
    """A torch archive uploaded as ``.safetensors`` comes back as ``.pt``: torch.load picks its reader
    by that suffix."""
    misnamed = checkpoint(tmp_path, "seq3").rename(tmp_path / "seq3.safetensors")
    with server.client() as c:
        job = wait_for(c, submit(c, misnamed, {}).json()["id"])
        assert job["status"] == "succeeded", job
        assert job["output"]["filename"] == "seq3.frozen.pt"
        assert c.get(job["links"]["report"]).json()["output"]["filename"] == "seq3.frozen.pt"
        art = c.get(job["links"]["artifact"])
        assert art.headers["content-disposition"].startswith('attachment; filename="seq3.frozen.pt"')


def test_download_ranges_and_validators(server, tmp_path: Path) -> None:
    src = checkpoint(tmp_path, "seq12")
    with server.client() as c:
        job = submit(c, src, {}, wait=30).json()
        assert job["status"] == "succeeded"
        url = job["links"]["artifact"]
        full = c.get(url).content
        size = len(full)

        part = c.get(url, headers={"range": "bytes=10-99"})
        assert part.status_code == 206
        assert part.content == full[10:100]
        assert part.headers["content-range"] == f"bytes 10-99/{size}"
        assert part.headers["etag"] == f'"{hashlib.sha256(full).hexdigest()}"'

        tail = c.get(url, headers={"range": "bytes=-16"})
        assert tail.status_code == 206 and tail.content == full[-16:]

        multi = c.get(url, headers={"range": "bytes=0-3,20-29"})
        assert multi.status_code == 206
        assert multi.headers["content-type"].startswith("multipart/byteranges; boundary=")
        assert full[0:4] in multi.content and full[20:30] in multi.content
        assert int(multi.headers["content-length"]) == len(multi.content)

        bad = c.get(url, headers={"range": f"bytes={size}-"})
        assert bad.status_code == 416
        assert bad.headers["content-range"] == f"bytes */{size}"
        assert bad.headers["content-type"] == "application/problem+json"

        many = c.get(url, headers={"range": "bytes=" + ",".join(f"{i}-{i}" for i in range(10_000))})
        assert many.status_code == 416

        etag = part.headers["etag"]
        assert c.get(url, headers={"if-none-match": etag}).status_code == 304
        stale = c.get(url, headers={"range": "bytes=0-9", "if-range": '"not-the-etag"'})
        assert stale.status_code == 200 and stale.content == full

        head = c.head(url)
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == size


def test_dry_run_has_report_but_no_artifact(server, tmp_path: Path) -> None:
    src = checkpoint(tmp_path, "seq3")
    with server.client() as c:
        r = submit(c, src, {"rules": [{"action": "freeze", "names": ["2"]}]}, wait=30, dry_run=True)
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["dry_run"] is True and job["links"]["artifact"] is None
        report = c.get(job["links"]["report"]).json()
        assert report_flags(report)["2.weight"] is False
        art = c.get(f"/v1/jobs/{job['id']}/artifact")
        assert art.status_code == 404
        assert art.headers["content-type"] == "application/problem+json"


def test_list_page_and_delete(server, tmp_path: Path) -> None:
    src = checkpoint(tmp_path, "seq3")
    with server.client() as c:
        ids = [submit(c, src, {}, wait=30).json()["id"] for _ in range(3)]
        page = c.get("/v1/jobs", params={"limit": 2}).json()
        assert [j["id"] for j in page["items"]] == ids[::-1][:2]
        assert page["next"]
        rest = c.get(page["next"]).json()
        assert rest["items"][0]["id"] == ids[0]

        job_dir = server.data_dir / "jobs" / ids[0]
        assert job_dir.is_dir()
        assert c.delete(f"/v1/jobs/{ids[0]}").status_code == 204
        assert not job_dir.exists()
        assert c.get(f"/v1/jobs/{ids[0]}").status_code == 404
        assert c.delete(f"/v1/jobs/{ids[0]}").status_code == 404


def test_bad_spec_is_422_with_pointer_and_nothing_queued(server, tmp_path: Path) -> None:
    src = checkpoint(tmp_path, "seq3")
    with server.client() as c:
        before = len(c.get("/v1/jobs", params={"limit": 200}).json()["items"])
        r = submit(c, src, {"rules": [{"action": "melt", "names": ["0"]}]})
        assert r.status_code == 422
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["status"] == 422 and body["errors"][0]["pointer"].startswith("/rules/0")
        assert len(c.get("/v1/jobs", params={"limit": 200}).json()["items"]) == before
        assert submit(c, src, "{not json").status_code == 422
    assert [p for p in (server.data_dir / "tmp").rglob("*") if p.is_file()] == []


def test_download_survives_a_client_that_leaves_midway(server, tmp_path: Path) -> None:
    import torch

    src = tmp_path / "wide.pt"
    torch.manual_seed(0)
    torch.save(torch.nn.Linear(2048, 2048).state_dict(), src)  # 16 MiB: several read chunks
    with server.client() as c:
        job = submit(c, src, {"rules": [{"action": "freeze", "params": ["bias"]}]}, wait=30).json()
        url = job["links"]["artifact"]
        for _ in range(3):
            with c.stream("GET", url) as r:
                next(r.iter_bytes(65536))  # then hang up
        full = c.get(url)
        assert hashlib.sha256(full.content).hexdigest() == job["output"]["sha256"]
        assert load_flags(full.content) == {"weight": True, "bias": False}
        assert c.get("/healthz").status_code == 200
