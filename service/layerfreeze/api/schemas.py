"""Public JSON shapes of the HTTP API."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from layerfreeze.storage.jobs import JobRecord
from layerfreeze.storage.models import ModelRecord


class FileInfo(BaseModel):
    filename: str
    bytes: int
    sha256: str | None  # a stored-model job's output: null until its digest is computed (seconds)


class JobLinks(BaseModel):
    """Only the links that answer for the job's status: a report once it succeeded, an artifact once it
    succeeded and was not a dry run; null otherwise (a queued, running or failed job has only ``self``)."""

    self: str
    report: str | None
    artifact: str | None
    patch: str | None = None
    model: str | None = None


class JobPublic(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed"]
    created_at: str
    started_at: str | None
    finished_at: str | None
    input: FileInfo
    output: FileInfo | None = None
    dry_run: bool
    error: dict[str, Any] | None
    links: JobLinks
    model: str | None = None  # the stored model the job froze (it may have been deleted since)


class JobsPublic(BaseModel):
    items: list[JobPublic]
    next: str | None


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def job_public(job: JobRecord) -> JobPublic:
    base = f"/v1/jobs/{job.id}"
    done = job.status == "succeeded"
    output = None
    if job.status == "succeeded" and not job.dry_run and job.output_bytes is not None:
        output = FileInfo(filename=job.output_filename or "", bytes=job.output_bytes,
                          sha256=job.output_sha256)
    return JobPublic(
        id=job.id, status=job.status,
        created_at=rfc3339(job.created_at) or "", started_at=rfc3339(job.started_at),
        finished_at=rfc3339(job.finished_at),
        input=FileInfo(filename=job.input_filename, bytes=job.input_bytes, sha256=job.input_sha256),
        output=output, dry_run=job.dry_run, error=job.error, model=job.model_id,
        links=JobLinks(self=base, report=f"{base}/report" if done else None,
                       artifact=f"{base}/artifact" if done and not job.dry_run else None,
                       patch=f"{base}/patch" if done and not job.dry_run else None,
                       # a job on an upload makes its model only once the upload has been read
                       model=f"/v1/models/{job.model_id}" if job.model_id and (done or job.model_id != job.id)
                       else None),
    )


class ModelFilePublic(BaseModel):
    path: str
    bytes: int
    sha256: str


class ModelLinks(BaseModel):
    self: str
    report: str
    preview: str


class ModelPublic(BaseModel):
    id: str
    sha256: str
    bytes: int
    format: str
    files: list[ModelFilePublic]
    created_at: str
    summary: dict[str, Any]
    links: ModelLinks


class ModelsPublic(BaseModel):
    items: list[ModelPublic]
    next: str | None


def model_public(model: ModelRecord) -> ModelPublic:
    base = f"/v1/models/{model.id}"
    return ModelPublic(
        id=model.id, sha256=model.sha256, bytes=model.bytes, format=model.format,
        files=[ModelFilePublic(path=f.path, bytes=f.bytes, sha256=f.sha256) for f in model.files],
        created_at=rfc3339(model.created_at) or "", summary=model.summary,
        links=ModelLinks(self=base, report=f"{base}/report", preview=f"{base}/preview"),
    )


class StoredJobCreate(BaseModel):
    """``POST /v1/jobs`` with a JSON body: freeze a stored model."""

    model_config = ConfigDict(extra="forbid")

    model: str
    spec: dict[str, Any] | str = Field(default_factory=dict)
    dry_run: bool = False
