"""``/v1/jobs``: submit, poll, list, fetch the report and the artifact, delete."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import difflib
import json
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from layerfreeze.api.deps import ServiceDep, TenantDep
from layerfreeze.api.downloads import ArtifactResponse, accel_uri
from layerfreeze.api.idempotency import begin as begin_idempotent
from layerfreeze.api.idempotency import fingerprint
from layerfreeze.api.numbers import parse_uint
from layerfreeze.api.schemas import JobPublic, JobsPublic, StoredJobCreate, job_public
from layerfreeze.api.uploads import Upload, receive_upload
from layerfreeze.core.spec import parse_spec
from layerfreeze.errors import (
    BadRequest,
    InvalidForm,
    JobConflict,
    JobNotFound,
    NotReady,
    QueueFull,
    storage_error,
)
from layerfreeze.formats.segments import (
    PATCH_FORMAT,
    Segment,
    SegmentReader,
    from_patch_segments,
    normalize,
)
from layerfreeze.storage.idempotency import IdempotencyStore
from layerfreeze.storage.jobs import JobRecord

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
log = logging.getLogger("layerfreeze.api")

PROBLEM = "application/problem+json"
_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"content": {PROBLEM: {}}, "description": d}
    for s, d in ((400, "Malformed request (bad cursor, repeated field)"), (401, "Missing or invalid token"),
                 (404, "Unknown job"), (409, "Job not in that state"))
}


# What POST /v1/jobs takes besides the 'model' file part; anything else is refused, never ignored.
JOB_FORM_FIELDS = frozenset({"spec", "dry_run"})
JOB_QUERY_PARAMS = frozenset({"wait", "dry_run"})
SUBMIT_DESCRIPTION = """Upload a checkpoint and a freeze spec; the job runs in a worker process.

Form fields: `model` (the file, required), `spec` (the freeze spec as JSON text; required unless the request
is an inspection), `dry_run` (`true`: a report only, no checkpoint). `spec={}` reports the model as it is;
a request with `dry_run=true` and no `spec` is an inspection and does the same. `dry_run` may also be given
as the query parameter `?dry_run=true`; given both ways, the two must agree. Unknown form fields and query
parameters (a misspelled `specs`, say) are a 422 that names them, as is a missing `spec` outside an
inspection: nothing is silently ignored."""


def _parse_bool(name: str, value: str | None, where: str = "form field") -> bool:
    if value is None or (value.strip() == "" and where == "form field"):
        return False
    v = value.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise BadRequest(f"{where} '{name}' must be 'true' or 'false'", pointer=f"/{name}")


def _unknown(kind: str, names: list[str], allowed: frozenset[str]) -> InvalidForm:
    hints = {n: difflib.get_close_matches(n, sorted(allowed), n=1) for n in names}
    listed = ", ".join(f"{n!r}" + (f" (did you mean {hints[n][0]!r}?)" if hints[n] else "") for n in names)
    return InvalidForm(f"POST /v1/jobs does not take the {kind} {listed}; it takes "
                       f"{', '.join(sorted(allowed))}", fields=names)


def _check_query(request: Request) -> None:
    unknown = sorted(set(request.query_params) - JOB_QUERY_PARAMS)
    if unknown:
        raise _unknown("query parameter" + "s" * (len(unknown) > 1), unknown, JOB_QUERY_PARAMS)


def _spec_and_dry_run(upload: Upload, request: Request) -> tuple[str, bool]:
    """The form's choices; refused when a field is unknown, missing or contradicted (SUBMIT_DESCRIPTION)."""
    if upload.unknown:
        raise _unknown("form field" + "s" * (len(upload.unknown) > 1), upload.unknown,
                       JOB_FORM_FIELDS | {"model"})
    form_value, query_value = upload.fields.get("dry_run"), request.query_params.get("dry_run")
    dry_run = _parse_bool("dry_run", form_value)
    if query_value is not None:
        asked = _parse_bool("dry_run", query_value, "query parameter")
        if form_value is not None and asked != dry_run:
            raise InvalidForm(f"dry_run is given twice and the two disagree: form field {form_value!r}, "
                              f"query parameter {query_value!r}", fields=["dry_run"])
        dry_run = asked
    spec_text = upload.fields.get("spec", "").strip()
    if not spec_text:
        if not dry_run:
            raise InvalidForm("the form has no 'spec' field: send the freeze spec as 'spec' (spec={} reports "
                              "the model as it is), or dry_run=true for an inspection", fields=["spec"])
        spec_text = "{}"  # an inspection: the report of the model as it is
    return spec_text, dry_run


def _client_host(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# One thread for spec validation, shared by every request: whatever arrives, at most one such thread
# competes with the event loop for the interpreter, and its queue is served in order.
_SPEC_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="layerfreeze-spec")


async def check_spec(spec_text: str) -> None:
    """Validate a spec off the event loop; the size caps of ``core.spec`` bound each to milliseconds."""
    await asyncio.get_running_loop().run_in_executor(_SPEC_THREAD, parse_spec, spec_text)


def _cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(str(seq).encode()).decode().rstrip("=")


def _uncursor(cursor: str) -> int:
    seq = None
    if len(cursor) <= 32:
        try:
            seq = parse_uint(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii"))
        except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
            seq = None
    if seq is None:
        raise BadRequest("invalid cursor: use the 'next' link of the previous page", pointer="/cursor")
    return seq


@router.post("", status_code=202, response_model=JobPublic,
             responses={**_RESPONSES, 413: {"description": "Upload too large"},
                        415: {"description": "Not multipart/form-data or JSON"},
                        422: {"description": "Invalid spec, checkpoint or form field"},
                        429: {"description": "Queue full"}, 503: {"description": "Not ready"}},
             openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {
                 "schema": {"type": "object", "required": ["model"], "properties": {
                     "model": {"type": "string", "format": "binary"},
                     "spec": {"type": "string", "description": "freeze spec (JSON text); required unless "
                              "dry_run is true; {} reports the model as it is"},
                     "dry_run": {"type": "boolean", "default": False,
                                 "description": "report only, no checkpoint"}},
                     "additionalProperties": False}},
                 "application/json": {"schema": {
                     "type": "object", "required": ["model"], "additionalProperties": False, "properties": {
                         "model": {"type": "string", "description": "a stored model's id"},
                         "spec": {"type": "object", "description": "freeze spec"},
                         "dry_run": {"type": "boolean", "default": False}}}}}}},
             description=SUBMIT_DESCRIPTION, summary="Submit a job")
async def submit_job(request: Request, service: ServiceDep, tenant: TenantDep,
                     wait: float = Query(0, description="seconds to wait for the result (clamped to 0..60)",
                                         allow_inf_nan=False),
                     dry_run_query: str | None = Query(None, alias="dry_run",
                                                       description="the form field 'dry_run', given here"),
                     ) -> Response:
    """Upload a checkpoint and a freeze spec (multipart), or name a stored model (JSON body:
    ``{"model": id, "spec": {...}, "dry_run": false}``); the job runs in a worker process."""
    # dry_run_query is declared for the OpenAPI document; _spec_and_dry_run reads it with the form field.
    s = service.settings
    _check_query(request)
    health = service.pool.health()
    if not service.pool.running:  # shutting down; dead workers are replaced, so jobs can still queue
        raise NotReady("the service is shutting down; retry shortly", retry_after=5)
    if health.queued >= s.queue_max:
        raise QueueFull(f"{health.queued} jobs are already queued; retry later",
                        retry_after=max(1, min(30, health.queued // max(1, health.workers))))
    job_id = secrets.token_hex(12)
    idem = await anyio.to_thread.run_sync(begin_idempotent, request, IdempotencyStore(service.store), tenant)
    try:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type == "application/json":
            record = await _stored_job_record(request, service, tenant or "", job_id)
            print_ = fingerprint("job", record.model_id, record.spec, record.dry_run)
        else:
            record = await _upload_job_record(request, service, tenant or "", job_id)
            print_ = fingerprint("job-upload", record.input_sha256, record.input_filename, record.spec,
                                 record.dry_run)
        if (replay := idem.replay(print_)) is not None:  # a retry: the first answer, and no second job
            await anyio.to_thread.run_sync(_unpin, service, record)
            return replay
        response = await _create_job(request, service, record, wait)
    except BaseException:
        await anyio.to_thread.run_sync(idem.release)
        raise
    await anyio.to_thread.run_sync(idem.complete, print_, response)
    return response


async def _create_job(request: Request, service: Any, record: JobRecord, wait: float) -> Response:
    s = service.settings
    job_id = record.id
    wait_s = min(max(wait, 0.0), s.wait_max_s, 60.0)
    event = service.waiters.register(job_id) if wait_s > 0 else None
    try:
        try:
            record = await anyio.to_thread.run_sync(service.store.create, record)
        finally:
            await anyio.to_thread.run_sync(_unpin, service, record)  # the job holds them now
        service.pool.submit(job_id)
        if event is not None:
            deadline = time.monotonic() + wait_s
            await service.waiters.wait(job_id, event, wait_s)
            record = await anyio.to_thread.run_sync(service.store.get, job_id)
            if record.status == "succeeded" and not record.dry_run and record.output_sha256 is None:
                # A waiting client wants the finished job: its output digest too, if it comes in time.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(anyio.to_thread.run_sync(service.digests.ensure, job_id),
                                           max(0.0, deadline - time.monotonic()))
                record = await anyio.to_thread.run_sync(service.store.get, job_id)
    finally:
        if event is not None:
            service.waiters.unregister(job_id, event)
    return _job_response(record, request)


def _unpin(service: Any, record: JobRecord) -> None:
    for sha in dict.fromkeys(record.blobs):
        service.models.unpin(sha)


async def _stored_job_record(request: Request, service: Any, tenant: str, job_id: str) -> JobRecord:
    """A job on a stored model; the model's blobs are pinned until the job is recorded."""
    raw = await request.body()
    if len(raw) > service.settings.max_form_field_bytes:
        raise BadRequest(f"the request body is larger than {service.settings.max_form_field_bytes} bytes")
    try:
        body = StoredJobCreate.model_validate_json(raw or b"{}")
    except ValidationError as exc:  # 422 with a JSON pointer per error, like every other request error
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from exc
    spec_text = body.spec if isinstance(body.spec, str) else json.dumps(body.spec)
    await check_spec(spec_text.strip() or "{}")  # 422 with pointers before anything is queued
    model, files = await anyio.to_thread.run_sync(
        _pin_model, service, body.model, tenant if service.settings.tokens else None)
    directory = bool(files)
    return JobRecord(
        id=job_id, tenant=tenant, status="queued", created_at=time.time(), dry_run=body.dry_run,
        spec=spec_text.strip() or "{}", input_filename="model" if directory else model.filename,
        input_bytes=model.bytes,
        input_sha256=model.sha256, model_id=model.id, inline_digest=False, files=files,
    )


def _pin_model(service: Any, model_id: str,
               tenant: str | None) -> tuple[Any, tuple[tuple[str, int, str], ...]]:
    """Blocking: the stored model and, for a directory, its files (path, bytes, sha256), every blob pinned
    until the job is recorded (a directory's job holds each of its files, as a single file's its blob)."""
    model = service.models.get(model_id, tenant)
    directory = len(model.files) > 1
    files = tuple((f.path, f.bytes, f.sha256) for f in model.files) if directory else ()
    pinned: list[str] = []
    try:
        for sha in dict.fromkeys((model.sha256, *(sha for _p, _n, sha in files))):
            service.models.pin(sha, blob=not directory or sha != model.sha256)
            pinned.append(sha)
    except BaseException:
        for sha in pinned:
            service.models.unpin(sha)
        raise
    return model, files


async def _upload_job_record(request: Request, service: Any, tenant: str, job_id: str) -> JobRecord:
    """The v1 multipart job: the upload is stored as a blob (pinned until the job is recorded); the
    job reads it into a model first unless this tenant already has that content."""
    s = service.settings
    tmp = service.blobs.temp_path()
    t0 = time.perf_counter()
    with service.uploads.hold(tenant if tenant is not None else f"client {_client_host(request)}"):
        upload = await receive_upload(request, tmp, max_file_bytes=s.max_upload_bytes,
                                      max_field_bytes=s.max_form_field_bytes, text_fields=JOB_FORM_FIELDS)
    t1 = time.perf_counter()
    service.metrics.bytes_in.inc(upload.bytes)
    try:
        spec_text, dry_run = _spec_and_dry_run(upload, request)
        await check_spec(spec_text)  # 422 with pointers before anything is queued
        existing = await anyio.to_thread.run_sync(service.models.find, tenant, upload.sha256)
        await anyio.to_thread.run_sync(service.models.adopt_blob, tmp, upload.sha256, upload.bytes)
        log.info("upload stored", extra={"job_id": job_id, "bytes": upload.bytes,
                                          "receive_s": round(t1 - t0, 4),
                                          "persist_s": round(time.perf_counter() - t1, 4)})
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and (ours := storage_error(exc)) is not None:
            raise ours from exc
        raise
    return JobRecord(
        id=job_id, tenant=tenant, status="queued", created_at=time.time(), dry_run=dry_run,
        spec=spec_text, input_filename=upload.filename, input_bytes=upload.bytes,
        input_sha256=upload.sha256,
        model_id=existing.id if existing is not None else job_id,  # job id = a model this job creates
    )


def _job_response(record: JobRecord, request: Request) -> Response:
    body = job_public(record).model_dump(mode="json")
    location = {"location": body["links"]["self"]}
    if record.status == "succeeded":
        return JSONResponse(body, status_code=200, headers=location)
    if record.status == "failed" and record.error:
        status = int(record.error.get("status") or 500)
        payload = {**record.error, "instance": str(request.url.path), "job": body}
        return JSONResponse(payload, status_code=status, headers=location, media_type=PROBLEM)
    return JSONResponse(body, status_code=202, headers=location)


@router.get("", response_model=JobsPublic, responses=_RESPONSES)
def list_jobs(service: ServiceDep, tenant: TenantDep, limit: int = Query(20, ge=1, le=200),
              cursor: str | None = None) -> JobsPublic:
    """Jobs, newest first, a page at a time; follow ``next`` for the following page."""
    records = service.store.list(tenant, limit + 1, _uncursor(cursor) if cursor else None)
    more = len(records) > limit
    records = records[:limit]
    nxt = f"/v1/jobs?limit={limit}&cursor={_cursor(records[-1].seq)}" if more and records else None
    return JobsPublic(items=[job_public(r) for r in records], next=nxt)


@router.get("/{job_id}", response_model=JobPublic, responses=_RESPONSES)
def get_job(job_id: str, service: ServiceDep, tenant: TenantDep) -> JobPublic:
    return job_public(service.store.get(job_id, tenant))


def _finished(service: Any, job_id: str, tenant: str | None, output: bool = False) -> JobRecord:
    """Blocking: the record of a finished, successful job (409 otherwise); with ``output``, 404 for a dry
    run, which has none."""
    record = service.store.get(job_id, tenant)
    if output and record.dry_run:
        raise JobNotFound(f"job {job_id} was a dry run: it has no output", job_id=job_id)
    if record.status in ("queued", "running"):
        raise JobConflict(f"job {job_id} is {record.status}; try again when it has finished",
                          job_id=job_id, status=record.status)
    if record.status == "failed":
        raise JobConflict(f"job {job_id} failed: {(record.error or {}).get('detail', 'no detail')}",
                          job_id=job_id, status=record.status)
    return record


@router.get("/{job_id}/report", responses=_RESPONSES)
async def get_report(job_id: str, service: ServiceDep, tenant: TenantDep) -> Response:
    """The parameter-state report of a finished job."""
    await anyio.to_thread.run_sync(_finished, service, job_id, tenant)
    path = service.blobs.report_path(job_id)
    try:  # read whole, in a thread: the file is replaced once the output's digest is known
        body = await anyio.to_thread.run_sync(path.read_bytes)
    except FileNotFoundError as exc:
        raise JobNotFound(f"the report of job {job_id} is gone", job_id=job_id) from exc
    return Response(body, media_type="application/json")


@router.head("/{job_id}/artifact", include_in_schema=False)
@router.get("/{job_id}/artifact", responses={
    **_RESPONSES, 206: {"description": "Partial content"}, 304: {"description": "Not modified"},
    416: {"description": "Range not satisfiable"},
    200: {"content": {"application/octet-stream": {}}, "description": "The modified checkpoint"}})
async def get_artifact(job_id: str, request: Request, service: ServiceDep, tenant: TenantDep) -> Response:
    """The modified checkpoint: strong ETag and Repr-Digest from its sha256, Range support. For a model
    directory: one uncompressed tar of the output directory (``<name>/<path>`` entries), Range too."""
    record = await anyio.to_thread.run_sync(_finished, service, job_id, tenant, True)
    directory = await anyio.to_thread.run_sync(_directory_patch, service, record)
    if directory is not None:  # a model directory: one uncompressed tar of the output directory
        return _tar_response(service, *directory, request)
    path = service.blobs.output_path(job_id)
    segments: list[Segment] | None = None
    if path.exists():  # a full copy, from before stored models
        opener = None
    else:
        segments = _segments(service, record)
        path = service.blobs.content.path(record.input_sha256)
        opener = partial(SegmentReader, path, segments)
        if record.output_sha256 is None:  # computed in the background; a download that comes first waits
            sha = await anyio.to_thread.run_sync(service.digests.ensure, job_id)
            record = replace(record, output_sha256=sha)
    if record.output_sha256 is None or record.output_bytes is None or not path.exists():
        raise JobNotFound(f"the artifact of job {job_id} is gone", job_id=job_id)
    return ArtifactResponse(path, size=record.output_bytes, sha256=record.output_sha256,
                            filename=record.output_filename or "model.frozen", method=request.method,
                            request_headers=dict(request.headers),
                            on_sent=service.metrics.bytes_out.inc, opener=opener,
                            accel=_accel(service, path, segments, record.output_bytes))


def _accel(service: Any, path: Path, segments: list[Segment] | None, size: int) -> str | None:
    """The proxy's internal URI for ``path`` when the download is that file whole (``segments`` None, or
    one range that covers it all: an output the freeze left unchanged); None to stream it from here."""
    prefix = service.settings.accel_redirect
    if not prefix or (segments is not None and normalize(segments) != [(0, size)]):
        return None
    try:
        if path.stat().st_size != size:
            return None
    except OSError:
        return None
    return accel_uri(prefix, service.blobs.root, path)


def _directory_patch(service: Any, record: JobRecord) -> tuple[JobRecord, dict[str, Any]] | None:
    """Blocking: the patch of a job on a model directory (one entry per file), every output digest known
    (computed now unless the background pass did already), with the record as it then is; None for a
    single file."""
    path = service.blobs.patch_path(record.id)
    if record.dry_run or service.blobs.content.exists(record.input_sha256) or not path.is_file():
        return None
    if record.output_sha256 is None:
        service.digests.ensure(record.id)
        record = service.store.get(record.id)
    doc = json.loads(path.read_bytes())
    return (record, doc) if isinstance(doc.get("files"), list) else None


def _tar_response(service: Any, record: JobRecord, patch: dict[str, Any], request: Request) -> Response:
    from layerfreeze.api.archive import open_tar, tar_layout, tar_size

    for entry in patch["files"]:
        if not service.blobs.content.exists(entry["base"]["sha256"]):
            raise JobNotFound(f"the input of job {record.id} is gone (its model was deleted)",
                              job_id=record.id)
    top = record.output_filename or "model.frozen"
    layout = tar_layout(patch["files"], top, int(record.created_at))
    return ArtifactResponse(service.blobs.content.path(patch["files"][0]["base"]["sha256"]),
                            size=tar_size(layout), sha256=None, etag=f"tar-{record.output_sha256}",
                            filename=f"{top}.tar", method=request.method, media_type="application/x-tar",
                            request_headers=dict(request.headers), on_sent=service.metrics.bytes_out.inc,
                            opener=partial(open_tar, layout, service.blobs.content.path))


@router.head("/{job_id}/files/{path:path}", include_in_schema=False)
@router.get("/{job_id}/files/{path:path}", responses={
    **_RESPONSES, 206: {"description": "Partial content"}, 304: {"description": "Not modified"},
    416: {"description": "Range not satisfiable"},
    200: {"content": {"application/octet-stream": {}}, "description": "One file of the output directory"}})
async def get_file(job_id: str, path: str, request: Request, service: ServiceDep,
                   tenant: TenantDep) -> Response:
    """One file of a model directory's output, by its relative path: strong ETag and Repr-Digest from
    its sha256, Range support, as ``/artifact`` for a single file."""
    record = await anyio.to_thread.run_sync(_finished, service, job_id, tenant, True)
    directory = await anyio.to_thread.run_sync(_directory_patch, service, record)
    if directory is None:
        raise JobNotFound(f"job {job_id} froze a single file: download it from /v1/jobs/{job_id}/artifact",
                          job_id=job_id)
    _record, patch = directory
    entry = next((e for e in patch["files"] if e["path"] == path), None)
    if entry is None:
        raise JobNotFound(f"the output of job {job_id} has no file {path[:200]!r}", job_id=job_id)
    base = service.blobs.content.path(entry["base"]["sha256"])
    if not base.exists():
        raise JobNotFound(f"the input of job {job_id} is gone (its model was deleted)", job_id=job_id)
    segments = from_patch_segments(entry["segments"])
    return ArtifactResponse(base, size=entry["output"]["bytes"], sha256=entry["output"]["sha256"],
                            filename=path.rsplit("/", 1)[-1], method=request.method,
                            request_headers=dict(request.headers), on_sent=service.metrics.bytes_out.inc,
                            opener=partial(SegmentReader, base, segments),
                            accel=_accel(service, base, segments, entry["output"]["bytes"]))


def _segments(service: Any, record: JobRecord) -> list[Segment]:
    path = service.blobs.patch_path(record.id)
    if not path.is_file():
        raise JobNotFound(f"the artifact of job {record.id} is gone", job_id=record.id)
    return from_patch_segments(json.loads(path.read_bytes())["segments"])


@router.get("/{job_id}/patch", responses={
    **_RESPONSES, 200: {"content": {"application/json": {}},
                        "description": "The artifact as a layerfreeze-patch/1 delta against the model"}})
async def get_patch(job_id: str, service: ServiceDep, tenant: TenantDep) -> Response:
    """The output as a delta against the stored input (``layerfreeze-patch/1``): a client that holds
    the input rebuilds the output exactly and checks it against ``output.sha256``."""
    record = await anyio.to_thread.run_sync(_finished, service, job_id, tenant, True)
    path = service.blobs.patch_path(job_id)
    if not path.is_file():
        raise JobNotFound(f"job {job_id} has no patch (its artifact predates stored models)", job_id=job_id)
    directory = await anyio.to_thread.run_sync(_directory_patch, service, record)
    if directory is not None:  # a model directory: one entry per file, digests known
        record, doc = directory
        return JSONResponse(doc, headers={"etag": f'"patch-{record.output_sha256}"',
                                          "cache-control": "private, no-cache"})
    entry = json.loads(await anyio.to_thread.run_sync(path.read_bytes))
    sha = record.output_sha256 or await anyio.to_thread.run_sync(service.digests.ensure, job_id)
    entry["output"]["sha256"] = sha
    entry["path"] = record.output_filename or entry["path"]
    body = {"format": PATCH_FORMAT, "files": [entry]}
    return JSONResponse(body, headers={"etag": f'"patch-{sha}"', "cache-control": "private, no-cache"})


@router.delete("/{job_id}", status_code=204, responses=_RESPONSES)
def delete_job(job_id: str, service: ServiceDep, tenant: TenantDep) -> Response:
    """Remove a job and its files (409 while it runs); its input goes too unless a model or another job
    still holds it."""
    record = service.store.delete(job_id, tenant)
    service.blobs.remove_job(job_id)
    service.models.release_all(record.blobs)
    return Response(status_code=204)


