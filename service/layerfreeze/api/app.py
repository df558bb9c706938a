"""``create_app(settings[, runtime])``: the FastAPI application, its lifespan, and its error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from layerfreeze import __version__
from layerfreeze.api.middleware import RequestIdMiddleware
from layerfreeze.api.routes import health, jobs, models, tus, web
from layerfreeze.api.service import PollingWaiters, Service
from layerfreeze.errors import LayerfreezeError, WorkerLost
from layerfreeze.metrics import Metrics
from layerfreeze.problems import problem, problem_for
from layerfreeze.settings import Settings
from layerfreeze.storage import lock as data_dir_lock
from layerfreeze.storage.blobs import BlobStore
from layerfreeze.storage.idempotency import IdempotencyStore
from layerfreeze.storage.jobs import JobStore
from layerfreeze.storage.models import PIN_MAX_AGE_S, ModelStore
from layerfreeze.worker.broker import CeleryQueue
from layerfreeze.worker.digests import Digester
from layerfreeze.worker.pool import LocalWorkerPool

log = logging.getLogger("layerfreeze.api")
PROBLEM = "application/problem+json"


def _problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM, headers=headers)


async def _on_layerfreeze_error(request: Request, exc: Exception) -> JSONResponse:
    body = problem_for(exc, instance=request.url.path)
    headers: dict[str, str] = {}
    status = body["status"]
    if status == 401:
        headers["www-authenticate"] = 'Bearer realm="layerfreeze"'
    if request.url.path.startswith("/v1/uploads"):
        headers["tus-resumable"] = "1.0.0"
    if status in (429, 503, 507):
        headers["retry-after"] = str(getattr(exc, "retry_after", 5))
    if status == 416:
        headers["content-range"] = f"bytes */{getattr(exc, 'size', 0)}"
    if status >= 500 and status not in (503, 507):
        log.error("request failed: %s", exc, exc_info=exc)
    return _problem_response(body, headers)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    body = problem(exc.status_code, _TITLES.get(exc.status_code, "Error"), detail, request.url.path)
    return _problem_response(body, dict(exc.headers or {}))


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"pointer": "/" + "/".join(str(p) for p in err.get("loc", ())[1:]) if err.get("loc") else "",
               "message": err.get("msg", "invalid"), "suggestions": []} for err in exc.errors()]
    body = problem(422, "Invalid request", "the request's parameters are invalid", request.url.path,
                   slug="invalid-request", errors=errors)
    return _problem_response(body)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    rid = getattr(request.state, "request_id", None)
    log.error("unhandled error (request %s)", rid, exc_info=exc)
    body = problem(500, "Internal server error", "An internal error occurred; it has been logged.",
                   request.url.path, slug="internal-error", request_id=rid)
    return _problem_response(body)


_TITLES = {400: "Bad request", 404: "Not found", 405: "Method not allowed", 413: "Upload too large",
           415: "Unsupported media type", 422: "Invalid request"}


OWNER = f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}"  # this process, in chore leases


async def _chore_due(service: Service, name: str, every_s: float) -> bool:
    """In the distributed mode one replica does each chore per period (a lease in the database);
    alone, this process always does."""
    if not service.settings.distributed:
        return True
    try:
        return bool(await anyio.to_thread.run_sync(service.store.take_chore, name, OWNER, every_s * 0.9))
    except Exception:
        log.exception("cannot take the lease of chore %s", name)
        return False


async def _redispatch_loop(service: Service, queue: CeleryQueue) -> None:
    """Distributed mode: publish again the jobs a broker lost (restarted without its data, say)."""
    every = max(1.0, min(30.0, service.settings.visibility_timeout_s() / 4))
    while True:
        await asyncio.sleep(every)
        if not await _chore_due(service, "redispatch", every):
            continue
        try:
            await anyio.to_thread.run_sync(queue.redispatch)
        except Exception:
            log.exception("re-publishing jobs failed")


async def _cleanup_loop(service: Service) -> None:
    """Every ``cleanup_interval_s``: delete finished jobs older than ``retention_s`` and their files."""
    s = service.settings
    while True:
        await asyncio.sleep(s.cleanup_interval_s)
        if not await _chore_due(service, "cleanup", s.cleanup_interval_s):
            continue
        with contextlib.suppress(Exception):  # Idempotency-Keys and unfinished uploads: kept a day
            await anyio.to_thread.run_sync(IdempotencyStore(service.store).expire, time.time() - 86400)
            await anyio.to_thread.run_sync(service.models.expire_pins, time.time() - PIN_MAX_AGE_S)
            await anyio.to_thread.run_sync(tus.expire_uploads, service, time.time())
        if s.distributed:  # what crashed processes left: directories and blobs without a record
            with contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(_collect_orphans, service)
        if s.retention_s <= 0:
            continue
        try:
            ids = await anyio.to_thread.run_sync(service.store.expired, time.time() - s.retention_s)
            for job_id in ids:
                await anyio.to_thread.run_sync(_purge, service, job_id)
            if ids:
                log.info("retention: removed %d jobs", len(ids))
        except Exception:
            log.exception("retention cleanup failed")


def _collect_orphans(service: Service) -> None:
    """Distributed mode: files untouched for an hour (or two job time limits) that no record names are
    what a crashed process left (the embedded mode removes them at start-up, which a replica must not)."""
    cutoff = time.time() - max(3600.0, 2 * service.settings.job_timeout_s)
    removed = service.blobs.sweep(service.store.ids(), service.models.ids(), older_than=cutoff)
    removed += service.models.collect(older_than=cutoff)
    if removed:
        log.info("removed %d directories or blobs without a record", removed)


def _purge(service: Service, job_id: str) -> None:
    """Retention: a finished job's record and files go; its input blob too unless still referenced."""
    record = service.store.get(job_id)
    # Files first: once the job answers 404 its files are gone, and a crash in between leaves a record
    # that the next pass removes rather than files that belong to no record.
    service.blobs.remove_job(job_id)
    files = service.store.purge(job_id)
    service.models.release_all((record.input_sha256, *(sha for _p, _n, sha in files)))


def _start(settings: Settings, metrics: Metrics) -> Service:
    if settings.distributed:  # one of many replicas: no lock, no recovery of what others run
        return _open_replica(settings, metrics)
    # The lock comes before anything that touches the directory: recovery and the tmp sweep would break
    # the jobs and uploads of a service already running on it.
    data_dir = data_dir_lock.acquire(settings.data_dir, f"{settings.host}:{settings.port}")
    try:
        return _open(settings, metrics)
    except BaseException:
        data_dir_lock.release(data_dir)
        raise


def _open(settings: Settings, metrics: Metrics) -> Service:
    blobs = BlobStore(settings.data_dir)
    blobs.prepare()
    store = JobStore(blobs.db_path, settings.database_url)
    try:
        return _recover(settings, metrics, blobs, store)
    except BaseException:
        store.close()
        raise


def _recover(settings: Settings, metrics: Metrics, blobs: BlobStore, store: JobStore) -> Service:
    models = ModelStore(store, blobs)
    models.forget_pins()  # of processes that ended (all of them on SQLite: this service is the only one)
    moved = models.migrate_files()
    if moved:
        log.info("moved %d stored uploads into the content store", moved)
    interrupted = problem_for(WorkerLost("interrupted by restart: the service stopped while the job ran"))
    queued = store.recover(interrupted)
    orphans = blobs.sweep(store.ids(), models.ids())
    if orphans:
        log.info("removed %d job or model directories without a record", orphans)
    collected = models.collect()
    if collected:
        log.info("removed %d unreferenced blobs", collected)
    service_ref: list[Service] = []

    def finished(job_id: str) -> None:
        service_ref[0].waiters.notify(job_id)
        service_ref[0].digests.submit(job_id)

    pool = LocalWorkerPool(settings, store, blobs, metrics, on_finished=finished, models=models)
    digests = Digester(store, blobs)
    service = Service(settings=settings, blobs=blobs, store=store, pool=pool, metrics=metrics, models=models,
                      digests=digests)
    service_ref.append(service)
    pool.start()
    digests.start()
    for job_id in queued:
        if blobs.content.exists(store.get(job_id).input_sha256):
            pool.submit(job_id)
        else:
            store.fail(job_id, problem_for(WorkerLost("the upload of this job was lost in a restart")))
    if queued:
        log.info("re-queued %d jobs after restart", len(queued))
    return service


def _open_replica(settings: Settings, metrics: Metrics) -> Service:
    """An API replica of the distributed mode. It sweeps only its own temporary files and those of dead
    processes on its host (``BlobStore(private_tmp=True)``), fails no job (a job whose worker was lost
    comes back through the broker), and re-queues nothing (``redispatch`` does, from the database)."""
    blobs = BlobStore(settings.data_dir, private_tmp=True)
    blobs.prepare()
    store = JobStore(blobs.db_path, settings.database_url)
    models = ModelStore(store, blobs)
    models.forget_pins()  # only those of ended processes of this host
    queue = CeleryQueue(settings, store, blobs, metrics, models)
    service = Service(settings=settings, blobs=blobs, store=store, pool=queue, metrics=metrics, models=models,
                      digests=Digester(store, blobs), waiters=PollingWaiters(store))
    queue.start()
    service.digests.start(catch_up=False)
    return service


def create_app(settings: Settings, runtime: Service | None = None) -> FastAPI:
    """The application. ``runtime`` (store, blobs, pool, metrics), when given, is served as it is
    instead of being started from ``settings`` (a test's fake pool, say): its owner starts and stops it."""
    metrics = runtime.metrics if runtime is not None else Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service: Service = (runtime if runtime is not None
                            else await anyio.to_thread.run_sync(_start, settings, metrics))
        service.waiters.loop = asyncio.get_running_loop()
        metrics.watch(service.store.count_by_status, service.pool.health)
        app.state.service = service
        cleaner = asyncio.create_task(_cleanup_loop(service))
        chores = [cleaner]
        if isinstance(service.pool, CeleryQueue):
            chores.append(asyncio.create_task(_redispatch_loop(service, service.pool)))
        log.info("layerfreeze ready", extra={"data_dir": str(service.blobs.root),
                                              "workers": settings.workers})
        try:
            yield
        finally:
            for chore in chores:
                chore.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await chore
            if runtime is None:
                await anyio.to_thread.run_sync(service.pool.stop)
                await anyio.to_thread.run_sync(service.digests.stop)
                service.store.close()
                data_dir_lock.release(service.blobs.root)

    app = FastAPI(
        title="layerfreeze", version=__version__, lifespan=lifespan,
        description="Freeze PyTorch checkpoints by rule, without ever executing them.",
    )
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(models.router)
    app.include_router(tus.router)
    app.include_router(web.router)
    app.add_exception_handler(LayerfreezeError, _on_layerfreeze_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_middleware(RequestIdMiddleware, metrics=metrics)
    return app


__all__ = ["create_app"]
