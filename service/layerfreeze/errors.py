"""Errors raised by layerfreeze. Every failure a user can cause is one of these.

    LayerfreezeError
    ├── SpecError             the freeze spec is invalid or selects nothing (strict)
    ├── FormatError           the upload is not a checkpoint we can read
    │   ├── UnsafePickleError     the pickle references or calls something a checkpoint never needs
    │   ├── PickleFormatError     the pickle stream is malformed
    │   ├── ArchiveError          the zip container is malformed or hostile
    │   ├── AmbiguousCheckpoint   torch could read the file differently than we do (refused, not guessed)
    │   │   └── AmbiguousArchive      ... because of the zip container (also an ArchiveError)
    │   └── SafetensorsFormatError
    ├── LimitExceeded         a configured limit (size, entries, depth, ...) was hit
    └── JobError
        ├── JobNotFound
        └── JobConflict       the job is not in a state that allows the request

Errors carry structured fields; mapping to HTTP statuses or exit codes happens only at the edges.
"""

from __future__ import annotations

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


class JobError(LayerfreezeError):
    pass


class JobNotFound(JobError):
    pass


class JobConflict(JobError):
    pass
