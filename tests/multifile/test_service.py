"""A sharded Hugging Face model directory uploaded to the service as one model, frozen, downloaded."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fixtures.server import running_service
from layerfreeze.cli.main import main
from layerfreeze_client import apply

from multifile.hf import model_class, save_sharded, tiny_model
from multifile.test_directory import shard_tensors

FORMATS = ["safetensors", "bin"]
MAX_FILES = 12
SPEC = {"rules": [{"action": "freeze", "names": ["embeddings", "encoder.layer.0"]}]}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, subprocess_env: dict[str, str]) -> Iterator[str]:
    with running_service(tmp_path_factory.mktemp("multifile-service"), subprocess_env, workers="1",
                         max_model_files=str(MAX_FILES)) as base:
        yield base


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-bert")
    model = tiny_model("bert")
    return {fmt: save_sharded(model, root / fmt, fmt) for fmt in FORMATS}


def upload(client: httpx.Client, files: dict[str, bytes]) -> httpx.Response:
    parts = [("file", (path, data, "application/octet-stream")) for path, data in files.items()]
    return client.post("/v1/models", files=parts)


def directory_files(directory: Path) -> dict[str, bytes]:
    return {f.relative_to(directory).as_posix(): f.read_bytes() for f in sorted(directory.rglob("*"))
            if f.is_file()}


def freeze(client: httpx.Client, model_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v1/jobs?wait=60", json={"model": model_id, "spec": spec})
    assert r.status_code in (200, 202), r.text
    job = r.json()
    assert job["status"] == "succeeded", job
    return job


@pytest.mark.parametrize("fmt", FORMATS)
def test_directory_uploaded_frozen_and_downloaded_file_by_file(url: str, bert: dict[str, Path],
                                                                tmp_path: Path, fmt: str) -> None:
    src = bert[fmt]
    files = directory_files(src)
    assert len([p for p in files if p.endswith((".bin", ".safetensors"))]) >= 3
    with httpx.Client(base_url=url, timeout=120) as client:
        r = upload(client, files)
        assert r.status_code == 201, r.text
        model = r.json()
        assert sorted(f["path"] for f in model["files"]) == sorted(files)
        assert upload(client, files).json()["id"] == model["id"]  # the same directory is stored once

        job = freeze(client, model["id"], SPEC)
        report = client.get(f"/v1/jobs/{job['id']}/report").json()
        listing = {f["path"]: f for f in report["files"]["files"]}
        assert sorted(listing) == sorted(files)
        assert not listing["config.json"]["changed"] and listing[report["files"]["index"]]["changed"]

        out = tmp_path / "downloaded"
        for path, entry in listing.items():
            r = client.get(f"/v1/jobs/{job['id']}/files/{path}")
            assert r.status_code == 200, r.text
            assert r.headers["etag"] == f'"{entry["sha256"]}"'
            assert len(r.content) == entry["bytes"]
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            (out / path).write_bytes(r.content)
        assert (out / "config.json").read_bytes() == files["config.json"]

        # a byte range of a changed file, as /artifact serves one
        index = report["files"]["index"]
        r = client.get(f"/v1/jobs/{job['id']}/files/{index}", headers={"range": "bytes=2-9"})
        assert r.status_code == 206 and r.content == (out / index).read_bytes()[2:10]

        # the whole directory's patch rebuilds the same bytes; /artifact points to /files and /patch
        patch = client.get(f"/v1/jobs/{job['id']}/patch").json()
        assert sorted(e["path"] for e in patch["files"]) == sorted(files)
        assert len(json.dumps(patch)) < 64_000  # headers and flag bytes, never tensor data
        # /artifact: the whole output directory as one uncompressed tar, byte ranges included
        r = client.get(f"/v1/jobs/{job['id']}/artifact")
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
        tar = r.content
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            members = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}  # type: ignore[union-attr]
        top = job["output"]["filename"]
        assert members == {f"{top}/{p}": (out / p).read_bytes() for p in files}
        r = client.get(f"/v1/jobs/{job['id']}/artifact", headers={"range": "bytes=500-70000"})
        assert r.status_code == 206 and r.content == tar[500:70001]
        artifact = f"/v1/jobs/{job['id']}/artifact"
        etag = client.head(artifact).headers["etag"]
        assert client.get(artifact, headers={"if-none-match": etag}).status_code == 304
        assert client.get(f"/v1/jobs/{job['id']}/files/nothing.bin").status_code == 404

    patch_file = tmp_path / "patch.json"
    patch_file.write_text(json.dumps(patch))
    rebuilt = tmp_path / "rebuilt"
    assert main(["patch", "apply", str(patch_file), str(src), "-o", str(rebuilt)]) == 0
    for path in files:
        assert (rebuilt / path).read_bytes() == (out / path).read_bytes(), path

    # every tensor byte-identical; from_pretrained + apply give the report's states
    before, after = shard_tensors(src), shard_tensors(out)
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert tensor.view(torch.uint8).equal(after[name].view(torch.uint8)), name
    states = {p["name"]: p["requires_grad"] for p in report["parameters"]}
    assert 0 < sum(not v for v in states.values()) < len(states)
    loaded = model_class("bert").from_pretrained(out)
    assert apply(loaded, out) is not None
    assert {n: p.requires_grad for n, p in loaded.named_parameters()} == states


def test_model_report_and_preview_of_a_directory(url: str, bert: dict[str, Path]) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        model = upload(client, directory_files(bert["safetensors"])).json()
        as_is = client.get(f"/v1/models/{model['id']}/report").json()
        assert as_is["summary"]["frozen"] == 0 and as_is["files"]["index"] == "model.safetensors.index.json"
        preview = client.post(f"/v1/models/{model['id']}/preview", json=SPEC).json()
        assert preview["input"]["filename"] == "model" and preview["input"]["sha256"] == model["sha256"]
        job = freeze(client, model["id"], SPEC)
        frozen = client.get(f"/v1/jobs/{job['id']}/report").json()
    assert report_states_of(preview) == report_states_of(frozen)


def report_states_of(report: dict[str, Any]) -> dict[str, bool]:
    return {p["name"]: p["requires_grad"] for p in report["parameters"]}


@pytest.mark.parametrize("bad", ["../evil.bin", "/etc/passwd", "a/../../x", "CONFIG.JSON"])
def test_unsafe_path_is_refused_naming_it(url: str, bert: dict[str, Path], bad: str) -> None:
    files = directory_files(bert["safetensors"])
    files[bad] = b"{}"
    with httpx.Client(base_url=url, timeout=60) as client:
        r = upload(client, files)
    assert r.status_code == 422, r.text
    assert bad in r.json()["detail"]


def test_too_many_files_are_refused(url: str) -> None:
    files = {f"f{i}.json": b"{}" for i in range(MAX_FILES + 1)}
    with httpx.Client(base_url=url, timeout=60) as client:
        r = upload(client, files)
        assert r.status_code == 413, r.text
        assert str(MAX_FILES) in r.json()["detail"]
        assert upload(client, dict(list(files.items())[:2])).status_code == 422  # no weights: not a model


def test_index_naming_a_missing_shard_is_refused(url: str, bert: dict[str, Path], tmp_path: Path) -> None:
    d = shutil.copytree(bert["bin"], tmp_path / "broken")
    index = d / "pytorch_model.bin.index.json"
    doc = json.loads(index.read_text())
    doc["weight_map"][next(iter(doc["weight_map"]))] = "nowhere.bin"
    index.write_text(json.dumps(doc))
    with httpx.Client(base_url=url, timeout=60) as client:
        r = upload(client, directory_files(d))
        assert r.status_code == 422, r.text
        assert "nowhere.bin" in r.json()["detail"]


def test_single_file_upload_is_unchanged(url: str, bert: dict[str, Path]) -> None:
    data = sorted(bert["safetensors"].glob("model-*.safetensors"))[0]
    with httpx.Client(base_url=url, timeout=60) as client:
        r = client.post("/v1/models", files={"file": ("shard.safetensors", data.read_bytes())})
        assert r.status_code == 201, r.text
        assert [f["path"] for f in r.json()["files"]] == ["shard.safetensors"]
