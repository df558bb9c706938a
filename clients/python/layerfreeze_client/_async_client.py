"""The asyncio (or trio) client: the same calls as ``Client``, over ``httpx.AsyncClient``."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from ._base import MAX_SERVER_WAIT, TUS_HEADERS, BaseClient, JobRef, default_output
from ._directory import check_paths, default_output_dir, directory_files, publish_dir, staging_dir
from ._download import DownloadSink
from ._errors import APIError, IntegrityError, TransportError, WaitTimeout
from ._models import FreezeResult, Job, JobPage, Report
from ._patch import listing_sha256, rebuild, rebuild_directory, sha256_file, single_file
from ._progress import Progress, ProgressLike
from ._retry import Retry
from ._spec import SpecLike, spec_json
from ._upload import FileTail, MultipartFiles, MultipartUpload

__all__ = ["AsyncClient"]



class AsyncClient(BaseClient):
    """Talks to a layerfreeze service from async code. Use ``async with`` (or ``await aclose()``).

    ``base_url`` defaults to ``$LAYERFREEZE_URL`` or http://127.0.0.1:8000, ``token`` to
    ``$LAYERFREEZE_TOKEN``. ``timeout`` bounds each network operation (connect, one read, one write).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        retry: Retry | None = None,
        poll_interval: float = 1.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: bool | str = True,
    ) -> None:
        super().__init__(base_url, token=token, timeout=timeout, retry=retry, poll_interval=poll_interval,
                         headers=headers)
        self._http = httpx.AsyncClient(transport=transport, verify=verify, follow_redirects=False)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- transport ------------------------------------------------------------------------------------------

    async def _send(self, build: Callable[[], httpx.Request], *, stream: bool = False,
                    replayable: bool = True, retries: bool = True) -> httpx.Response:
        attempt = 0
        while True:
            request = build()
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                delay = self.retry.delay_for_error(exc, attempt, replayable=replayable and retries)
                if delay is None:
                    reason = str(exc) or type(exc).__name__
                    raise TransportError(f"{request.method} {request.url}: {reason}") from exc
            else:
                delay = self.retry.delay_for_response(response, attempt) if retries else None
                if delay is None:
                    if stream and response.status_code >= 400:
                        await response.aread()
                    return response
                await response.aclose()
            await anyio.sleep(delay)
            attempt += 1

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self._send(lambda: self._request(method, path, **kwargs))

    # -- jobs -----------------------------------------------------------------------------------------------

    async def submit(self, model: str | os.PathLike[str] | Any, spec: SpecLike = None, *,
                     dry_run: bool = False, wait: float = 0, progress: ProgressLike = False) -> Job:
        """Upload ``model`` (a path or a seekable binary file) with ``spec``; the job as the service has it.

        With ``wait`` (seconds, at most 60) the service answers once the job finished, if it does in time.
        """
        upload = self._upload(model, spec, dry_run)
        params, read_timeout = self._submit_params(wait)
        return self._job(await self._post_upload("/v1/jobs", upload, progress, params=params,
                                                 read_timeout=read_timeout))

    async def _post_upload(self, path: str, upload: MultipartUpload | MultipartFiles, progress: ProgressLike,
                           *, params: Mapping[str, Any] | None = None, read_timeout: float | None = None,
                           ) -> httpx.Response:
        """POST a multipart upload with a progress bar; a retry streams it again from the start."""
        with Progress(progress, upload.file_size, f"upload {upload.filename}") as bar:
            attempts = 0

            def build() -> httpx.Request:
                nonlocal attempts
                if attempts:
                    bar.restart()
                attempts += 1
                return self._request("POST", path, params=params, headers=upload.headers(),
                                     content=upload.async_body(bar), read_timeout=read_timeout)

            return await self._send(build, replayable=upload.restreamable)

    async def job(self, job: JobRef) -> Job:
        return self._job(await self._call("GET", self._job_path(job)))

    async def wait(self, job: JobRef, timeout: float | None = None) -> Job:
        """Poll until the job finished; the succeeded job, or the failure raised as a ``JobFailedError``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        current = job if isinstance(job, Job) else await self.job(job)
        delays = self._poll_delays()
        while not current.finished:
            delay = next(delays)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(f"job {current.id} is still {current.status}", job=current)
                delay = min(delay, left)
            await anyio.sleep(delay)
            current = await self.job(current)
        if current.status != "succeeded":
            raise self._failure(current)
        return current

    async def report(self, job: JobRef) -> Report:
        return self._report(await self._call("GET", self._job_path(job, "/report")))

    async def delete(self, job: JobRef) -> None:
        self._raise_for_status(await self._call("DELETE", self._job_path(job)))

    async def list_jobs(self, limit: int = 50, cursor: str | None = None) -> JobPage:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        return JobPage.from_json(self._json(await self._call("GET", "/v1/jobs", params=params)))

    async def jobs(self, limit: int | None = None, page_size: int = 50) -> AsyncIterator[Job]:
        """Every job visible to this token, newest first, following the pages (at most ``limit``)."""
        seen = 0
        page = await self.list_jobs(page_size)
        while True:
            for job in page.items:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield job
            if not page.next or not page.items:
                return
            page = JobPage.from_json(self._json(await self._call("GET", page.next)))

    async def download(self, job: JobRef, output: str | os.PathLike[str] | None = None, *,
                       sha256: str | None = None, progress: ProgressLike = False,
                       file: str | None = None) -> Path:
        """Stream the job's checkpoint to ``output`` (a file, or a directory for the service's file name);
        ``file``: one file of a model directory's output, by its relative path.

        Written to a temporary name and renamed once its sha256 matches the ETag, ``Repr-Digest`` and
        ``sha256`` (the report's) as given; a broken connection resumes with a Range request.
        """
        current = job if isinstance(job, Job) else await self.job(job)
        path = self._artifact_path(current)
        if file is not None:
            check_paths([file])
            path = self._job_path(current, "/files/" + quote(file))
        sink: DownloadSink | None = None
        bar: Progress | None = None
        expected: dict[str, str] = {}
        total: int | None = None
        etag: str | None = None
        attempt = 0
        try:
            while True:
                headers = {}
                if sink is not None and sink.written:
                    headers = {"Range": f"bytes={sink.written}-", **({"If-Range": etag} if etag else {})}
                response = await self._send(lambda h=headers: self._request("GET", path, headers=h),
                                            stream=True)
                try:
                    self._raise_for_status(response)
                    if sink is None:
                        sink = DownloadSink(self._download_target(response, output))
                        expected = self._expected_digests(response, sha256)
                        etag = response.headers.get("etag")
                    resumed = sink.written > 0 and self._range_start(response) == sink.written
                    if not resumed and sink.written:
                        sink.restart()
                    total = self._total_size(response, sink.written if resumed else 0)
                    if bar is None:
                        bar = Progress(progress, total, f"download {sink.target.name}")
                    elif not resumed:
                        bar.restart()
                    async for chunk in response.aiter_bytes():
                        sink.write(chunk)
                        bar.update(len(chunk))
                    break
                except httpx.TransportError as exc:
                    delay = self.retry.delay_for_error(exc, attempt)
                    if delay is None:
                        raise TransportError(f"download of job {current.id} broke off: {exc}") from exc
                finally:
                    await response.aclose()
                await anyio.sleep(delay)
                attempt += 1
            sink.commit(expected, total)
            return sink.target
        except BaseException:
            if sink is not None:
                sink.discard()
            raise
        finally:
            if bar is not None:
                bar.close()

    # -- the whole round trip -------------------------------------------------------------------------------

    async def freeze(self, model_path: str | os.PathLike[str], spec: SpecLike = None,
                     output: str | os.PathLike[str] | None = None, *, progress: ProgressLike = True,
                     timeout: float | None = None, delta: bool | None = None) -> FreezeResult:
        """Upload, wait, fetch the report, download and verify the frozen checkpoint.

        ``output`` defaults to ``<stem>.frozen<suffix>`` beside the input. ``delta`` as in
        ``Client.freeze``: unless False, the output is rebuilt from the local file and the job's patch
        when the local file is the job's input (checked by sha256), else downloaded in full.
        """
        if Path(model_path).is_dir():
            return await self._freeze_directory(model_path, spec, output, progress=progress,
                                                timeout=timeout, delta=delta)
        start = time.monotonic()
        wait = MAX_SERVER_WAIT if timeout is None else min(timeout, MAX_SERVER_WAIT)
        local = await anyio.to_thread.run_sync(sha256_file, model_path) if delta else None
        stored = await self.find_model(local) if local else None
        if stored is not None:
            job = await self.submit_stored(stored["id"], spec, wait=wait)
        else:
            job = await self.submit(model_path, spec, wait=wait, progress=progress)
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
        job = await self.wait(job, left)
        report = await self.report(job)
        target = Path(output) if output is not None else default_output(model_path)
        digest = report.output.sha256 if report.output else None
        if delta is not False and job.links.patch and job.output is not None:
            local = local or await anyio.to_thread.run_sync(sha256_file, model_path)
            if delta or job.input.sha256 == local:
                with contextlib.suppress(IntegrityError, APIError):
                    patch = single_file(await self.patch(job))
                    path = await anyio.to_thread.run_sync(functools.partial(
                        rebuild, model_path, patch, self._rebuild_target(job, target), sha256=digest,
                        progress=progress))
                    return FreezeResult(job=job, report=report, output=path)
        path = await self.download(job, target, sha256=digest, progress=progress)
        return FreezeResult(job=job, report=report, output=path)

    async def _freeze_directory(self, model_dir: str | os.PathLike[str], spec: SpecLike,
                                output: str | os.PathLike[str] | None, *, progress: ProgressLike,
                                timeout: float | None, delta: bool | None) -> FreezeResult:
        """As ``Client.freeze`` on a directory: each file a resumable upload when the service offers them;
        ``delta=True`` hashes the files first and skips the upload when the service stores them."""
        start = time.monotonic()
        files = directory_files(model_dir)
        target = Path(output) if output is not None else default_output_dir(model_dir)
        staging = staging_dir(target)
        try:
            stored = None
            if delta:
                digests = {p: await anyio.to_thread.run_sync(sha256_file, f) for p, f in files.items()}
                stored = await self.find_model(listing_sha256(digests))
            model = stored or await self.upload_directory(model_dir, progress=progress)
            wait = MAX_SERVER_WAIT if timeout is None else min(timeout, MAX_SERVER_WAIT)
            job = await self.submit_stored(model["id"], spec, wait=wait)
            left = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
            job = await self.wait(job, left)
            report = await self.report(job)
            rebuilt = False
            if delta is not False:
                with contextlib.suppress(IntegrityError, APIError):
                    patch = await self.patch(job)
                    await anyio.to_thread.run_sync(functools.partial(
                        rebuild_directory, patch, files, staging, progress=progress))
                    rebuilt = True
            if not rebuilt:
                shutil.rmtree(staging)
                staging.mkdir()
                for entry in report.files.files if report.files else ():
                    dst = staging / entry.path
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    await self.download(job, dst, file=entry.path, sha256=entry.sha256, progress=progress)
            publish_dir(staging, target)
            if report.output is not None and report.output.sha256 is None:  # computed after the job
                job, report = await self.job(job), await self.report(job)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return FreezeResult(job=job, report=report, output=target)

    async def find_model(self, sha256: str) -> dict[str, Any] | None:
        """This token's stored model with that content, or None (then upload it; also from a service
        that has no stored models)."""
        return self._found_model(await self._call("GET", "/v1/models", params={"sha256": sha256, "limit": 1}))

    async def upload_model(self, model: str | os.PathLike[str] | Any, *, progress: ProgressLike = False,
                           resumable: bool = True) -> dict[str, Any]:
        """As ``Client.upload_model``: a path goes as a resumable upload (tus 1.0) when the service offers
        it, resuming by itself after a dropped connection; else (or ``resumable=False``) one multipart
        request. The model, new or the one already stored."""
        if isinstance(model, str | os.PathLike) and Path(model).is_dir():
            return await self.upload_directory(model, progress=progress, resumable=resumable)
        if resumable and isinstance(model, str | os.PathLike) and await self._tus_limits() is not None:
            upload_id = await self.upload_resumable(model, progress=progress)
            return dict(self._json(await self._post_taking("/v1/models", {"upload": upload_id})))
        upload = MultipartUpload(model, {}, file_field="file")
        return dict(self._json(await self._post_upload("/v1/models", upload, progress)))

    async def upload_directory(self, directory: str | os.PathLike[str], *, progress: ProgressLike = False,
                               resumable: bool = True) -> dict[str, Any]:
        """As ``Client.upload_directory``: each file a resumable upload when the service offers them, then
        one request names them all; otherwise one multipart request with a ``file`` part per file. Unsafe
        names, links and a directory over the service's limits are refused before anything is sent."""
        tus = await self._tus_limits() if resumable else None
        limits = tus or {}
        files = directory_files(directory, max_files=limits.get("files"), max_bytes=limits.get("bytes"))
        if tus is not None:
            named = [{"path": rel, "upload": await self.upload_resumable(path, progress=progress)}
                     for rel, path in files.items()]
            return dict(self._json(await self._post_taking("/v1/models", {"files": named})))
        upload = MultipartFiles(files, file_field="file")
        return dict(self._json(await self._post_upload("/v1/models", upload, progress)))

    async def _post_taking(self, path: str, body: dict[str, Any], patience: float = 600.0) -> httpx.Response:
        """As ``Client._post_taking``: one Idempotency-Key; waits while the first request still runs."""
        headers, content = self._taking_request(body)
        deadline = time.monotonic() + patience
        while True:
            response = await self._call("POST", path, headers=headers, content=content)
            delay = self._taking_busy(response)
            if delay is None or time.monotonic() > deadline:
                return response
            await anyio.sleep(delay)

    async def _tus_limits(self) -> dict[str, int] | None:
        return self._tus_limits_of(await self._call("OPTIONS", "/v1/uploads"))

    async def upload_resumable(self, path: str | os.PathLike[str], *, progress: ProgressLike = False,
                               chunk_size: int = 1 << 20) -> str:
        """As ``Client.upload_resumable``: tus 1.0 under ``/v1/uploads``, resuming after dropped connections
        within the retry policy, the file read in a worker thread; the upload's id."""
        path = Path(path)
        size = (await anyio.Path(path).stat()).st_size
        created = await self._call("POST", "/v1/uploads", headers=self._tus_create_headers(path, size))
        self._raise_for_status(created)
        location = created.headers["location"]
        offset, attempt = 0, 0
        with Progress(progress, size, f"upload {path.name}") as bar:
            while offset < size:
                body = FileTail(path, offset, bar, chunk_size)
                try:
                    response = await self._http.send(self._tus_patch(location, offset, body.async_body()))
                    patched = self._tus_patched(response, attempt)
                    if patched is not None:
                        offset = patched
                        if offset != bar.done:  # the service kept fewer bytes than were read: count those
                            bar.restart(offset)
                        continue
                    delay = self.retry.backoff_delay(attempt)
                except httpx.TransportError as exc:
                    delay = self.retry.delay_for_error(exc, attempt)
                    if delay is None:
                        raise TransportError(f"upload of {path.name} broke off at byte {offset}: {exc}"
                                             ) from exc
                await anyio.sleep(delay)
                attempt += 1
                offset = self._tus_offset(await self._call("HEAD", location, headers=TUS_HEADERS))
                bar.restart(offset)  # resume where the service's bytes end
        return location.rsplit("/", 1)[-1]

    async def submit_stored(self, model_id: str, spec: SpecLike = None, *, dry_run: bool = False,
                            wait: float = 0) -> Job:
        """A job on a stored model (nothing uploaded)."""
        params, read_timeout = self._submit_params(wait)
        body = json.dumps({"model": model_id, "spec": json.loads(spec_json(spec)), "dry_run": dry_run})
        return self._job(await self._send(lambda: self._request(
            "POST", "/v1/jobs", params=params, headers={"content-type": "application/json"},
            content=body.encode(), read_timeout=read_timeout)))

    async def patch(self, job: JobRef) -> dict[str, Any]:
        """The job's output as a ``layerfreeze-patch/1`` delta against its input."""
        return dict(self._json(await self._call("GET", self._job_path(job, "/patch"))))

    async def inspect(self, model_path: str | os.PathLike[str] | Any, spec: SpecLike = None, *,
                      progress: ProgressLike = True, timeout: float | None = None) -> FreezeResult:
        """A dry run: the report of ``model_path`` (under ``spec``, if given); nothing is written."""
        start = time.monotonic()
        wait = MAX_SERVER_WAIT if timeout is None else min(timeout, MAX_SERVER_WAIT)
        if isinstance(model_path, str | os.PathLike) and Path(model_path).is_dir():
            model = await self.upload_directory(model_path, progress=progress)
            job = await self.submit_stored(model["id"], spec, dry_run=True, wait=wait)
        else:
            job = await self.submit(model_path, spec, dry_run=True, wait=wait, progress=progress)
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
        job = await self.wait(job, left)
        return FreezeResult(job=job, report=await self.report(job), output=None)

    # -- service --------------------------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return dict(self._json(await self._call("GET", "/healthz")))

    async def ready(self) -> bool:
        """Whether the service accepts work now (no retries: a 503 is the answer)."""
        response = await self._send(lambda: self._request("GET", "/readyz"), retries=False)
        return response.status_code == 200
