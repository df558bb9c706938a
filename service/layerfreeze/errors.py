"""Every error layerfreeze raises on purpose, in one tree. Every failure a user can cause is one of these.

    LayerfreezeError
    ├── SpecError                 the freeze spec is invalid or selects nothing (strict)
    ├── FormatError               the upload is not a checkpoint we can read
    │   ├── UnsafePickleError         the pickle references or calls something a checkpoint never needs
    │   ├── PickleFormatError         the pickle stream is malformed
    │   ├── ArchiveError              the zip container is malformed or hostile
    │   ├── AmbiguousCheckpoint       torch could read the file differently than we do (refused, not guessed)
    │   │   └── AmbiguousArchive          ... because of the zip container (also an ArchiveError)
    │   └── SafetensorsFormatError
    ├── LimitExceeded             a configured limit (size, entries, depth, ...) was hit
    │   ├── UploadTooLarge            the request body (or a form field) is over its cap
    │   ├── JobTimeLimit              the job ran past ``job_timeout_s``; its worker was killed
    │   └── JobMemoryLimit            the job needed more than ``worker_memory_mb``
    ├── JobError
    │   ├── JobNotFound
    │   │   └── ModelNotFound             no such model (or another tenant's)
    │   │       └── UploadNotFound            no such resumable upload
    │   ├── JobConflict               the job is not in a state that allows the request
    │   │   └── UploadConflict            a resumable upload is not at the offset or state assumed
    │   └── WorkerLost                the job's worker died under it, or the service restarted
    ├── BadRequest                the request itself is malformed (not the model file)
    │   ├── InvalidForm               a form field or query parameter we do not take, or a missing spec
    │   └── PreconditionFailed        a tus request without the protocol version this server speaks
    ├── UnsupportedMediaType
    ├── Unauthorized
    ├── RangeNotSatisfiable
    ├── InputChanged              a stored upload no longer hashes to what arrived
    ├── IdempotencyMismatch       an Idempotency-Key reused with another payload
    ├── StoreError                the job database failed (disk full, corruption, ...)
    ├── RetryLater                a passing condition; the answer carries ``Retry-After``
    │   ├── QueueFull
    │   ├── NotReady
    │   ├── TooManyUploads            the tenant has ``max_uploads_per_tenant`` uploads under way
    │   ├── IdempotencyConflict       the first request with this Idempotency-Key has not answered yet
    │   └── StorageFull               the data directory's file system is full
    └── StartupError              the service cannot start (nothing was changed)
        ├── InvalidSettings           a setting has a value the service cannot use
        ├── DataDirInUse              another service holds the data directory
        └── PortInUse                 the address to listen on is taken

Errors carry structured fields; mapping them to HTTP answers is data in :mod:`layerfreeze.problems`, to exit
codes in :mod:`layerfreeze.cli.exit_codes`. This module imports nothing of layerfreeze.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any


class LayerfreezeError(Exception):
    """Root of every error layerfreeze raises on purpose."""

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context


@dataclass(frozen=True, slots=True)
class SpecIssue:
    """One problem in a freeze spec, located by an RFC 6901 JSON pointer."""

    pointer: str
    message: str
    suggestions: tuple[str, ...] = field(default_factory=tuple)


class SpecError(LayerfreezeError):
    def __init__(self, detail: str, issues: list[SpecIssue] | tuple[SpecIssue, ...] = ()) -> None:
        super().__init__(detail)
        self.issues = tuple(issues)


class FormatError(LayerfreezeError):
    """The file cannot be read as a supported checkpoint format."""


class UnsafePickleError(FormatError):
    """The pickle would import or call something outside the checkpoint allowlist."""

    def __init__(self, detail: str, *, global_name: str | None = None, offset: int | None = None) -> None:
        super().__init__(detail, global_name=global_name, offset=offset)
        self.global_name = global_name
        self.offset = offset


class PickleFormatError(FormatError):
    def __init__(self, detail: str, *, offset: int | None = None) -> None:
        super().__init__(detail, offset=offset)
        self.offset = offset


class ArchiveError(FormatError):
    pass


class SafetensorsFormatError(FormatError):
    pass


class AmbiguousCheckpoint(FormatError):
    """A file that torch's own loader might read differently from our reader (two zip members whose names
    differ only in case, a pickled ``state`` that sets tensor attributes, a storage named with two dtypes,
    TorchScript code not in the form torch writes). ``ambiguity`` is a short stable name of the kind."""

    def __init__(self, detail: str, *, ambiguity: str, offset: int | None = None) -> None:
        super().__init__(detail, ambiguity=ambiguity, offset=offset)
        self.ambiguity = ambiguity
        self.offset = offset


class AmbiguousArchive(AmbiguousCheckpoint, ArchiveError):
    """A zip container torch's reader could read differently (members differing only in case, ...)."""


class LimitExceeded(LayerfreezeError):
    def __init__(
        self, detail: str, *, limit: str, value: int | None = None, maximum: int | None = None
    ) -> None:
        super().__init__(detail, limit=limit, value=value, maximum=maximum)
        self.limit = limit
        self.value = value
        self.maximum = maximum


class UploadTooLarge(LimitExceeded):
    """The request body is over ``max_upload_bytes`` (or a form field over its own cap)."""


class JobTimeLimit(LimitExceeded):
    """The job ran past ``job_timeout_s``; its worker was killed."""


class JobMemoryLimit(LimitExceeded):
    """The job needed more than ``worker_memory_mb``."""


class JobError(LayerfreezeError):
    pass


class JobNotFound(JobError):
    pass


class JobConflict(JobError):
    pass


class ModelNotFound(JobNotFound):
    """No such model, or another tenant's (its existence is not disclosed)."""


class UploadNotFound(ModelNotFound):
    pass


class UploadConflict(JobConflict):
    """A resumable upload is not where the request assumes (offset, still receiving, incomplete)."""


class WorkerLost(JobError):
    """The worker process died under the job (killed by a signal, crashed) or the service restarted."""


class BadRequest(LayerfreezeError):
    """The request itself is malformed (not the model file): bad multipart, missing field."""


class InvalidForm(BadRequest):
    """A well-formed request whose form or query says something we do not take (an unknown field, a missing
    spec, two answers to one question): refused rather than ignored, naming the fields."""


class PreconditionFailed(BadRequest):
    """A tus request without the protocol version this server speaks."""


class UnsupportedMediaType(LayerfreezeError):
    pass


class Unauthorized(LayerfreezeError):
    pass


class RangeNotSatisfiable(LayerfreezeError):
    def __init__(self, detail: str, *, size: int) -> None:
        super().__init__(detail, size=size)
        self.size = size


class InputChanged(LayerfreezeError):
    """The stored upload no longer hashes to what arrived (the disk corrupted it, or a crash tore it)."""


class IdempotencyMismatch(LayerfreezeError):
    """The Idempotency-Key was already used with another payload."""


class StoreError(LayerfreezeError):
    """The job database failed (disk full, corruption, ...): the service cannot take work right now."""


class RetryLater(LayerfreezeError):
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


class TooManyUploads(RetryLater):
    """The tenant already has ``max_uploads_per_tenant`` uploads being received."""


class IdempotencyConflict(RetryLater):
    """The first request with this Idempotency-Key has not answered yet."""

    default_retry_after = 1


class StorageFull(RetryLater):
    """The data directory's file system is full: retry once space has been freed."""

    default_retry_after = 60


class StartupError(LayerfreezeError):
    """The service cannot start (nothing was changed)."""


class InvalidSettings(StartupError):
    """A setting (environment variable or command-line option) has a value the service cannot use."""


class DataDirInUse(StartupError):
    """Another service process holds the data directory's lock."""


class PortInUse(StartupError):
    """The host and port to listen on are taken (or not ours to take)."""


def storage_error(exc: OSError) -> LayerfreezeError | None:
    """Our error for an OSError that is the disk's fault, or None."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull("the service's storage is full; retry later")
    return None
