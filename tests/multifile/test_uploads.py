"""A model directory over resumable uploads (``POST /v1/models {"files": [...]}``), its limits and
refusals on both upload paths, jobs that outlive their model, and the client's side of it."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.server import running_service
from layerfreeze_client import Client, ClientError
from layerfreeze_client.cli import main as client_cli
from safetensors.torch import load_file, save_file

from multifile.hf import save_sharded, tiny_model
from multifile.test_service import directory_files, upload

MAX_FILES = 12
MAX_BYTES = 4 << 20
TUS = {"tus-resumable": "1.0.0"}
SPEC = {"rules": [{"action": "freeze", "names": ["wte", "h.0"]}]}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, subprocess_env: dict[str, str]
            ) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("multifile-uploads")
    with running_service(root, subprocess_env, workers="1", max_model_files=str(MAX_FILES),
                         max_upload_bytes=str(MAX_BYTES)) as base:
        yield base, root / "data"


@pytest.fixture(scope="module")
def url(service: tuple[str, Path]) -> str:
    return service[0]


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-gpt2")
    model = tiny_model("gpt2")
    return {fmt: save_sharded(model, root / fmt, fmt) for fmt in ("safetensors", "bin")}


def tus_upload(client: httpx.Client, data: bytes, name: str = "f", send: int | None = None) -> str:
    meta = "filename " + base64.b64encode(name.encode()).decode()
    r = client.post("/v1/uploads", headers={**TUS, "upload-length": str(len(data)), "upload-metadata": meta})
    assert r.status_code == 201, r.text
    location = r.headers["location"]
    body = data if send is None else data[:send]
    r = client.patch(location, content=body, headers={
        **TUS, "upload-offset": "0", "content-type": "application/offset+octet-stream"})
    assert r.status_code == 204, r.text
    return location.rsplit("/", 1)[-1]


def post_files(client: httpx.Client, named: list[tuple[str, str]]) -> httpx.Response:
    return client.post("/v1/models", json={"files": [{"path": p, "upload": u} for p, u in named]})


def blob_count(data_dir: Path) -> int:
    return sum(1 for d in (data_dir / "blobs").iterdir() for _ in d.iterdir())


def test_resumable_uploads_become_one_model_and_wait_for_their_last_byte(
        url: str, gpt2: dict[str, Path]) -> None:
    files = directory_files(gpt2["safetensors"])
    with httpx.Client(base_url=url, timeout=60) as client:
        by_form = upload(client, files).json()
        last = sorted(files)[-1]
        named = [(p, tus_upload(client, d, p, send=len(d) // 2 if p == last else None))
                 for p, d in files.items()]
        r = post_files(client, named)
        assert r.status_code == 409, r.text
        assert dict(named)[last] in r.json()["detail"]
        for _p, upload_id in named:  # a refusal takes none of them: every upload is as it was
            assert client.head(f"/v1/uploads/{upload_id}", headers=TUS).status_code == 200
        upload_id = dict(named)[last]
        held = int(client.head(f"/v1/uploads/{upload_id}", headers=TUS).headers["upload-offset"])
        r = client.patch(f"/v1/uploads/{upload_id}", content=files[last][held:], headers={
            **TUS, "upload-offset": str(held), "content-type": "application/offset+octet-stream"})
        assert r.status_code == 204
        r = post_files(client, named)
        assert r.status_code == 200, r.text  # the same directory as the form's: the model already stored
        model = r.json()
        assert model["id"] == by_form["id"] and model["sha256"] == by_form["sha256"]
        assert sorted(f["path"] for f in model["files"]) == sorted(files)
        for _p, upload_id in named:  # taken: the uploads are gone
            assert client.head(f"/v1/uploads/{upload_id}", headers=TUS).status_code == 404


@pytest.mark.parametrize(("paths", "status", "named"), [
    (["config.json", "../evil.bin"], 422, "../evil.bin"),
    (["/abs/model.safetensors"], 422, "/abs/model.safetensors"),
    (["config.json", "CONFIG.json"], 422, "CONFIG.json"),
    (["config.json", "config.json"], 422, "config.json"),
    (["a", "a/b"], 422, "a/b"),
    ([f"f{i}.json" for i in range(MAX_FILES + 1)], 413, str(MAX_FILES)),
])
def test_unsafe_or_too_many_paths_are_refused_before_any_upload_is_taken(
        url: str, paths: list[str], status: int, named: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        ids = [tus_upload(client, b"{}") for _ in paths]
        r = post_files(client, list(zip(paths, ids, strict=True)))
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert named in r.json()["detail"]
        for upload_id in ids:
            assert client.head(f"/v1/uploads/{upload_id}", headers=TUS).status_code == 200


def test_malformed_file_lists_and_total_size_are_refused(url: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        one = tus_upload(client, b"{}")
        for body in ({"files": []}, {"files": [{"path": "a.json"}]}, {"files": "a"},
                     {"files": [{"path": "a.json", "upload": one}], "more": 1},
                     {"files": [{"path": 1, "upload": one}]}):
            r = client.post("/v1/models", json=body)
            assert r.status_code == 400, (body, r.text)
        r = post_files(client, [("a.json", one), ("b.json", one)])
        assert r.status_code == 400 and one in r.json()["detail"]
        big = [tus_upload(client, b"\0" * (MAX_BYTES // 2 + 1)) for _ in range(2)]
        r = post_files(client, [("a.bin", big[0]), ("b.bin", big[1])])
        assert r.status_code == 413 and str(MAX_BYTES) in r.json()["detail"]
        assert client.head(f"/v1/uploads/{big[0]}", headers=TUS).status_code == 200


def test_a_multipart_directory_over_the_total_size_is_refused(url: str) -> None:
    files = {"a.bin": b"\0" * (MAX_BYTES // 2 + 1), "b.bin": b"\0" * (MAX_BYTES // 2 + 1)}
    with httpx.Client(base_url=url, timeout=60) as client:
        r = upload(client, files)
    assert r.status_code == 413, r.text


def rewrite_safetensors(path: Path, change: Any) -> None:
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("case", ["key-not-in-index", "key-in-two-shards", "missing-shard"])
def test_index_and_shards_that_disagree_are_refused_naming_it(
        url: str, gpt2: dict[str, Path], tmp_path: Path, fmt: str, case: str) -> None:
    import torch

    d = shutil.copytree(gpt2[fmt], tmp_path / "broken")
    index = next(d.glob("*.index.json"))
    doc = json.loads(index.read_text())
    shards = sorted(set(doc["weight_map"].values()))
    second = d / shards[1]
    if case == "missing-shard":
        second.unlink()
        named = shards[1]
    else:
        if case == "key-not-in-index":
            name, value = "extra.weight", torch.zeros(2)
        else:  # a key of the first shard, also in the second
            name = next(k for k, v in doc["weight_map"].items() if v == shards[0])
            value = torch.zeros(2)
        if fmt == "safetensors":
            rewrite_safetensors(second, lambda t: t.__setitem__(name, value))
        else:
            state = torch.load(second, weights_only=True)
            state[name] = value
            torch.save(state, second)
        named = name
    with httpx.Client(base_url=url, timeout=60) as client:
        r = upload(client, directory_files(d))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert named in r.json()["detail"]


def test_deleting_the_model_keeps_every_download_of_its_jobs(
        service: tuple[str, Path], gpt2: dict[str, Path], tmp_path: Path) -> None:
    url, data_dir = service
    src = gpt2["bin"]
    files = directory_files(src)
    before = blob_count(data_dir)
    with Client(url) as client, httpx.Client(base_url=url, timeout=60) as http:
        model = client.upload_directory(src)
        job = client.wait(client.submit_stored(model["id"], SPEC, wait=30), 60)
        report = client.report(job)
        assert http.delete(f"/v1/models/{model['id']}").status_code == 204
        assert http.get(f"/v1/models/{model['id']}").status_code == 404

        out: dict[str, bytes] = {}
        assert report.files is not None
        for entry in report.files.files:
            r = http.get(f"/v1/jobs/{job.id}/files/{entry.path}")
            assert r.status_code == 200, r.text
            assert r.headers["etag"] == f'"{entry.sha256}"'
            out[entry.path] = r.content
        assert out["config.json"] == files["config.json"] and out.keys() == files.keys()
        r = http.get(f"/v1/jobs/{job.id}/artifact")
        assert r.status_code == 200, r.text
        with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
            members = {m.name.split("/", 1)[1]: tar.extractfile(m).read()  # type: ignore[union-attr]
                       for m in tar.getmembers()}
        assert members == out
        r = http.get(f"/v1/jobs/{job.id}/patch")
        assert r.status_code == 200 and {e["path"] for e in r.json()["files"]} == set(files)
        rebuilt = client.freeze(src, SPEC, tmp_path / "again", progress=False)  # a new model, same bytes
        assert directory_files(rebuilt.output) == out

        # once the jobs and the models are deleted too, their blobs go
        client.delete(job)
        client.delete(rebuilt.job)
        assert http.delete(f"/v1/models/{rebuilt.job.model}").status_code == 204
        assert http.get(f"/v1/jobs/{job.id}/files/config.json").status_code == 404
    assert blob_count(data_dir) == before


class Recording(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.paths: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append((request.method, request.url.path))
        return super().handle_request(request)


def test_client_uploads_resumably_and_rebuilds_from_the_patch(
        url: str, gpt2: dict[str, Path], tmp_path: Path) -> None:
    transport = Recording()
    src = gpt2["safetensors"]
    with Client(url, transport=transport) as client:
        result = client.freeze(src, SPEC, tmp_path / "out", progress=False)
    assert directory_files(tmp_path / "out").keys() == directory_files(src).keys()
    calls = transport.paths
    assert sum(m == "POST" and p == "/v1/uploads" for m, p in calls) == len(directory_files(src))
    assert ("GET", f"/v1/jobs/{result.job.id}/patch") in calls
    assert not [p for _m, p in calls if "/files/" in p or p.endswith("/artifact")]  # only the delta came

    transport.paths.clear()
    with Client(url, transport=transport) as client:  # delta=True: hashed first, stored: nothing uploaded
        again = client.freeze(src, SPEC, tmp_path / "again", progress=False, delta=True)
        full = client.freeze(src, SPEC, tmp_path / "full", progress=False, delta=False)
    n = len(directory_files(src))  # uploaded once more for delta=False only, and downloaded file by file
    assert sum(m == "POST" and p == "/v1/uploads" for m, p in transport.paths) == n
    assert sum(f"/v1/jobs/{full.job.id}/files/" in p for _m, p in transport.paths) == n
    assert directory_files(tmp_path / "again") == directory_files(tmp_path / "out")
    assert directory_files(tmp_path / "full") == directory_files(tmp_path / "out")
    assert again.job.model == full.job.model == result.job.model


def test_client_multipart_fallback_stores_the_same_model(url: str, gpt2: dict[str, Path]) -> None:
    with Client(url) as client:
        by_tus = client.upload_directory(gpt2["bin"])
        by_form = client.upload_directory(gpt2["bin"], resumable=False)
    assert by_form["id"] == by_tus["id"]


def test_client_refuses_links_and_a_non_empty_output_before_sending_anything(
        url: str, gpt2: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    linked = shutil.copytree(gpt2["safetensors"], tmp_path / "linked")
    os.symlink("/etc/hostname", linked / "tokenizer.json")
    transport = Recording()
    with Client(url, transport=transport) as client, pytest.raises(ClientError, match="symbolic link"):
        client.upload_directory(linked)
    assert [p for _m, p in transport.paths if p != "/v1/uploads"] == []
    assert client_cli(["--url", url, "freeze", str(linked), "--freeze", "h.0", "-o",
                       str(tmp_path / "o")]) == 1
    assert "symbolic link" in capsys.readouterr().err

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert client_cli(["--url", url, "freeze", str(gpt2["bin"]), "--freeze", "h.0", "-o", str(busy)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert client_cli(["--url", url, "inspect", str(gpt2["bin"]), "--json"]) == 0
    inspected = json.loads(capsys.readouterr().out)
    assert inspected["report"]["files"]["index"] == "pytorch_model.bin.index.json"


def test_async_client_freezes_a_directory(url: str, gpt2: dict[str, Path], tmp_path: Path) -> None:
    import asyncio

    from layerfreeze_client import AsyncClient

    async def run() -> tuple[Any, Any, dict[str, Any]]:
        async with AsyncClient(url) as client:
            frozen = await client.freeze(gpt2["bin"], SPEC, tmp_path / "async", progress=False)
            full = await client.freeze(gpt2["bin"], SPEC, tmp_path / "async-full", progress=False,
                                       delta=False)
            inspected = await client.inspect(gpt2["bin"], progress=False)
            return frozen, full, inspected.report.raw

    frozen, full, inspected = asyncio.run(run())
    with Client(url) as client:
        sync = client.freeze(gpt2["bin"], SPEC, tmp_path / "sync", progress=False)
    assert directory_files(tmp_path / "async") == directory_files(tmp_path / "sync")
    assert directory_files(tmp_path / "async-full") == directory_files(tmp_path / "sync")
    assert frozen.job.model == sync.job.model == full.job.model
    assert inspected["summary"]["frozen"] == 0
    assert inspected["files"]["index"] == "pytorch_model.bin.index.json"


def test_client_refuses_case_clashes_and_a_directory_over_the_service_limits(
        url: str, tmp_path: Path) -> None:
    clash = tmp_path / "clash"
    clash.mkdir()
    (clash / "config.json").write_text("{}")
    (clash / "Config.json").write_text("{}")
    many = tmp_path / "many"
    many.mkdir()
    for i in range(MAX_FILES + 1):
        (many / f"f{i}.json").write_text("{}")
    big = tmp_path / "big"
    big.mkdir()
    (big / "a.bin").write_bytes(b"\0" * (MAX_BYTES + 1))
    transport = Recording()
    with Client(url, transport=transport) as client:
        refused = ((clash, "differ only in case"), (many, str(MAX_FILES)), (big, str(MAX_BYTES)))
        for directory, message in refused:
            with pytest.raises(ClientError, match=message):
                client.upload_directory(directory)
    assert {p for _m, p in transport.paths} == {"/v1/uploads"}  # only the limits were asked for


def test_output_digests_of_a_directory_job_are_computed_after_it_and_served_right(
        url: str, gpt2: dict[str, Path]) -> None:
    import hashlib
    import time

    files = directory_files(gpt2["safetensors"])
    spec = {"rules": [{"action": "freeze", "names": ["h.1"]}]}
    with httpx.Client(base_url=url, timeout=60) as client:
        model = upload(client, files).json()
        job = client.post("/v1/jobs", json={"model": model["id"], "spec": spec}).json()  # no wait
        deadline = time.monotonic() + 60
        while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.05)
            job = client.get(f"/v1/jobs/{job['id']}").json()
        assert job["status"] == "succeeded", job
        patch = client.get(f"/v1/jobs/{job['id']}/patch").json()  # digests known once it answers
        digests = {}
        for entry in patch["files"]:
            body = client.get(f"/v1/jobs/{job['id']}/files/{entry['path']}").content
            digests[entry["path"]] = hashlib.sha256(body).hexdigest()
            assert entry["output"]["sha256"] == digests[entry["path"]], entry["path"]
        report = client.get(f"/v1/jobs/{job['id']}/report").json()
        job = client.get(f"/v1/jobs/{job['id']}").json()
    assert {f["path"]: f["sha256"] for f in report["files"]["files"]} == digests
    listing = "".join(f"{digests[p]}  {p}\n" for p in sorted(digests))
    expected = hashlib.sha256(listing.encode()).hexdigest()
    assert job["output"]["sha256"] == report["output"]["sha256"] == expected


class LosesFirstModelAnswer(httpx.HTTPTransport):
    """Sends every request; the first answer to POST /v1/models is lost on the way back (a dropped
    connection after the service did the work)."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST" and request.url.path == "/v1/models" and not self.lost:
            self.lost = True
            response.read()
            raise httpx.ReadError("connection reset", request=request)
        return response


def test_a_lost_answer_to_the_directory_request_is_replayed_not_refused(
        url: str, gpt2: dict[str, Path], tmp_path: Path) -> None:
    src = shutil.copytree(gpt2["safetensors"], tmp_path / "fresh")
    (src / "README.md").write_text("a directory this service has not seen\n")
    transport = LosesFirstModelAnswer()
    with Client(url, transport=transport) as client:
        model = client.upload_directory(src)  # the retry carries the same Idempotency-Key
    assert transport.lost
    assert sorted(f["path"] for f in model["files"]) == sorted(directory_files(src))


def test_async_client_uploads_a_directory_resumably_and_resumes_by_itself(
        service: tuple[str, Path], gpt2: dict[str, Path], tmp_path: Path) -> None:
    """Each file goes as a tus upload and all become one model; a PATCH dropped inside a file and one
    the service still holds are resumed, and every stored file is byte-identical to the local one."""
    import asyncio
    import hashlib

    from layerfreeze_client import AsyncClient, Retry
    from layerfreeze_client._patch import listing_sha256

    from testing.transports import AsyncDropsFirstPatch, AsyncGateway, AsyncHoldsFirstPatch

    url, data_dir = service
    for name, transport in (("plain", AsyncGateway()), ("dropped", AsyncDropsFirstPatch()),
                            ("held", AsyncHoldsFirstPatch(hold=1.0))):
        src = shutil.copytree(gpt2["safetensors"], tmp_path / name)
        (src / "README.md").write_text(f"a directory this service has not seen: {name}\n")
        files = directory_files(src)

        async def run(src: Path = src, transport: httpx.AsyncBaseTransport = transport) -> dict[str, Any]:
            async with AsyncClient(url, transport=transport, retry=Retry(retries=6, backoff=0.2)) as client:
                return await client.upload_directory(src)

        model = asyncio.run(run())
        digests = {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}
        assert model["sha256"] == listing_sha256(digests), name
        assert sorted(f["path"] for f in model["files"]) == sorted(files)
        for path, sha in digests.items():
            assert (data_dir / "blobs" / sha[:2] / sha).read_bytes() == files[path], (name, path)
        if isinstance(transport, AsyncGateway):
            uploads = [p for m, p in transport.calls if m == "POST" and p == "/v1/uploads"]
            patched = {p for m, p in transport.calls if m == "PATCH"}
            assert len(uploads) == len(patched) == len(files)
            for upload in patched:  # taken over by the model
                assert httpx.head(f"{url}{upload}", headers=TUS, timeout=10).status_code == 404
        else:
            assert transport.dropped and transport.patches > len(files)  # one file took a second PATCH


def test_async_client_without_resumable_uploads_sends_one_multipart_request(
        url: str, gpt2: dict[str, Path]) -> None:
    import asyncio

    from layerfreeze_client import AsyncClient

    from testing.transports import AsyncGateway

    gateway = AsyncGateway(refuse="/v1/uploads")

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        async with AsyncClient(url, transport=gateway) as client:
            by_form = await client.upload_directory(gpt2["bin"])
        async with AsyncClient(url) as client:
            return by_form, await client.upload_directory(gpt2["bin"])

    by_form, by_tus = asyncio.run(run())
    assert gateway.calls == [("OPTIONS", "/v1/uploads"), ("POST", "/v1/models")]
    assert by_form["id"] == by_tus["id"]


def test_async_client_freezes_a_directory_through_tus_and_skips_a_stored_upload(
        url: str, gpt2: dict[str, Path], tmp_path: Path) -> None:
    """``freeze`` uploads each file resumably; with ``delta=True`` it hashes them first and, the
    directory being stored, uploads nothing; both outputs are the same files."""
    import asyncio

    from layerfreeze_client import AsyncClient

    from testing.transports import AsyncGateway

    src = gpt2["safetensors"]
    first, second = AsyncGateway(), AsyncGateway()

    async def run() -> tuple[Any, Any]:
        async with AsyncClient(url, transport=first) as client:
            frozen = await client.freeze(src, SPEC, tmp_path / "out", progress=False)
        async with AsyncClient(url, transport=second) as client:
            again = await client.freeze(src, SPEC, tmp_path / "again", progress=False, delta=True)
        return frozen, again

    frozen, again = asyncio.run(run())
    n = len(directory_files(src))
    assert sum(c == ("POST", "/v1/uploads") for c in first.calls) == n
    assert sum(m == "PATCH" for m, _p in first.calls) == n
    assert not [c for c in second.calls if c[1].startswith("/v1/uploads")]
    assert again.job.model == frozen.job.model
    assert directory_files(tmp_path / "again") == directory_files(tmp_path / "out")
