"""Liveness, readiness and metrics: unauthenticated, cheap, never touching a job."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from layerfreeze.api.deps import ServiceDep
from layerfreeze.problems import problem

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers (liveness). Async: answered on the event loop, with no thread hand-off that
    would queue behind busy threads."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready"}})
def readyz(service: ServiceDep) -> Response:
    """Workers alive, job database writable, data directory writable."""
    health = service.pool.health()
    checks = {
        "workers": health.alive == health.workers,
        "database": service.store.writable(),
        "data_dir": service.blobs.writable(),
    }
    pool = {"workers": health.workers, "alive": health.alive, "busy": health.busy,
            "queued": health.queued, "restarts": health.restarts}
    if all(checks.values()):
        return JSONResponse({"status": "ready", "checks": checks, "pool": pool})
    failing = ", ".join(k for k, ok in checks.items() if not ok)
    body = problem(503, "Service not ready", f"failing checks: {failing}", "/readyz", slug="not-ready",
                   checks=checks, pool=pool)
    return JSONResponse(body, status_code=503, media_type="application/problem+json",
                        headers={"retry-after": "5"})


@router.get("/metrics", response_class=Response)
def metrics(service: ServiceDep) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
