"""What the sync and async clients share: configuration, request building and response parsing.

``Client`` and ``AsyncClient`` only add the I/O loops (send with retries, poll, stream a download); every
decision about what to send and what an answer means is made here, once.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Union

import httpx

from ._errors import APIError, ClientError, ResponseFormatError, error_for_problem
from ._models import Job, Report
from ._retry import Retry, parse_retry_after
from ._spec import SpecLike, spec_json
from ._upload import MultipartUpload

__all__ = ["DEFAULT_URL", "BaseClient", "JobRef"]

DEFAULT_URL = "http://127.0.0.1:8000"
TUS_VERSION = "1.0.0"
TUS_HEADERS = {"tus-resumable": TUS_VERSION}
MAX_SERVER_WAIT = 60  # the service clamps ?wait= to this
JobRef = Union[Job, str]  # noqa: UP007 (a runtime alias)


def default_output(model_path: str | os.PathLike[str]) -> Path:
    """``<stem>.frozen<suffix>`` beside the input, as the service names its artifact."""
    path = Path(model_path)
    return path.with_name(f"{path.stem}.frozen{path.suffix}")


class BaseClient:
    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        retry: Retry | None = None,
        poll_interval: float = 1.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        url = base_url or os.environ.get("LAYERFREEZE_URL") or DEFAULT_URL
        self.base_url = httpx.URL(url.rstrip("/") + "/")
        self.token = token if token is not None else (os.environ.get("LAYERFREEZE_TOKEN") or None)
        self.timeout = timeout
        self.retry = retry if retry is not None else Retry()
        self.poll_interval = poll_interval
        from . import __version__

        self._headers = {"User-Agent": f"layerfreeze-client/{__version__}", "Accept": "application/json"}
        if self.token:
            self._headers["Authorization"] = f"Bearer {self.token}"
        self._headers.update(headers or {})

    # -- request building ---------------------------------------------------------------------------------

    def _url(self, path: str) -> httpx.URL:
        """An absolute URL for an API path or a link the service returned (relative or absolute)."""
        return self.base_url.join(path.lstrip("/") if not path.startswith(("http://", "https://")) else path)

    def _request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None, content: Any = None, read_timeout: float | None = None,
    ) -> httpx.Request:
        timeout = httpx.Timeout(self.timeout, read=read_timeout if read_timeout is not None else self.timeout)
        return httpx.Request(
            method, self._url(path), params=params, headers={**self._headers, **(headers or {})},
            content=content, extensions={"timeout": timeout.as_dict()},
        )

    @staticmethod
    def _job_id(job: JobRef) -> str:
        job_id = job.id if isinstance(job, Job) else str(job)
        if not job_id or "/" in job_id:
            raise ValueError(f"not a job id: {job_id!r}")
        return job_id

    def _job_path(self, job: JobRef, suffix: str = "") -> str:
        return f"/v1/jobs/{self._job_id(job)}{suffix}"

    @staticmethod
    def _upload(model: str | os.PathLike[str] | Any, spec: SpecLike, dry_run: bool) -> MultipartUpload:
        text = spec_json(spec)
        try:
            json.loads(text)
        except ValueError as exc:
            raise ValueError(f"the spec is not valid JSON: {exc}") from None
        return MultipartUpload(model, {"spec": text, "dry_run": "true" if dry_run else "false"})

    def _submit_params(self, wait: float) -> tuple[dict[str, Any], float]:
        wait_s = max(0, min(MAX_SERVER_WAIT, int(wait)))
        return ({"wait": wait_s} if wait_s else {}), self.timeout + wait_s

    # -- resumable uploads (tus 1.0) and the request that takes them over --------------------------------

    @staticmethod
    def _tus_limits_of(response: httpx.Response) -> dict[str, int] | None:
        """From the answer to OPTIONS /v1/uploads: None when the service takes no resumable uploads; else
        its limits as it states them (the total bytes of a model, and the files of a model directory)."""
        if response.status_code != 204 or response.headers.get("tus-resumable") != TUS_VERSION:
            return None
        limits = {}
        for key, header in (("bytes", "tus-max-size"), ("files", "layerfreeze-max-model-files")):
            value = response.headers.get(header, "")
            if value.isdigit():
                limits[key] = int(value)
        return limits

    @staticmethod
    def _tus_create_headers(path: Path, size: int) -> dict[str, str]:
        name = base64.b64encode(path.name.encode()).decode()
        return {**TUS_HEADERS, "upload-length": str(size), "upload-metadata": f"filename {name}"}

    def _tus_patch(self, location: str, offset: int, content: Any) -> httpx.Request:
        """A PATCH sending the upload's bytes from ``offset`` (``content``: the rest of the file)."""
        return self._request("PATCH", location, content=content, headers={
            **TUS_HEADERS, "upload-offset": str(offset), "content-type": "application/offset+octet-stream"})

    def _tus_patched(self, response: httpx.Response, attempt: int) -> int | None:
        """The service's offset after a PATCH; None when it answers 409 after a break, within the retry
        policy: it may still hold the broken PATCH until it notices the hang-up (and keep more bytes than
        the client knew), so wait, then ask for the offset. Any other error is raised."""
        if response.status_code == 409 and 0 < attempt < self.retry.retries:
            return None
        self._raise_for_status(response)
        return int(response.headers["upload-offset"])

    def _tus_offset(self, head: httpx.Response) -> int:
        """Where the service's bytes of an upload end (the answer to HEAD)."""
        self._raise_for_status(head)
        return int(head.headers["upload-offset"])

    @staticmethod
    def _taking_request(body: dict[str, Any]) -> tuple[dict[str, str], bytes]:
        """Headers and content of a POST that takes something over (complete uploads become a model).
        It carries an Idempotency-Key, so a retry after a lost answer gets that answer rather than a 404
        for uploads already taken."""
        headers = {"content-type": "application/json", "idempotency-key": secrets.token_hex(16)}
        return headers, json.dumps(body).encode()

    def _taking_busy(self, response: httpx.Response) -> float | None:
        """How long to wait before asking again while the first request with that key still runs (409,
        key in use); None when this answer is the one to use."""
        problem = self._decode(response) if response.status_code == 409 else None
        if not (isinstance(problem, dict) and str(problem.get("type")).endswith("idempotency-key-in-use")):
            return None
        return min(5.0, parse_retry_after(response.headers.get("retry-after")) or 1.0)

    def _found_model(self, response: httpx.Response) -> dict[str, Any] | None:
        """The stored model a ``GET /v1/models?sha256=`` found, or None (also from a service that has no
        stored models)."""
        if response.status_code in (404, 405):
            return None
        items = self._json(response).get("items") or []
        return dict(items[0]) if items else None

    # -- response parsing ---------------------------------------------------------------------------------

    @staticmethod
    def _decode(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            return None

    def _raise_for_status(self, response: httpx.Response) -> None:
        """Turn a 4xx/5xx answer (already read) into the matching APIError, carrying the problem's fields."""
        if response.status_code < 400:
            return
        body = self._decode(response)
        if not isinstance(body, dict):
            text = response.text.strip()[:500] if response.content else ""
            body = {"title": response.reason_phrase, "status": response.status_code,
                    "detail": text or response.reason_phrase}
        job = None
        if isinstance(body.get("job"), dict):
            with contextlib.suppress(ResponseFormatError):  # the problem is the news; the job is extra
                job = Job.from_json(body["job"])
        raise error_for_problem(
            body, status=response.status_code, job=job, job_failed=job is not None and job.status == "failed",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )

    def _json(self, response: httpx.Response) -> Any:
        self._raise_for_status(response)
        body = self._decode(response)
        if body is None:
            kind = response.headers.get("content-type")
            raise APIError(f"expected JSON from {response.request.url}, got {kind}",
                           status=response.status_code)
        return body

    def _job(self, response: httpx.Response) -> Job:
        job = Job.from_json(self._json(response))
        if not job.id:
            raise APIError("the service answered without a job id", status=response.status_code)
        return job

    def _report(self, response: httpx.Response) -> Report:
        return Report.from_json(self._json(response))

    @staticmethod
    def _failure(job: Job) -> APIError:
        problem = dict(job.error or {"title": "Job failed", "detail": f"job {job.id} failed", "status": 500})
        return error_for_problem(problem, job=job, job_failed=True)

    def _poll_delays(self) -> Iterator[float]:
        delay = min(0.05, self.poll_interval)
        while True:
            yield delay
            delay = min(self.poll_interval, delay * 2)

    @staticmethod
    def _artifact_path(job: Job) -> str:
        if job.dry_run:
            raise ClientError(f"job {job.id} was a dry run: it has a report but no checkpoint")
        return job.links.artifact or f"/v1/jobs/{job.id}/artifact"

    @staticmethod
    def _download_target(response: httpx.Response, output: str | os.PathLike[str] | None) -> Path:
        from ._download import filename_from_disposition

        if output is not None:
            out = Path(output)
            if not out.is_dir():
                return out
            directory = out
        else:
            directory = Path.cwd()
        name = filename_from_disposition(response.headers.get("content-disposition")) or "model.frozen"
        return directory / name

    @staticmethod
    def _rebuild_target(job: Job, output: Path) -> Path:
        """Where a rebuilt output goes: ``output``, or in it under the job's output name (as a download
        into a directory is named)."""
        if job.output is not None and output.is_dir():
            name = os.path.basename(job.output.filename.replace("\\", "/")).strip()  # never a path
            return output / (name if name not in ("", ".", "..") else "model.frozen")
        return output

    @staticmethod
    def _expected_digests(response: httpx.Response, sha256: str | None) -> dict[str, str]:
        from ._download import digest_from_headers

        expected = digest_from_headers(response.headers)
        if sha256:
            expected["report"] = sha256
        return expected

    @staticmethod
    def _range_start(response: httpx.Response) -> int | None:
        """Where a 206 answer's bytes start (``Content-Range: bytes START-END/TOTAL``); None otherwise."""
        if response.status_code != 206:
            return None
        unit, _, spec = response.headers.get("content-range", "").partition(" ")
        start = spec.partition("-")[0]
        return int(start) if unit.strip() == "bytes" and start.isdigit() else None

    @staticmethod
    def _total_size(response: httpx.Response, offset: int) -> int | None:
        if response.status_code == 206:
            crange = response.headers.get("content-range", "")
            total = crange.rpartition("/")[2]
            return int(total) if total.isdigit() else None
        length = response.headers.get("content-length")
        return offset + int(length) if length and length.isdigit() else None
