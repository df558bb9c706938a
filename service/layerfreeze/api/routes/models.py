"""``/v1/models``: upload a model once, list, fetch, preview a spec on it, delete.

A model is read once, in a worker process, when it is uploaded; what the reader found (the inventory
and the byte sites a freeze rewrites) is stored next to it, so previews and jobs never parse it again.
Content a tenant already has is not stored twice: the upload answers 200 with the existing model.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import secrets
import threading
import time
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING, Any, Literal

import anyio
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from layerfreeze.api.deps import ServiceDep, TenantDep
from layerfreeze.api.idempotency import begin as begin_idempotent
from layerfreeze.api.idempotency import fingerprint
from layerfreeze.api.routes.tus import take_complete, take_many
from layerfreeze.api.schemas import ModelPublic, ModelsPublic, model_public
from layerfreeze.api.service import Service
from layerfreeze.api.uploads import UploadedFile, clean_filename, receive_upload
from layerfreeze.core.model import Inventory
from layerfreeze.core.report import FileRef
from layerfreeze.errors import (
    BadRequest,
    LayerfreezeError,
    ModelNotFound,
    NotReady,
    UploadTooLarge,
    storage_error,
)
from layerfreeze.storage.idempotency import IdempotencyStore
from layerfreeze.storage.models import ModelFile, ModelRecord
from layerfreeze.worker.runner import DirectoryFiles, ReadTask

if TYPE_CHECKING:
    from layerfreeze.core.columns import Layout

router = APIRouter(prefix="/v1/models", tags=["models"])

PROBLEM = "application/problem+json"
_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"content": {PROBLEM: {}}, "description": d}
    for s, d in ((400, "Malformed request"), (401, "Missing or invalid token"), (404, "Unknown model"),
                 (422, "Invalid request"))
}
SHA256_PATTERN = "^[0-9a-f]{64}$"


def _cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(str(seq).encode()).decode().rstrip("=")


def _uncursor(cursor: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except ValueError as exc:
        raise BadRequest("invalid cursor", pointer="/cursor") from exc


def _model_response(model: ModelRecord, status: int) -> JSONResponse:
    body = model_public(model).model_dump(mode="json")
    return JSONResponse(body, status_code=status, headers={"location": body["links"]["self"]})


class _Failed(LayerfreezeError):
    """A worker's problem object, answered as it is."""

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(str(problem.get("detail", "the model could not be read")))
        self.problem = problem


def store_model(service: Service, tenant: str, tmp: Any, filename: str, size: int, sha256: str
                ) -> tuple[ModelRecord, bool]:
    """Blocking: adopt a received upload as a blob, read it in a worker, record the model.
    (the model, True) when new; (the tenant's existing model, False) when it had this content."""
    existing = service.models.find(tenant, sha256)
    if existing is not None:
        tmp.unlink(missing_ok=True)
        return existing, False
    service.models.adopt_blob(tmp, sha256, size)
    model_id = secrets.token_hex(12)
    try:
        task = ReadTask(
            model_id=model_id, src=service.blobs.content.path(sha256), filename=filename, sha256=sha256,
            model=service.pool.model_paths(model_id), limits=service.settings.read_limits())
        return _read_and_record(service, tenant, task, size, (ModelFile(filename, size, sha256),))
    finally:
        service.models.unpin(sha256)


def _read_and_record(service: Service, tenant: str, task: ReadTask, size: int,
                     files: tuple[ModelFile, ...]) -> tuple[ModelRecord, bool]:
    """Blocking: read a model once in a worker, then record it; when the tenant already has it (a race
    with the same upload), the existing record stands and this read's files go."""
    outcome = service.pool.call(task)
    if not outcome.ok or outcome.model is None:
        service.blobs.remove_model(task.model_id)
        raise _Failed(outcome.problem or {"status": 500, "detail": "the model could not be read"})
    record, new = service.models.create(ModelRecord(
        id=task.model_id, tenant=tenant, sha256=task.sha256, bytes=size,
        format=str(outcome.model["format"]), created_at=time.time(), summary=outcome.model["summary"],
        files=files))
    if not new:
        service.blobs.remove_model(task.model_id)
    return record, new


def directory_files(service: Service, files: Any) -> DirectoryFiles:
    """A model directory's files as a worker reads them: (relative path, stored blob, sha256) by path."""
    return tuple(sorted((f.path, service.blobs.content.path(f.sha256), f.sha256) for f in files))


def store_directory(service: Service, tenant: str, files: list[UploadedFile]) -> tuple[ModelRecord, bool]:
    """Blocking: a model directory's files (relative path -> received file) as one model. Each file is
    stored as a blob; the model's sha256 is that of the ``sha256sum``-style listing of its files."""
    from layerfreeze.formats.sharded import check_paths
    from layerfreeze.freeze import listing_sha256

    check_paths(f.name for f in files)
    listing = listing_sha256({f.name: f.sha256 for f in files})
    assert listing is not None
    total = sum(f.bytes for f in files)
    existing = service.models.find(tenant, listing)
    if existing is not None:
        for f in files:
            f.path.unlink(missing_ok=True)
        return existing, False
    adopted: list[str] = []
    try:
        for f in files:
            service.models.adopt_blob(f.path, f.sha256, f.bytes)
            adopted.append(f.sha256)
        model_id = secrets.token_hex(12)
        model_files = tuple(ModelFile(f.name, f.bytes, f.sha256) for f in sorted(files, key=lambda f: f.name))
        task = ReadTask(
            model_id=model_id, src=service.blobs.content.path(files[0].sha256), filename="model",
            sha256=listing, model=service.pool.model_paths(model_id), limits=service.settings.read_limits(),
            files=directory_files(service, model_files))
        return _read_and_record(service, tenant, task, total, model_files)
    finally:
        for sha in adopted:
            service.models.unpin(sha)


@router.post("", status_code=201, response_model=ModelPublic,
             responses={**_RESPONSES, 200: {"description": "The tenant already has this content"},
                        409: {"description": "Upload incomplete, or its Idempotency-Key in use"},
                        413: {"description": "Upload too large"}, 415: {"description": "Not multipart"},
                        422: {"description": "Not a checkpoint we read"},
                        429: {"description": "Too busy"}, 503: {"description": "Not ready"},
                        507: {"description": "Storage full"}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                     "file": {"type": "string", "format": "binary",
                              "description": "one or more parts; filenames are relative paths"}}}},
                 "application/json": {"schema": {"oneOf": [
                     {"type": "object", "required": ["upload"], "additionalProperties": False,
                      "properties": {"upload": {"type": "string", "description": "a complete upload's id"}}},
                     {"type": "object", "required": ["files"], "additionalProperties": False, "properties": {
                         "files": {"type": "array", "minItems": 1, "items": {
                             "type": "object", "required": ["path", "upload"], "additionalProperties": False,
                             "properties": {"path": {"type": "string", "description": "relative path"},
                                            "upload": {"type": "string",
                                                       "description": "a complete upload's id"}}}}}}]}}}}})
async def upload_model(request: Request, service: ServiceDep, tenant: TenantDep) -> Response:
    """Store and read a model: multipart with one ``file`` part, or several whose filenames are the
    relative paths of a model directory's files (one model, CONTRACT section 9), or JSON naming complete
    resumable uploads (``/v1/uploads``): ``{"upload": "<id>"}`` for one file, ``{"files": [{"path":
    "<relative path>", "upload": "<id>"}, ...]}`` for a model directory. 201 with the model, or
    200 with the existing model when this tenant already uploaded the same content (nothing stored twice)."""
    if not service.pool.running:
        raise NotReady("the service is shutting down; retry shortly", retry_after=5)
    s = service.settings
    idem = await anyio.to_thread.run_sync(begin_idempotent, request, IdempotencyStore(service.store), tenant)
    tmp = service.blobs.temp_path()
    received: list[UploadedFile] = []
    try:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json":
            named = await _uploads_named(request, s.max_model_files)  # complete resumable uploads
            print_ = (fingerprint("model-upload", named[0][1]) if named[0][0] is None else
                      fingerprint("model-files", *[x for pair in named for x in pair]))
            if (replay := idem.replay(print_)) is not None:
                return replay
            if len(named) == 1 and named[0][0] is None:  # {"upload": id}: one file, named as uploaded
                tmp, filename, size, sha = await anyio.to_thread.run_sync(take_complete, service,
                                                                          named[0][1], tenant)
            else:
                received = await anyio.to_thread.run_sync(_take_directory, service, named, tenant)
                filename, size, sha = clean_filename(received[0].name), received[0].bytes, received[0].sha256
                if len(received) == 1:  # one file: a single-file model, as one multipart part makes
                    tmp, received = received[0].path, []
        else:
            upload = await receive_upload(request, tmp, max_file_bytes=s.max_upload_bytes,
                                          max_field_bytes=s.max_form_field_bytes, file_field="file",
                                          max_files=s.max_model_files)
            received = upload.files
            service.metrics.bytes_in.inc(sum(f.bytes for f in received))
            filename, size, sha = upload.filename, upload.bytes, upload.sha256
            print_ = (fingerprint("model", sha, filename) if len(received) == 1 else
                      fingerprint("model-directory", *[x for f in received for x in (f.sha256, f.name)]))
            if (replay := idem.replay(print_)) is not None:
                return replay
        try:
            if len(received) > 1:
                record, new = await anyio.to_thread.run_sync(store_directory, service, tenant or "", received)
            else:
                record, new = await anyio.to_thread.run_sync(
                    store_model, service, tenant or "", tmp, filename, size, sha)
        except _Failed as exc:  # the same upload would fail the same way: nothing to remember
            await anyio.to_thread.run_sync(idem.release)
            body = {**exc.problem, "instance": str(request.url.path)}
            return JSONResponse(body, status_code=int(exc.problem.get("status") or 500), media_type=PROBLEM)
        except OSError as exc:
            if (ours := storage_error(exc)) is not None:
                raise ours from exc
            raise
    except BaseException:
        await anyio.to_thread.run_sync(idem.release)
        raise
    finally:
        for path in (tmp, *(f.path for f in received)):
            with contextlib.suppress(OSError):
                path.unlink()
    response = _model_response(record, 201 if new else 200)
    await anyio.to_thread.run_sync(idem.complete, print_, response)
    return response


_JSON_FORMS = ('a JSON body names complete resumable uploads: {"upload": "<id>"}, or '
               '{"files": [{"path": "<relative path>", "upload": "<id>"}, ...]} for a model directory')


async def _uploads_named(request: Request, max_files: int) -> list[tuple[str | None, str]]:
    """The JSON body's uploads as (relative path or None, upload id): ``{"upload": id}`` (one file, named
    as it was uploaded) or ``{"files": [{"path", "upload"}, ...]}`` (a model directory's files; the paths
    are checked here, before any upload is taken)."""
    from layerfreeze.formats.sharded import check_paths

    most = 64 * 1024 + 8 * 1024 * max_files  # a path is at most 4096 characters, an id a URL
    raw = bytearray()
    async for chunk in request.stream():  # bounded while it arrives, never read whole first
        raw += chunk
        if len(raw) > most:
            raise UploadTooLarge(f"the JSON body is larger than {most} bytes, more than a list of "
                                 f"{max_files} files needs", limit="max_model_files", maximum=max_files)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest("the JSON body is not valid JSON", pointer="") from exc
    if isinstance(body, dict) and set(body) == {"upload"} and isinstance(body["upload"], str):
        return [(None, _upload_id(body["upload"]))]
    files = body.get("files") if isinstance(body, dict) and set(body) == {"files"} else None
    if not isinstance(files, list) or not files:
        raise BadRequest(_JSON_FORMS, pointer="/files" if isinstance(body, dict) and "files" in body else "")
    if len(files) > max_files:
        raise UploadTooLarge(f"the model has {len(files)} files, more than the limit of {max_files}",
                             limit="max_model_files", value=len(files), maximum=max_files)
    named: list[tuple[str | None, str]] = []
    for i, entry in enumerate(files):
        if (not isinstance(entry, dict) or set(entry) != {"path", "upload"}
                or not all(isinstance(v, str) for v in entry.values())):
            raise BadRequest(f'files[{i}] must be {{"path": "<relative path>", "upload": "<id>"}}',
                             pointer=f"/files/{i}")
        named.append((entry["path"], _upload_id(entry["upload"])))
    check_paths(p for p, _u in named if p is not None)
    counts = Counter(u for _p, u in named)
    if len(counts) != len(named):
        twice = next(u for u, n in counts.items() if n > 1)
        raise BadRequest(f"upload {twice[:40]!r} is named twice; each file is its own upload",
                         pointer="/files")
    return named


def _upload_id(value: str) -> str:
    return value.rsplit("/", 1)[-1]  # the id, or the upload's URL


def _take_directory(service: Service, named: list[tuple[str | None, str]], tenant: str | None
                    ) -> list[UploadedFile]:
    """Blocking: the named complete uploads as received files, within the total size limit."""
    from layerfreeze.api.routes.tus import load_upload

    limit = service.settings.max_upload_bytes
    total = sum(load_upload(service, u, tenant)[0].length for _p, u in named)
    if total > limit:
        raise UploadTooLarge(f"the model's files hold {total} bytes, more than the limit of {limit}",
                             limit="max_upload_bytes", value=total, maximum=limit)
    taken = take_many(service, [u for _p, u in named], tenant)
    return [UploadedFile(path=tmp, name=str(path), bytes=size, sha256=sha)
            for (path, _u), (tmp, size, sha) in zip(named, taken, strict=True)]


@router.get("", response_model=ModelsPublic, responses=_RESPONSES)
def list_models(service: ServiceDep, tenant: TenantDep, limit: int = Query(20, ge=1, le=200),
                cursor: str | None = None,
                sha256: str | None = Query(None, pattern=SHA256_PATTERN,
                                           description="only the model with this content (ask before "
                                                       "uploading: an empty list means upload it)"),
                ) -> ModelsPublic:
    """Models, newest first, a page at a time; ``?sha256=`` finds this tenant's model with that content."""
    records = service.models.list(tenant, limit + 1, _uncursor(cursor) if cursor else None, sha256)
    more = len(records) > limit
    records = records[:limit]
    nxt = f"/v1/models?limit={limit}&cursor={_cursor(records[-1].seq)}" if more and records else None
    return ModelsPublic(items=[model_public(r) for r in records], next=nxt)


@router.get("/{model_id}", response_model=ModelPublic, responses=_RESPONSES)
def get_model(model_id: str, service: ServiceDep, tenant: TenantDep) -> ModelPublic:
    return model_public(service.models.get(model_id, tenant))


@router.get("/{model_id}/report", responses=_RESPONSES)
def get_model_report(model_id: str, service: ServiceDep, tenant: TenantDep) -> Response:
    """The report of the model as it is (every parameter's recorded state)."""
    service.models.get(model_id, tenant)
    path = service.blobs.model_report_path(model_id)
    if not path.is_file():
        raise ModelNotFound(f"the report of model {model_id} is gone", model_id=model_id)
    return FileResponse(path, media_type="application/json")


@router.delete("/{model_id}", status_code=204, responses=_RESPONSES)
def delete_model(model_id: str, service: ServiceDep, tenant: TenantDep) -> Response:
    """Remove the model. Its jobs keep their reports and artifacts (they hold the file until they are
    deleted or expire); new jobs can no longer name it."""
    record = service.models.delete(model_id, tenant)
    service.blobs.remove_model(model_id)
    _inventories.drop(model_id)
    for f in record.files:
        service.models.release(f.sha256)
    return Response(status_code=204)


@dataclasses.dataclass
class _Parsed:
    """A stored model as previews use it: its inventory, the parameters whose file records no flag, and
    (made on the first columnar preview) its report layout."""

    inventory: Inventory
    unrecordable: frozenset[str]
    layout: Layout | None = None


class _InventoryCache:
    """Parsed inventories of recently previewed models (a preview per keystroke reads no file)."""

    def __init__(self, size: int = 32) -> None:
        self._items: OrderedDict[str, _Parsed] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, service: Service, model_id: str) -> _Parsed:
        from layerfreeze.formats.stored import inventory_from, unrecordable_of

        with self._lock:
            if model_id in self._items:
                self._items.move_to_end(model_id)
                return self._items[model_id]
        path = service.blobs.model_stored_path(model_id)
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError as exc:
            raise ModelNotFound(f"no model {model_id}", model_id=model_id) from exc
        entry = _Parsed(inventory_from(doc), unrecordable_of(doc))
        with self._lock:
            self._items[model_id] = entry
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return entry

    def drop(self, model_id: str) -> None:
        with self._lock:
            self._items.pop(model_id, None)


_inventories = _InventoryCache()


def _preview(service: Service, model: ModelRecord, spec: Any, view: str) -> bytes:
    from layerfreeze.core.columns import Layout
    from layerfreeze.freeze import preview_columns, preview_stored

    parsed = _inventories.get(service, model.id)
    name = "model" if len(model.files) > 1 else model.filename  # a directory: named as its jobs name it
    source = FileRef(filename=name, bytes=model.bytes, sha256=model.sha256)
    if view == "columns":  # built from typed data, so not validated again; the layout is kept
        if parsed.layout is None:
            parsed.layout = Layout.of(parsed.inventory)
        body = preview_columns(parsed.inventory, spec, input=source, layout=parsed.layout,
                               unrecordable=parsed.unrecordable)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return preview_stored(parsed.inventory, spec, input=source,
                          unrecordable=parsed.unrecordable).model_dump_json().encode()


@router.post("/{model_id}/preview", responses={**_RESPONSES, 422: {"description": "Invalid spec"}},
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"type": "object", "description": "a freeze spec"}}}}})
async def preview(model_id: str, request: Request, service: ServiceDep, tenant: TenantDep,
                  view: Literal["report", "columns"] = Query(
                      "report", description="report: the full report (default). columns: only what the "
                      "spec decides, as columns aligned to the model's report (summary, rules, warnings, "
                      "one requires_grad character per parameter, per-module trainable counts); for a "
                      "front end that previews on every edit")) -> Response:
    """The report a freeze by this spec would give: no job, nothing written. Computed from the stored
    inventory in a thread, so the event loop keeps serving."""
    model = await anyio.to_thread.run_sync(service.models.get, model_id, tenant)
    raw = await request.body()
    if len(raw) > service.settings.max_form_field_bytes:
        raise BadRequest(f"the spec is larger than {service.settings.max_form_field_bytes} bytes")
    body = await anyio.to_thread.run_sync(_preview, service, model, raw or b"{}", view)
    return Response(body, media_type="application/json")
