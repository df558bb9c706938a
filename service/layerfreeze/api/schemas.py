"""Public JSON shapes of the HTTP API."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel

from layerfreeze.storage.jobs import JobRecord


class FileInfo(BaseModel):
    filename: str
    bytes: int
    sha256: str


class JobLinks(BaseModel):
    """Only the links that answer for the job's status: a report once it succeeded, an artifact once it
    succeeded and was not a dry run; null otherwise (a queued, running or failed job has only ``self``)."""

    self: str
    report: str | None
    artifact: str | None


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
    if job.status == "succeeded" and job.output_sha256 and job.output_bytes is not None:
        output = FileInfo(filename=job.output_filename or "", bytes=job.output_bytes,
                          sha256=job.output_sha256)
    return JobPublic(
        id=job.id, status=job.status,  # type: ignore[arg-type]
        created_at=rfc3339(job.created_at) or "", started_at=rfc3339(job.started_at),
        finished_at=rfc3339(job.finished_at),
        input=FileInfo(filename=job.input_filename, bytes=job.input_bytes, sha256=job.input_sha256),
        output=output, dry_run=job.dry_run, error=job.error,
        links=JobLinks(self=base, report=f"{base}/report" if done else None,
                       artifact=f"{base}/artifact" if done and not job.dry_run else None),
    )
