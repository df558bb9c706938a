"""The client against an in-memory service (httpx.MockTransport): every call, errors, retries, integrity."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path

import httpx
import pytest
from layerfreeze_client import (
    AsyncClient,
    Client,
    ConflictError,
    IntegrityError,
    InvalidInputError,
    JobFailedError,
    NotFoundError,
    RejectedError,
    Retry,
    ServiceError,
    Spec,
    TransportError,
    WaitTimeout,
)
from layerfreeze_client._upload import MultipartUpload

from .fakeservice import FakeService, parse_multipart, problem

FAST = Retry(retries=3, backoff=0.001, max_backoff=0.01)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    path.write_bytes(bytes(range(256)) * 1000)
    return path


def client_for(service: FakeService, **kw) -> Client:
    return Client("http://lf.test", transport=service.transport(), retry=FAST, poll_interval=0.001, **kw)


def test_freeze_round_trip(model_file: Path) -> None:
    service = FakeService(polls=2)
    with client_for(service) as client:
        result = client.freeze(model_file, Spec().freeze(names=["0"]), progress=False)
    job = service.jobs[result.job.id]
    assert job.upload == model_file.read_bytes()  # the whole file arrived intact
    assert job.spec == Spec().freeze(names=["0"]).to_dict()
    assert result.output == model_file.with_name("model.frozen.pt")
    assert result.output.read_bytes() == job.artifact
    assert result.report.output is not None
    assert result.report.output.sha256 == hashlib.sha256(job.artifact).hexdigest()
    assert result.report.frozen() == ["0.weight"]
    assert result.report.states() == {"0.weight": False, "0.bias": True}
    assert [m.name for m in result.report.modules] == ["", "0"]
    assert result.report.modules[1].depth == 1
    assert not list(model_file.parent.glob("*.part"))


def test_inspect_is_a_dry_run(model_file: Path) -> None:
    service = FakeService()
    with client_for(service) as client:
        result = client.inspect(model_file, progress=False)
    assert result.output is None and result.job.dry_run
    assert result.report.output is None
    assert len(result.report.parameters) == 2
    assert not model_file.with_name("model.frozen.pt").exists()


def test_upload_streams_with_exact_length_and_progress(model_file: Path) -> None:
    upload = MultipartUpload(model_file, {"spec": "{}"}, chunk_size=4096)
    seen: list[tuple[int, int | None]] = []
    from layerfreeze_client._progress import Progress

    chunks = list(upload.sync_body(Progress(lambda d, t: seen.append((d, t)), upload.file_size, "x")))
    body = b"".join(chunks)
    assert len(body) == upload.content_length
    assert max(len(c) for c in chunks[1:-1]) <= 4096  # never more than a chunk in memory
    assert seen[-1] == (model_file.stat().st_size, model_file.stat().st_size)
    fields = parse_multipart(upload.content_type, body)
    assert fields["model"] == ("model.pt", model_file.read_bytes())
    assert fields["spec"] == (None, b"{}")
    # a second pass gives the same bytes: the body can be re-streamed for a retry
    assert b"".join(upload.sync_body()) == body


def test_file_object_upload_is_restreamed_from_its_start(model_file: Path) -> None:
    data = model_file.read_bytes()
    service = FakeService()
    calls = {"n": 0}

    def drop_first(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST":
            calls["n"] += 1
            if calls["n"] == 1:
                request.read()
                return httpx.Response(503, headers={"Retry-After": "0"})
        return None

    service.faults.append(drop_first)
    with client_for(service) as client:
        job = client.submit(io.BytesIO(data), {}, wait=5)
    assert calls["n"] == 2
    assert service.jobs[job.id].upload == data


def test_problem_json_becomes_typed_exceptions(model_file: Path) -> None:
    service = FakeService()
    with client_for(service) as client:
        with pytest.raises(InvalidInputError) as info:
            client.submit(model_file, {"bogus": 1})
        err = info.value
        assert err.status == 422 and err.title == "Invalid spec"
        assert err.errors[0].pointer == "/bogus" and err.errors[0].suggestions == ("rules",)
        assert "/bogus" in str(err) and "rules" in str(err)
        with pytest.raises(NotFoundError) as nf:
            client.job("nope")
        assert nf.value.detail == "no job nope"
        queued = FakeService(polls=5)
    with client_for(queued) as client:
        job = client.submit(model_file)
        with pytest.raises(ConflictError):
            client.report(job)


def test_failed_job_raises_with_the_job_attached(model_file: Path) -> None:
    reason = {"type": "about:blank", "title": "Unsafe pickle", "status": 422,
              "detail": "the pickle calls posix.system"}
    service = FakeService(fail_with=reason)
    with client_for(service) as client:
        with pytest.raises(JobFailedError) as info:  # answered at once through ?wait
            client.freeze(model_file, {}, progress=False)
        assert isinstance(info.value, InvalidInputError)
        assert info.value.job is not None and info.value.job.status == "failed"
        assert "posix.system" in str(info.value)
        service.polls = 2  # and the same found by polling
        job = client.submit(model_file)
        with pytest.raises(InvalidInputError) as polled:
            client.wait(job)
        assert polled.value.job.id == job.id
    internal = FakeService(fail_with={"title": "Worker crashed", "status": 500, "detail": "killed"})
    with client_for(internal) as client, pytest.raises(ServiceError):
        client.freeze(model_file, {}, progress=False)


def test_non_json_errors_keep_their_text() -> None:
    service = FakeService(faults=[lambda r: httpx.Response(502, text="<html>bad gateway</html>")])
    with client_for(service) as client, pytest.raises(ServiceError) as info:
        client.health()
    assert info.value.status == 502 and "bad gateway" in info.value.detail
    assert len(service.requests) == 1  # a 502 is not retried


@pytest.mark.parametrize("status", [429, 503])
def test_retry_on_busy_answers_honours_retry_after(status: int) -> None:
    answers = iter([problem(status, "Busy", "try later"), problem(status, "Busy", "try later")])

    def busy(request: httpx.Request) -> httpx.Response | None:
        resp = next(answers, None)
        if resp is not None:
            resp.headers["Retry-After"] = "0"
        return resp

    service = FakeService(faults=[busy])
    with client_for(service) as client:
        assert client.health() == {"status": "ok"}
    assert len(service.requests) == 3


def test_retries_give_up_and_report_the_last_answer() -> None:
    service = FakeService(faults=[lambda r: problem(503, "Not ready", "starting")])
    with client_for(service) as client, pytest.raises(ServiceError) as info:
        client.health()
    assert info.value.status == 503 and info.value.detail == "starting"
    assert len(service.requests) == FAST.retries + 1


@pytest.mark.parametrize("status", [400, 401, 404, 413, 422, 500])
def test_other_errors_are_never_retried(status: int) -> None:
    service = FakeService(faults=[lambda r: problem(status, "No", "refused")])
    with client_for(service) as client, pytest.raises(RejectedError if status < 500 else ServiceError):
        client.health()
    assert len(service.requests) == 1


def test_connection_errors_are_retried_then_reported() -> None:
    failures = {"left": 2}

    def flaky(request: httpx.Request) -> httpx.Response | None:
        if failures["left"]:
            failures["left"] -= 1
            raise httpx.ConnectError("connection refused", request=request)
        return None

    service = FakeService(faults=[flaky])
    with client_for(service) as client:
        assert client.health()["status"] == "ok"

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with Client("http://lf.test", transport=httpx.MockTransport(down), retry=FAST) as client, \
            pytest.raises(TransportError, match="connection refused"):
        client.health()


def test_download_detects_a_corrupted_body_and_leaves_nothing(model_file: Path, tmp_path: Path) -> None:
    service = FakeService(corrupt_artifact=True)
    target = tmp_path / "out" / "frozen.pt"
    with client_for(service) as client, pytest.raises(IntegrityError) as info:
        client.freeze(model_file, {}, target, progress=False)
    assert info.value.expected != info.value.actual
    assert not target.exists()
    assert not list(target.parent.glob("*"))


def test_download_checks_the_report_digest(model_file: Path, tmp_path: Path) -> None:
    service = FakeService()
    with client_for(service) as client:
        job = client.submit(model_file, wait=5)
        with pytest.raises(IntegrityError, match="report"):
            client.download(job, tmp_path / "x.pt", sha256="0" * 64)
        assert not (tmp_path / "x.pt").exists()
        path = client.download(job.id, tmp_path)  # a directory: the service's file name
        assert path == tmp_path / "model.frozen.pt"
        assert path.read_bytes() == service.jobs[job.id].artifact


def test_download_resumes_after_a_broken_connection(model_file: Path, tmp_path: Path) -> None:
    service = FakeService()
    state = {"broken": False}

    def break_once(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/artifact") and not state["broken"]:
            state["broken"] = True
            data = next(iter(service.jobs.values())).artifact

            def body():
                yield data[:1000]
                raise httpx.ReadError("connection reset")

            digest = hashlib.sha256(data).hexdigest()
            return httpx.Response(200, content=body(), headers={"ETag": f'"{digest}"',
                                                               "Content-Length": str(len(data))})
        return None

    service.faults.append(break_once)
    with client_for(service) as client:
        job = client.submit(model_file, wait=5)
        path = client.download(job, tmp_path / "resumed.pt")
    assert path.read_bytes() == service.jobs[job.id].artifact
    ranges = [r.headers.get("range") for r in service.requests if r.url.path.endswith("/artifact")]
    assert ranges == [None, "bytes=1000-"]


def test_wait_times_out_and_jobs_pages_delete(model_file: Path) -> None:
    service = FakeService(polls=10_000)
    with client_for(service) as client:
        jobs = [client.submit(model_file) for _ in range(5)]
        with pytest.raises(WaitTimeout) as info:
            client.wait(jobs[0], timeout=0.05)
        assert info.value.job.status in ("queued", "running")
        listed = list(client.jobs(page_size=2))
        assert [j.id for j in listed] == [j.id for j in reversed(jobs)]
        assert len(list(client.jobs(limit=3, page_size=2))) == 3
        client.delete(jobs[0])
        with pytest.raises(NotFoundError):
            client.job(jobs[0].id)
        assert len(list(client.jobs())) == 4


def test_token_and_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERFREEZE_URL", "http://from-env.test:9000/")
    monkeypatch.setenv("LAYERFREEZE_TOKEN", "s3cret")
    service = FakeService(token="s3cret")
    with Client(transport=service.transport(), retry=FAST) as client:
        assert client.health()["status"] == "ok"
    assert service.requests[0].url.host == "from-env.test"
    assert service.requests[0].headers["authorization"] == "Bearer s3cret"


def test_async_client_mirrors_the_sync_one(model_file: Path, tmp_path: Path) -> None:
    service = FakeService(polls=2)

    async def run() -> None:
        async with AsyncClient("http://lf.test", transport=service.transport(), retry=FAST,
                               poll_interval=0.001) as client:
            result = await client.freeze(model_file, Spec().freeze(names=["0"]), tmp_path / "a.pt",
                                         progress=False)
            assert result.output is not None
            assert result.output.read_bytes() == service.jobs[result.job.id].artifact
            assert result.report.frozen() == ["0.weight"]
            dry = await client.inspect(model_file, progress=False)
            assert dry.output is None
            assert [j.id async for j in client.jobs(page_size=1)] == [dry.job.id, result.job.id]
            with pytest.raises(InvalidInputError):
                await client.submit(model_file, {"bogus": True})
            service.corrupt_artifact = True
            with pytest.raises(IntegrityError):
                await client.download(result.job, tmp_path / "b.pt")
            assert not (tmp_path / "b.pt").exists()
            await client.delete(result.job)
            with pytest.raises(NotFoundError):
                await client.report(result.job)

    asyncio.run(run())


def test_progress_callbacks_and_bars(model_file: Path, tmp_path: Path) -> None:
    service = FakeService()
    seen: list[tuple[int, int | None]] = []
    with client_for(service) as client:
        result = client.freeze(model_file, {}, tmp_path / "p.pt", progress=lambda d, t: seen.append((d, t)))
        size = model_file.stat().st_size
        assert (size, size) in seen  # the upload reached its total
        artifact = len(service.jobs[result.job.id].artifact)
        assert seen[-1] == (artifact, artifact)  # and so did the download
        client.freeze(model_file, {}, tmp_path / "q.pt", progress=True)  # a tqdm bar on stderr
    assert (tmp_path / "q.pt").exists()


def test_async_client_retries_like_the_sync_one(model_file: Path) -> None:
    answers: list[str] = ["refuse", "busy"]

    def flaky(request: httpx.Request) -> httpx.Response | None:
        if request.method != "POST" or not answers:
            return None
        kind = answers.pop(0)
        if kind == "refuse":
            raise httpx.ConnectError("connection refused", request=request)
        return problem(429, "Too many", "queue full")

    service = FakeService(faults=[flaky])

    async def run() -> None:
        async with AsyncClient("http://lf.test", transport=service.transport(), retry=FAST) as client:
            job = await client.submit(model_file, {}, wait=5)
            assert job.succeeded
            assert service.jobs[job.id].upload == model_file.read_bytes()
            service.faults[:] = [lambda r: problem(400, "Bad", "no")]
            with pytest.raises(RejectedError):
                await client.health()

    asyncio.run(run())
    posts = [r for r in service.requests if r.method == "POST"]
    assert len(posts) == 3  # refused, 429, accepted: each attempt re-sent the upload
    assert service.requests[-1].method == "GET" and len(service.requests) == 4  # the 400: not retried


def test_async_download_resumes_after_a_broken_connection(model_file: Path, tmp_path: Path) -> None:
    service = FakeService()
    state = {"broken": False}

    def break_once(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/artifact") and not state["broken"]:
            state["broken"] = True
            data = next(iter(service.jobs.values())).artifact

            async def body():
                yield data[:777]
                raise httpx.ReadError("connection reset")

            digest = hashlib.sha256(data).hexdigest()
            return httpx.Response(200, content=body(), headers={"ETag": f'"{digest}"',
                                                               "Content-Length": str(len(data))})
        return None

    service.faults.append(break_once)

    async def run() -> Path:
        async with AsyncClient("http://lf.test", transport=service.transport(), retry=FAST) as client:
            job = await client.submit(model_file, wait=5)
            return await client.download(job, tmp_path / "resumed.pt")

    path = asyncio.run(run())
    assert path.read_bytes() == next(iter(service.jobs.values())).artifact
    ranges = [r.headers.get("range") for r in service.requests if r.url.path.endswith("/artifact")]
    assert ranges == [None, "bytes=777-"]
