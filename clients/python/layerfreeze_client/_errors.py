"""Errors raised by the layerfreeze client. Server answers become exceptions carrying the problem fields.

    ClientError
    ├── TransportError        the service could not be reached (after the retries)
    ├── IntegrityError        a download does not match its sha256 / ETag
    ├── WaitTimeout           a job did not finish within the time given
    ├── ResponseFormatError   an answer does not have the shape this client knows (another version?)
    └── APIError              the service answered with an RFC 9457 problem (status, title, detail, ...)
        ├── RejectedError         4xx: the request or the upload was refused
        │   ├── AuthError             401 / 403
        │   ├── NotFoundError         404
        │   ├── ConflictError         409 (e.g. the report of a job still running)
        │   ├── PayloadTooLargeError  413
        │   ├── InvalidInputError     422 (spec errors carry ``errors`` with JSON pointers)
        │   └── RateLimitedError      429
        └── ServiceError          5xx: the service failed (503: not ready)

``JobFailedError`` (an ``APIError``) is raised when a job ends in ``failed``; it also derives from
``RejectedError`` or ``ServiceError`` according to the problem's status (see ``error_for_problem``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "APIError",
    "AuthError",
    "ClientError",
    "ConflictError",
    "IntegrityError",
    "InvalidInputError",
    "JobFailedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProblemIssue",
    "RateLimitedError",
    "RejectedError",
    "ResponseFormatError",
    "ServiceError",
    "TransportError",
    "WaitTimeout",
]


class ClientError(Exception):
    """Root of every error the client raises on purpose."""


class TransportError(ClientError):
    """The service could not be reached, or the connection broke, and retrying did not help."""


class IntegrityError(ClientError):
    """Downloaded bytes differ from what the service promised (sha256 in the report, ETag)."""

    def __init__(self, detail: str, *, expected: str | None = None, actual: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.expected = expected
        self.actual = actual


class ResponseFormatError(ClientError, ValueError):
    """The service's JSON lacks a field this client needs or has one of another type; the message names
    it by JSON pointer. The client and the service are most likely of different versions."""


class WaitTimeout(ClientError):
    """The job was still queued or running when the wait ran out."""

    def __init__(self, detail: str, *, job: Any = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.job = job


@dataclass(frozen=True, slots=True)
class ProblemIssue:
    """One entry of a problem's ``errors`` list: where (JSON pointer), what, and near names."""

    pointer: str
    message: str
    suggestions: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_json(cls, data: Any) -> ProblemIssue:
        if not isinstance(data, dict):
            return cls(pointer="", message=str(data))
        sugg = data.get("suggestions") or ()
        return cls(
            pointer=str(data.get("pointer", "")),
            message=str(data.get("message", data.get("detail", ""))),
            suggestions=tuple(str(s) for s in sugg) if isinstance(sugg, list | tuple) else (),
        )


class APIError(ClientError):
    """The service answered with a problem: every RFC 9457 field is an attribute; ``body`` has them all."""

    def __init__(
        self,
        detail: str,
        *,
        status: int,
        title: str = "",
        type: str = "about:blank",
        instance: str | None = None,
        errors: tuple[ProblemIssue, ...] = (),
        body: dict[str, Any] | None = None,
        job: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.title = title
        self.type = type
        self.instance = instance
        self.errors = errors
        self.body = body if body is not None else {}
        self.job = job
        self.retry_after = retry_after

    def __str__(self) -> str:
        head = f"{self.status} {self.title}".strip() if self.title else str(self.status)
        lines = [f"{head}: {self.detail}" if self.detail else head]
        for issue in self.errors:
            line = f"  {issue.pointer or '/'}: {issue.message}"
            if issue.suggestions:
                line += f" (did you mean: {', '.join(issue.suggestions)}?)"
            lines.append(line)
        return "\n".join(lines)


class RejectedError(APIError):
    """A 4xx answer: the request or the upload itself was refused; retrying the same thing will not help."""


class AuthError(RejectedError):
    pass


class NotFoundError(RejectedError):
    pass


class ConflictError(RejectedError):
    pass


class PayloadTooLargeError(RejectedError):
    pass


class InvalidInputError(RejectedError):
    """422: the spec or the checkpoint is invalid; ``errors`` locates spec problems by JSON pointer."""


class RateLimitedError(RejectedError):
    pass


class ServiceError(APIError):
    """A 5xx answer (or a job that failed for a reason of the service's own)."""


class JobFailedError(APIError):
    """The job ended ``failed``; ``job`` holds the job and the problem fields its error."""


_BY_STATUS: dict[int, type[APIError]] = {
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: InvalidInputError,
    429: RateLimitedError,
}

_JOB_FAILED_CLASSES: dict[type[APIError], type[APIError]] = {}


def error_class(status: int, *, job_failed: bool = False) -> type[APIError]:
    """The exception class for an answer's status (and for a failed job, a JobFailedError variant)."""
    if 400 <= status < 500:
        base: type[APIError] = _BY_STATUS.get(status, RejectedError)
    elif status >= 500:
        base = ServiceError
    else:
        base = APIError
    if not job_failed:
        return base
    cls = _JOB_FAILED_CLASSES.get(base)
    if cls is None:
        cls = type(f"JobFailed{base.__name__}", (JobFailedError, base), {"__module__": __name__})
        _JOB_FAILED_CLASSES[base] = cls
    return cls


def error_for_problem(
    problem: dict[str, Any], *, status: int | None = None, job: Any = None, job_failed: bool = False,
    retry_after: float | None = None,
) -> APIError:
    """Build the exception for a problem+json body (``status`` overrides a missing or odd body field)."""
    raw_status = problem.get("status")
    code = status if status is not None else (raw_status if isinstance(raw_status, int) else 500)
    if job_failed and isinstance(raw_status, int):
        code = raw_status
    issues = problem.get("errors")
    errors = tuple(ProblemIssue.from_json(i) for i in issues) if isinstance(issues, list) else ()
    title = str(problem.get("title") or "")
    detail = str(problem.get("detail") or title or f"HTTP {code}")
    cls = error_class(code, job_failed=job_failed)
    return cls(
        detail,
        status=code,
        title=title,
        type=str(problem.get("type") or "about:blank"),
        instance=problem.get("instance"),
        errors=errors,
        body=dict(problem),
        job=job,
        retry_after=retry_after,
    )
