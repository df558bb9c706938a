"""The service's parts on their own: settings, ranges, names, problems, the job store, the app in-process."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from layerfreeze.api.app import create_app
from layerfreeze.api.downloads import content_disposition, parse_range
from layerfreeze.api.uploads import clean_filename
from layerfreeze.errors import (
    JobConflict,
    JobNotFound,
    JobTimeLimit,
    QueueFull,
    RangeNotSatisfiable,
    SpecError,
    SpecIssue,
    UnsafePickleError,
    UploadTooLarge,
    WorkerLost,
    storage_error,
)
from layerfreeze.freeze import output_filename
from layerfreeze.problems import problem_for
from layerfreeze.settings import Settings, get_settings, parse_tokens
from layerfreeze.storage.blobs import BlobStore
from layerfreeze.storage.jobs import JobRecord, JobStore
from svc_helpers import checkpoint, report_flags, submit


def test_tokens_from_pairs_or_json() -> None:
    assert parse_tokens("a:alice, b:bob") == {"a": "alice", "b": "bob"}
    assert parse_tokens('{"a": "alice"}') == {"a": "alice"}
    assert parse_tokens("") == {}
    with pytest.raises(ValueError):
        parse_tokens("no-tenant")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAYERFREEZE_TOKENS", "t1:one,t2:two")
    monkeypatch.setenv("LAYERFREEZE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LAYERFREEZE_MAX_ZIP_ENTRIES", "12")
    s = get_settings(workers=3)
    assert s.tokens == {"t1": "one", "t2": "two"} and s.data_dir == tmp_path and s.workers == 3
    assert s.read_limits().max_zip_entries == 12
    assert Settings().host == "127.0.0.1"


@pytest.mark.parametrize(("header", "expected"), [
    ("bytes=0-9", [(0, 9)]), ("bytes=90-", [(90, 99)]), ("bytes=-10", [(90, 99)]),
    ("bytes=95-200", [(95, 99)]), ("bytes=0-0,50-59", [(0, 0), (50, 59)]),
    ("items=0-9", None), ("bytes=9-0", None), ("bytes=a-b", None),
])
def test_parse_range(header: str, expected: list[tuple[int, int]] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=200-300", "bytes=" + ",".join(["0-0"] * 9)])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)


def test_file_names() -> None:
    assert output_filename("resnet.pt") == "resnet.frozen.pt"
    assert output_filename("model.safetensors") == "model.frozen.safetensors"
    assert output_filename("weights") == "weights.frozen"
    assert output_filename("model.safetensors", "torch.state_dict") == "model.frozen.pt"
    assert output_filename("model.safetensors", "safetensors") == "model.frozen.safetensors"
    assert clean_filename("../../etc/passwd") == "passwd"
    assert clean_filename("C:\\x\\m\x00odel.bin") == "model.bin"
    assert clean_filename("") == "model"
    assert content_disposition('a"b.pt').startswith('attachment; filename="a_b.pt"')


def test_problem_mapping_by_mro() -> None:
    spec = problem_for(SpecError("bad", [SpecIssue("/rules/0", "selects nothing", ("layer1",))]),
                       instance="/v1/jobs")
    assert spec["status"] == 422 and spec["errors"] == [
        {"pointer": "/rules/0", "message": "selects nothing", "suggestions": ["layer1"]}]
    unsafe = problem_for(UnsafePickleError("calls posix.system", global_name="posix.system", offset=12))
    assert unsafe["status"] == 422 and unsafe["global_name"] == "posix.system"
    assert problem_for(UploadTooLarge("big", limit="max_upload_bytes", maximum=1))["status"] == 413
    assert problem_for(JobTimeLimit("time limit 1 s exceeded", limit="job_timeout_s"))["status"] == 422
    assert problem_for(QueueFull("full", retry_after=3))["status"] == 429
    assert problem_for(WorkerLost("gone"))["status"] == 500
    assert problem_for(JobNotFound("no"))["status"] == 404
    full = storage_error(OSError(errno.ENOSPC, "No space left on device"))
    assert full is not None and problem_for(full)["status"] == 507
    assert storage_error(OSError(errno.EACCES, "denied")) is None
    hidden = problem_for(RuntimeError("secret path /etc/x"))
    assert hidden["status"] == 500 and "secret" not in hidden["detail"]


def _record(job_id: str, tenant: str = "") -> JobRecord:
    return JobRecord(id=job_id, tenant=tenant, status="queued", created_at=time.time(), dry_run=False,
                     spec="{}", input_filename="m.pt", input_bytes=1, input_sha256="0" * 64)


def test_store_recovery_paging_and_conflicts(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    for i in range(5):
        store.create(_record(f"j{i}", tenant="a" if i % 2 == 0 else "b"))
    assert store.claim("j0") is not None and store.claim("j0") is None
    store.succeed("j0", output_bytes=3, output_sha256="1" * 64)
    assert store.claim("j1") is not None
    with pytest.raises(JobConflict):
        store.delete("j1", None)
    with pytest.raises(JobNotFound):
        store.get("j1", tenant="a")
    assert [r.id for r in store.list("a", 2, None)] == ["j4", "j2"]
    assert [r.id for r in store.list("a", 2, store.get("j2").seq)] == ["j0"]
    store.close()

    reopened = JobStore(tmp_path / "jobs.sqlite3")  # as after a crash
    queued = reopened.recover({"status": 500, "detail": "interrupted by restart"})
    assert queued == ["j2", "j3", "j4"]
    assert reopened.get("j1").status == "failed"
    assert reopened.get("j1").error == {"status": 500, "detail": "interrupted by restart"}
    assert reopened.get("j0").output_sha256 == "1" * 64
    assert reopened.count_by_status() == {"queued": 3, "running": 0, "succeeded": 1, "failed": 1}

    blobs = BlobStore(tmp_path / "data")
    blobs.prepare()
    for job_id in ("j0", "orphan"):
        blobs.job_dir(job_id).mkdir()
        blobs.input_path(job_id).write_bytes(b"x")
    (blobs.job_dir("j0") / "output.part").write_bytes(b"half")
    (blobs.job_dir("j0") / ".output.part.x1.partial").write_bytes(b"half")
    assert blobs.sweep(reopened.ids()) == 1
    assert not blobs.job_dir("orphan").exists()
    assert sorted(p.name for p in blobs.job_dir("j0").iterdir()) == ["input"]


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("inproc"), workers=1)
    with TestClient(create_app(settings)) as client:
        yield client


def test_in_process_job_and_operations(app_client: TestClient, tmp_path: Path) -> None:
    src = checkpoint(tmp_path, "nested")
    r = submit(app_client, src, {"rules": [{"action": "freeze", "names": ["heads.cls"]}]}, wait=30)
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"]
    report = app_client.get(r.json()["links"]["report"]).json()
    flags = report_flags(report)
    assert not flags["heads.cls.weight"] and flags["heads.decode_head.weight"]

    metrics = app_client.get("/metrics").text
    assert 'layerfreeze_jobs{status="succeeded"} 1.0' in metrics
    assert "layerfreeze_job_duration_seconds_count 1.0" in metrics
    assert "layerfreeze_upload_bytes_total" in metrics
    ready = app_client.get("/readyz").json()
    assert ready["checks"] == {"workers": True, "database": True, "data_dir": True}
    assert "/v1/jobs" in app_client.get("/openapi.json").json()["paths"]
    assert app_client.get("/docs").status_code == 200


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/nowhere", 404), ("PUT", "/v1/jobs", 405), ("GET", "/v1/jobs/unknown/report", 404),
    ("GET", "/v1/jobs?limit=0", 422), ("GET", "/v1/jobs?cursor=%%%", 400),
])
def test_errors_are_problem_json(app_client: TestClient, method: str, path: str, status: int) -> None:
    r = app_client.request(method, path, headers={"x-request-id": "req-123"})
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status and body["title"] and "detail" in body
    assert r.headers["x-request-id"] == "req-123"


def test_unsupported_media_type(app_client: TestClient) -> None:
    r = app_client.post("/v1/jobs", content=b"model", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["status"] == 415
    r = app_client.post("/v1/jobs", json={"model": "x"})  # a JSON body names a stored model
    assert r.status_code == 404 and r.json()["status"] == 404
