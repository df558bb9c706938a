"""Errors -> RFC 9457 problem objects, resolved by walking the exception's MRO.

One table maps error classes to (status, type, title); a subclass inherits its parent's entry unless it
has its own. This module imports no web framework so the workers can build the problem of a failed job.
"""

from __future__ import annotations

import errno
from typing import Any

from layerfreeze import errors as e
from layerfreeze.storage.jobs import StoreError


class UploadTooLarge(e.LimitExceeded):
    """The request body is over ``max_upload_bytes`` (or a form field over its own cap)."""


class BadRequest(e.LayerfreezeError):
    """The request itself is malformed (not the model file): bad multipart, missing field."""


class UnsupportedMediaType(e.LayerfreezeError):
    pass


class Unauthorized(e.LayerfreezeError):
    pass


class RetryLater(e.LayerfreezeError):
    """A passing condition: the answer carries ``Retry-After``."""

    default_retry_after = 5

    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        retry_after = self.default_retry_after if retry_after is None else retry_after
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


class QueueFull(RetryLater):
    pass


class NotReady(RetryLater):
    pass


class RangeNotSatisfiable(e.LayerfreezeError):
    def __init__(self, detail: str, *, size: int) -> None:
        super().__init__(detail, size=size)
        self.size = size


class StorageFull(RetryLater):
    """The data directory's file system is full: retry once space has been freed."""

    default_retry_after = 60


def storage_error(exc: OSError) -> e.LayerfreezeError | None:
    """Our error for an OSError that is the disk's fault, or None."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull("the service's storage is full; retry later")
    return None


class InputChanged(e.LayerfreezeError):
    """The stored upload no longer hashes to what arrived (the disk corrupted it, or a crash tore it)."""


class JobTimeLimit(e.LimitExceeded):
    """The job ran past ``job_timeout_s``; its worker was killed."""


class JobMemoryLimit(e.LimitExceeded):
    """The job needed more than ``worker_memory_mb``."""


class IdempotencyConflict(RetryLater):
    """The first request with this Idempotency-Key has not answered yet."""

    default_retry_after = 1


class IdempotencyMismatch(e.LayerfreezeError):
    """The Idempotency-Key was already used with another payload."""


class PreconditionFailed(BadRequest):
    """A tus request without the protocol version this server speaks."""


class UploadConflict(e.JobConflict):
    """A resumable upload is not where the request assumes (offset, still receiving, incomplete)."""


class WorkerLost(e.JobError):
    """The worker process died under the job (killed by a signal, crashed) or the service restarted."""


# class -> (HTTP status, problem type slug, title)
PROBLEMS: dict[type[BaseException], tuple[int, str, str]] = {
    e.LayerfreezeError: (400, "bad-request", "Bad request"),
    e.SpecError: (422, "invalid-spec", "Invalid freeze spec"),
    e.FormatError: (422, "unreadable-checkpoint", "Unreadable checkpoint"),
    e.UnsafePickleError: (422, "unsafe-pickle", "Checkpoint references a forbidden global"),
    e.PickleFormatError: (422, "malformed-pickle", "Malformed pickle stream"),
    e.ArchiveError: (422, "malformed-archive", "Malformed or hostile archive"),
    e.SafetensorsFormatError: (422, "malformed-safetensors", "Malformed safetensors file"),
    e.LimitExceeded: (422, "limit-exceeded", "A read limit was exceeded"),
    e.JobError: (409, "job-conflict", "Job conflict"),
    e.JobNotFound: (404, "not-found", "Not found"),
    e.JobConflict: (409, "job-conflict", "Job conflict"),
    UploadTooLarge: (413, "upload-too-large", "Upload too large"),
    BadRequest: (400, "bad-request", "Bad request"),
    UnsupportedMediaType: (415, "unsupported-media-type", "Unsupported media type"),
    Unauthorized: (401, "unauthorized", "Unauthorized"),
    QueueFull: (429, "queue-full", "Too many queued jobs"),
    NotReady: (503, "not-ready", "Service not ready"),
    RangeNotSatisfiable: (416, "range-not-satisfiable", "Range not satisfiable"),
    JobTimeLimit: (422, "job-time-limit", "Job time limit exceeded"),
    JobMemoryLimit: (422, "job-memory-limit", "Job memory limit exceeded"),
    WorkerLost: (500, "worker-lost", "The job's worker was lost"),
    StorageFull: (507, "storage-full", "Insufficient storage"),
    InputChanged: (500, "input-changed", "The stored upload was damaged"),
    StoreError: (503, "storage-unavailable", "Job database unavailable"),
    PreconditionFailed: (412, "precondition-failed", "Precondition failed"),
    UploadConflict: (409, "upload-conflict", "Upload not in that state"),
    IdempotencyConflict: (409, "idempotency-key-in-use", "A request with this key is in progress"),
    IdempotencyMismatch: (422, "idempotency-key-reused", "Idempotency-Key reused with another payload"),
}

INTERNAL = (500, "internal-error", "Internal server error")


def problem_type(slug: str) -> str:
    return f"/problems/{slug}"


def lookup(exc: BaseException) -> tuple[int, str, str]:
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            return PROBLEMS[cls]
    return INTERNAL


def problem_for(exc: BaseException, instance: str | None = None) -> dict[str, Any]:
    """The problem object of an error. Unknown exceptions become a bare 500 that discloses nothing."""
    status, slug, title = lookup(exc)
    if not isinstance(exc, e.LayerfreezeError):
        return {"type": problem_type(slug), "title": title, "status": status,
                "detail": "An internal error occurred; it has been logged.", "instance": instance}
    problem: dict[str, Any] = {"type": problem_type(slug), "title": title, "status": status,
                               "detail": exc.detail, "instance": instance}
    for key, value in exc.context.items():
        if value is not None and key not in problem and _jsonable(value):
            problem[key] = value
    if isinstance(exc, e.SpecError):
        problem["errors"] = [
            {"pointer": i.pointer, "message": i.message, "suggestions": list(i.suggestions)}
            for i in exc.issues
        ]
    return problem


def problem(status: int, title: str, detail: str, instance: str | None = None,
            slug: str | None = None, **extra: Any) -> dict[str, Any]:
    body = {"type": problem_type(slug) if slug else "about:blank", "title": title, "status": status,
            "detail": detail, "instance": instance}
    body.update(extra)
    return body


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, list, tuple, dict))


__all__ = ["INTERNAL", "PROBLEMS", "lookup", "problem", "problem_for", "problem_type"]
