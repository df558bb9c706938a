"""Errors -> RFC 9457 problem objects, resolved by walking the exception's MRO.

One table maps error classes to (status, type, title); a subclass inherits its parent's entry unless it
has its own. Plain data and functions with no web framework, so the workers build the problem of a failed job
with the same table the HTTP layer answers with.
"""

from __future__ import annotations

from typing import Any

from layerfreeze import errors as e

# class -> (HTTP status, problem type slug, title)
PROBLEMS: dict[type[BaseException], tuple[int, str, str]] = {
    e.LayerfreezeError: (400, "bad-request", "Bad request"),
    e.SpecError: (422, "invalid-spec", "Invalid freeze spec"),
    e.FormatError: (422, "unreadable-checkpoint", "Unreadable checkpoint"),
    e.UnsafePickleError: (422, "unsafe-pickle", "Checkpoint references a forbidden global"),
    e.PickleFormatError: (422, "malformed-pickle", "Malformed pickle stream"),
    e.ArchiveError: (422, "malformed-archive", "Malformed or hostile archive"),
    e.SafetensorsFormatError: (422, "malformed-safetensors", "Malformed safetensors file"),
    e.AmbiguousCheckpoint: (422, "ambiguous-checkpoint", "torch could read this checkpoint differently"),
    e.LimitExceeded: (422, "limit-exceeded", "A read limit was exceeded"),
    e.UploadTooLarge: (413, "upload-too-large", "Upload too large"),
    e.JobTimeLimit: (422, "job-time-limit", "Job time limit exceeded"),
    e.JobMemoryLimit: (422, "job-memory-limit", "Job memory limit exceeded"),
    e.JobError: (409, "job-conflict", "Job conflict"),
    e.JobNotFound: (404, "not-found", "Not found"),
    e.JobConflict: (409, "job-conflict", "Job conflict"),
    e.WorkerLost: (500, "worker-lost", "The job's worker was lost"),
    e.BadRequest: (400, "bad-request", "Bad request"),
    e.InvalidForm: (422, "invalid-form", "Invalid form field"),
    e.UnsupportedMediaType: (415, "unsupported-media-type", "Unsupported media type"),
    e.Unauthorized: (401, "unauthorized", "Unauthorized"),
    e.RangeNotSatisfiable: (416, "range-not-satisfiable", "Range not satisfiable"),
    e.InputChanged: (500, "input-changed", "The stored upload was damaged"),
    e.StoreError: (503, "storage-unavailable", "Job database unavailable"),
    e.QueueFull: (429, "queue-full", "Too many queued jobs"),
    e.TooManyUploads: (429, "too-many-uploads", "Too many uploads at once"),
    e.NotReady: (503, "not-ready", "Service not ready"),
    e.StorageFull: (507, "storage-full", "Insufficient storage"),
    e.PreconditionFailed: (412, "precondition-failed", "Precondition failed"),
    e.UploadConflict: (409, "upload-conflict", "Upload not in that state"),
    e.IdempotencyConflict: (409, "idempotency-key-in-use", "A request with this key is in progress"),
    e.IdempotencyMismatch: (422, "idempotency-key-reused", "Idempotency-Key reused with another payload"),
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
