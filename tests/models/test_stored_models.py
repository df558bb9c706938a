"""Stored models through the real service: the artifact of a job on a stored model is byte-identical to
``layerfreeze freeze`` in every format, its patch rebuilds it from the input, and content is stored once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from fixtures.models import FORMATS, build, save
from layerfreeze.freeze import freeze_file
from layerfreeze_client._patch import rebuild, single_file

from models.conftest import client

SPECS: dict[str, dict[str, Any]] = {
    "empty": {},
    "freeze-first": {"rules": [{"action": "freeze", "names": ["0", "conv1", "embed"]}], "strict": False},
    "all-but-bias": {"rules": [{"action": "freeze", "regex": [".*"]},
                               {"action": "unfreeze", "params": ["bias"]}]},
    "unfreeze-all": {"rules": [{"action": "unfreeze", "regex": [".*"]}]},
}
MODELS = ("seq3", "cnn", "transformer")


def _checkpoint(tmp: Path, model: str, fmt: str, seed: int = 0) -> Path:
    suffix = ".safetensors" if fmt == "safetensors" else ".pt"
    return save(build(model, seed), tmp / f"{model}-{fmt}{suffix}", fmt)


def _upload(c: Any, path: Path) -> Any:
    with open(path, "rb") as f:
        return c.post("/v1/models", files={"file": (path.name, f)})


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("model", MODELS)
def test_artifact_and_patch_equal_the_local_freeze(service, tmp_path: Path, model: str, fmt: str) -> None:
    url, _data = service
    src = _checkpoint(tmp_path, model, fmt)
    with client(url) as c:
        r = _upload(c, src)
        assert r.status_code in (200, 201), r.text
        stored = r.json()
        assert stored["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
        assert stored["files"] == [{"path": src.name, "bytes": src.stat().st_size,
                                    "sha256": stored["sha256"]}]
        for name, spec in SPECS.items():
            local = tmp_path / f"local-{name}"
            expected = freeze_file(src, spec, local)
            r = c.post("/v1/jobs", params={"wait": 30}, json={"model": stored["id"], "spec": spec})
            assert r.status_code == 200, r.text
            job = r.json()
            assert job["model"] == stored["id"] and job["status"] == "succeeded"
            art = c.get(job["links"]["artifact"])
            assert art.status_code == 200
            assert art.content == local.read_bytes(), f"{model}/{fmt}/{name}: artifact differs"
            sha = hashlib.sha256(art.content).hexdigest()
            assert art.headers["etag"] == f'"{sha}"' and sha == expected.output.sha256
            assert c.get(job["links"]["self"]).json()["output"]["sha256"] == sha
            report = c.get(job["links"]["report"]).json()
            assert report["output"]["sha256"] == sha
            assert [p["requires_grad"] for p in report["parameters"]] == [
                p.requires_grad for p in expected.parameters]
            patch = c.get(job["links"]["patch"]).json()
            assert patch["format"] == "layerfreeze-patch/1"
            entry = single_file(patch)
            assert entry["base"] == {"sha256": stored["sha256"], "bytes": src.stat().st_size}
            assert entry["output"] == {"sha256": sha, "bytes": len(art.content)}
            literal = sum(len(s["data"]) for s in entry["segments"] if "data" in s)
            assert literal < 64 * 1024  # the delta is the changed bytes, not the tensors
            rebuilt = rebuild(src, entry, tmp_path / f"rebuilt-{name}")
            assert rebuilt.read_bytes() == art.content
            ranged = c.get(job["links"]["artifact"], headers={"range": "bytes=100-199"})
            assert ranged.status_code == 206 and ranged.content == art.content[100:200]


def test_content_is_stored_once_per_tenant_and_never_shown_to_another(service, tmp_path: Path) -> None:
    url, data = service
    src = _checkpoint(tmp_path, "seq3", "state_dict", seed=1)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    with client(url, "alice") as alice, client(url, "bob") as bob:
        assert alice.get("/v1/models", params={"sha256": sha}).json()["items"] == []
        first = _upload(alice, src)
        again = _upload(alice, src)
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json()["id"] == again.json()["id"]
        assert first.headers["location"] == f"/v1/models/{first.json()['id']}"
        assert alice.get("/v1/models", params={"sha256": sha}).json()["items"][0]["id"] == first.json()["id"]
        # A multipart job on the same content reuses the model (it is not read again).
        with open(src, "rb") as f:
            job = alice.post("/v1/jobs", params={"wait": 30}, data={"spec": "{}"},
                             files={"model": (src.name, f)}).json()
        assert job["model"] == first.json()["id"]
        # Bob cannot see Alice's model, nor learn that the content exists; his upload is his own model.
        assert bob.get("/v1/models", params={"sha256": sha}).json()["items"] == []
        assert bob.get(f"/v1/models/{first.json()['id']}").status_code == 404
        assert bob.post("/v1/jobs", json={"model": first.json()["id"]}).status_code == 404
        theirs = _upload(bob, src)
        assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]
    assert (data / "blobs" / sha[:2] / sha).is_file()
    assert [p.name for p in (data / "blobs").glob("*/*") if p.name == sha] == [sha]  # one copy on disk


def test_preview_is_the_job_report_and_writes_nothing(service, tmp_path: Path) -> None:
    url, data = service
    src = _checkpoint(tmp_path, "cnn", "module", seed=2)
    spec = {"rules": [{"action": "freeze", "types": ["Conv2d"]}]}
    with client(url) as c:
        model = _upload(c, src).json()
        jobs_before = sorted(p.name for p in (data / "jobs").iterdir())
        preview = c.post(f"/v1/models/{model['id']}/preview", json=spec)
        assert preview.status_code == 200
        assert sorted(p.name for p in (data / "jobs").iterdir()) == jobs_before
        job = c.post("/v1/jobs", params={"wait": 30}, json={"model": model["id"], "spec": spec}).json()
        report = c.get(job["links"]["report"]).json()
        assert preview.json()["parameters"] == report["parameters"]
        assert preview.json()["output"] is None and preview.json()["dry_run"] is True
        bad = c.post(f"/v1/models/{model['id']}/preview", json={"rules": [{"action": "melt"}]})
        assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
        as_is = c.get(f"/v1/models/{model['id']}/report").json()
        assert as_is["summary"]["frozen"] == 0 and model["format"] == "torch.module"


def test_deleting_a_model_keeps_its_jobs_until_they_go(service, tmp_path: Path) -> None:
    url, data = service
    src = _checkpoint(tmp_path, "transformer", "safetensors", seed=3)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    with client(url, "bob") as c:
        model = _upload(c, src).json()
        job = c.post("/v1/jobs", params={"wait": 30}, json={"model": model["id"], "spec": {}}).json()
        art = c.get(job["links"]["artifact"]).content
        assert c.delete(f"/v1/models/{model['id']}").status_code == 204
        assert c.get(f"/v1/models/{model['id']}").status_code == 404
        assert c.post("/v1/jobs", json={"model": model["id"]}).status_code == 404
        assert c.get(job["links"]["artifact"]).content == art  # the job still holds the file
        assert (data / "blobs" / sha[:2] / sha).is_file()
        assert c.delete(job["links"]["self"]).status_code == 204
    assert not (data / "blobs" / sha[:2] / sha).exists()  # nothing references it any more


def test_unreadable_upload_is_refused_and_leaves_no_model(service, tmp_path: Path) -> None:
    url, data = service
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    sha = hashlib.sha256(junk.read_bytes()).hexdigest()
    with client(url) as c:
        r = _upload(c, junk)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
        assert c.get("/v1/models", params={"sha256": sha}).json()["items"] == []
        bad = c.post("/v1/jobs", json={"model": "x", "spec": {}, "extra": 1})
        assert bad.status_code == 422 and json.dumps(bad.json()).count("/extra")
    assert not (data / "blobs" / sha[:2] / sha).exists()
