"""``/v1/uploads``: resumable uploads, tus 1.0.0 (core protocol, with the creation and termination
extensions), for models of many GB over connections that drop.

    POST   /v1/uploads            Upload-Length, Upload-Metadata (filename)  -> 201, Location
    HEAD   /v1/uploads/{id}       -> Upload-Offset, Upload-Length
    PATCH  /v1/uploads/{id}       Upload-Offset, application/offset+octet-stream -> 204, Upload-Offset
    DELETE /v1/uploads/{id}       -> 204
    POST   /v1/models             {"upload": "<id>"}: the complete upload becomes a model
    POST   /v1/models             {"files": [{"path": "<relative path>", "upload": "<id>"}, ...]}:
                                  complete uploads become one model directory

Bytes received before a connection drops are kept (fsynced), so ``HEAD`` tells the client where to go on.
Uploads live in ``<data_dir>/uploads/`` (kept across restarts), belong to the tenant that created them,
and are removed a day after their last byte arrived if they never became a model.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from starlette.requests import ClientDisconnect

from layerfreeze.api.deps import ServiceDep, TenantDep
from layerfreeze.api.numbers import parse_uint
from layerfreeze.api.service import Service
from layerfreeze.api.uploads import clean_filename
from layerfreeze.errors import (
    BadRequest,
    PreconditionFailed,
    UnsupportedMediaType,
    UploadNotFound,
    UploadTooLarge,
)
from layerfreeze.errors import UploadConflict as OffsetMismatch
from layerfreeze.storage.blobs import fsync_dir, fsync_file

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])
PROBLEM = "application/problem+json"


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "Malformed request", 401: "Missing or invalid token", 404: "Unknown upload",
            409: "Offset mismatch, upload in progress or incomplete", 412: "Tus-Resumable 1.0.0 missing",
            413: "Larger than the upload limit", 415: "Not application/offset+octet-stream"}
    return {c: {"content": {PROBLEM: {}}, "description": text[c]} for c in codes}
TUS_VERSION = "1.0.0"
EXPIRY_S = 24 * 3600
_ID = re.compile(r"^[0-9a-f]{24}$")
_active: set[str] = set()
_active_lock = threading.Lock()


@dataclass
class UploadInfo:
    id: str
    tenant: str
    length: int
    filename: str
    created_at: float

    @property
    def json(self) -> bytes:
        return json.dumps(self.__dict__).encode()


def uploads_dir(service: Service) -> Path:
    path = service.blobs.root / "uploads"
    path.mkdir(exist_ok=True)
    return path


def _paths(service: Service, upload_id: str) -> tuple[Path, Path]:
    if not _ID.match(upload_id):
        raise UploadNotFound(f"no upload {upload_id}", model_id=upload_id)
    d = uploads_dir(service)
    return d / f"{upload_id}.json", d / f"{upload_id}.part"


def load_upload(service: Service, upload_id: str, tenant: str | None) -> tuple[UploadInfo, Path]:
    meta, data = _paths(service, upload_id)
    try:
        info = UploadInfo(**json.loads(meta.read_bytes()))
    except (FileNotFoundError, ValueError, TypeError) as exc:
        raise UploadNotFound(f"no upload {upload_id}", model_id=upload_id) from exc
    if tenant is not None and info.tenant != tenant:
        raise UploadNotFound(f"no upload {upload_id}", model_id=upload_id)
    return info, data


def remove_upload(service: Service, upload_id: str) -> None:
    meta, data = _paths(service, upload_id)
    for path in (meta, data, data.with_suffix(".lock")):
        with contextlib.suppress(OSError):
            path.unlink()


def expire_uploads(service: Service, now: float) -> int:
    """Remove uploads whose last byte arrived more than EXPIRY_S ago (never made into a model)."""
    removed = 0
    for meta in uploads_dir(service).glob("*.json"):
        data = meta.with_suffix(".part")
        last = max(meta.stat().st_mtime, data.stat().st_mtime if data.exists() else 0)
        if now - last > EXPIRY_S and meta.stem not in _active:
            remove_upload(service, meta.stem)
            removed += 1
    return removed


def _tus_headers(**extra: str) -> dict[str, str]:
    return {"tus-resumable": TUS_VERSION, **extra}


def _check_version(request: Request) -> None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise PreconditionFailed(f"this server speaks tus {TUS_VERSION}: send 'Tus-Resumable: {TUS_VERSION}'")


def _filename(metadata: str | None) -> str:
    """``filename`` from ``Upload-Metadata: key base64value,key2 base64value2``."""
    for item in (metadata or "").split(","):
        key, _, value = item.strip().partition(" ")
        if key in ("filename", "name") and value:
            with contextlib.suppress(ValueError):
                return clean_filename(base64.b64decode(value, validate=True).decode("utf-8", "replace"))
    return "model"


@router.options("", include_in_schema=False)
def discover(service: ServiceDep) -> Response:
    return Response(status_code=204, headers=_tus_headers(**{
        "tus-version": TUS_VERSION, "tus-extension": "creation,termination",
        "tus-max-size": str(service.settings.max_upload_bytes),
        "layerfreeze-max-model-files": str(service.settings.max_model_files)}))


@router.post("", status_code=201, responses=_problems(400, 401, 412, 413))
def create_upload(request: Request, service: ServiceDep, tenant: TenantDep) -> Response:
    """Start a resumable upload of ``Upload-Length`` bytes (tus creation)."""
    _check_version(request)
    length = parse_uint(request.headers.get("upload-length", ""))
    if length is None:
        raise BadRequest("Upload-Length (the file's size in bytes, ASCII digits) is required; deferred "
                         "lengths are not supported")
    if length > service.settings.max_upload_bytes:
        raise UploadTooLarge(f"the upload is larger than the limit of {service.settings.max_upload_bytes} "
                             "bytes", limit="max_upload_bytes", value=length,
                             maximum=service.settings.max_upload_bytes)
    info = UploadInfo(id=secrets.token_hex(12), tenant=tenant or "", length=length,
                      filename=_filename(request.headers.get("upload-metadata")), created_at=time.time())
    meta, data = _paths(service, info.id)
    data.touch(mode=0o600, exist_ok=False)
    tmp = meta.with_suffix(".json.tmp")
    tmp.write_bytes(info.json)
    fsync_file(tmp)
    os.replace(tmp, meta)
    fsync_dir(meta.parent)
    return Response(status_code=201, headers=_tus_headers(location=f"/v1/uploads/{info.id}",
                                                          **{"upload-offset": "0"}))


@router.head("/{upload_id}", responses=_problems(401, 404))
def upload_offset(upload_id: str, service: ServiceDep, tenant: TenantDep) -> Response:
    """How many bytes the service holds (resume from there)."""
    info, data = load_upload(service, upload_id, tenant)
    return Response(status_code=200, headers=_tus_headers(**{
        "upload-offset": str(data.stat().st_size), "upload-length": str(info.length),
        "cache-control": "no-store"}))


@router.patch("/{upload_id}", status_code=204, responses=_problems(400, 401, 404, 409, 412, 413, 415))
async def append(upload_id: str, request: Request, service: ServiceDep, tenant: TenantDep) -> Response:
    """Append bytes at ``Upload-Offset``; the bytes that arrived are kept even if the connection drops."""
    _check_version(request)
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/offset+octet-stream":
        raise UnsupportedMediaType("PATCH takes Content-Type: application/offset+octet-stream")
    info, data = load_upload(service, upload_id, tenant)
    with _claimed(data, upload_id, "another PATCH of this upload is in progress"):
        offset = data.stat().st_size
        if parse_uint(request.headers.get("upload-offset", "")) != offset:
            raise OffsetMismatch(f"Upload-Offset must be {offset}, the bytes held so far", job_id=upload_id)
        offset = await _receive(request, data, offset, info.length)
    return Response(status_code=204, headers=_tus_headers(**{"upload-offset": str(offset)}))


@contextlib.contextmanager
def _claimed(data: Path, upload_id: str, busy: str) -> Iterator[None]:
    """One request at a time works on an upload's bytes; another one meanwhile is a 409 saying ``busy``.
    Within this process a set says so; across processes (API replicas sharing the data directory) an
    ``flock`` on ``<id>.lock`` beside the bytes, which the kernel drops however its holder ends."""
    with _active_lock:
        if upload_id in _active:
            raise OffsetMismatch(busy, job_id=upload_id)
        _active.add(upload_id)
    try:
        fd = os.open(data.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OffsetMismatch(busy, job_id=upload_id) from None
            yield
        finally:
            os.close(fd)
    finally:
        with _active_lock:
            _active.discard(upload_id)


async def _receive(request: Request, data: Path, offset: int, length: int) -> int:
    fd = os.open(data, os.O_WRONLY | os.O_APPEND)
    try:
        try:
            async for chunk in request.stream():
                if offset + len(chunk) > length:
                    raise UploadTooLarge(f"the upload would exceed its Upload-Length of {length} bytes",
                                         limit="upload_length", maximum=length)
                view = memoryview(chunk)
                while view:
                    view = view[await anyio.to_thread.run_sync(os.write, fd, view):]
                offset += len(chunk)
        except ClientDisconnect:
            pass  # keep what arrived: the client resumes from HEAD's Upload-Offset
        await anyio.to_thread.run_sync(os.fsync, fd)
    finally:
        os.close(fd)
    return offset


@router.delete("/{upload_id}", status_code=204, responses=_problems(401, 404, 412))
def terminate(upload_id: str, request: Request, service: ServiceDep, tenant: TenantDep) -> Response:
    _check_version(request)
    load_upload(service, upload_id, tenant)
    remove_upload(service, upload_id)
    return Response(status_code=204, headers=_tus_headers())


def take_many(service: Service, upload_ids: list[str], tenant: str | None) -> list[tuple[Path, int, str]]:
    """For ``POST /v1/models {"files": [...]}`` (blocking): several complete uploads, each moved to a
    temporary file and hashed; [(path, bytes, sha256)] in the order given. All are claimed and checked
    complete before any is taken, so a 409 (or 404) leaves every upload as it was."""
    import hashlib

    loaded = [load_upload(service, upload_id, tenant) for upload_id in upload_ids]
    with contextlib.ExitStack() as claims:
        for upload_id, (_info, data) in zip(upload_ids, loaded, strict=True):
            claims.enter_context(_claimed(data, upload_id, "the upload is still receiving bytes"))
        for upload_id, (info, data) in zip(upload_ids, loaded, strict=True):
            size = data.stat().st_size if data.exists() else -1
            if size != info.length:
                raise OffsetMismatch(f"upload {upload_id} holds {max(size, 0)} of its {info.length} bytes",
                                     job_id=upload_id)
        taken: list[tuple[Path, int]] = []
        for upload_id, (info, data) in zip(upload_ids, loaded, strict=True):
            tmp = service.blobs.temp_path("tus")
            os.replace(data, tmp)
            remove_upload(service, upload_id)
            taken.append((tmp, info.length))
    out = []
    try:
        for tmp, size in taken:
            digest = hashlib.sha256()
            with open(tmp, "rb") as f:
                while chunk := f.read(4 << 20):
                    digest.update(chunk)
            out.append((tmp, size, digest.hexdigest()))
    except BaseException:
        for tmp, _size in taken:
            tmp.unlink(missing_ok=True)
        raise
    return out


def take_complete(service: Service, upload_id: str, tenant: str | None) -> tuple[Path, str, int, str]:
    """For ``POST /v1/models {"upload": id}`` (blocking): the complete upload moved to a temporary file
    and hashed; (path, filename, bytes, sha256). 409 while bytes are missing or a PATCH runs."""
    info, _data = load_upload(service, upload_id, tenant)
    ((tmp, size, sha256),) = take_many(service, [upload_id], tenant)
    return tmp, info.filename, size, sha256

