"""Typed views of the service's JSON: jobs and the parameter-state report.

Each type declares the shape the service sends (``SHAPE``: key -> type, the service's own schema; a test
checks it against the service's pydantic models and OpenAPI document) and ``from_json`` reads exactly that:
a missing key or a value of another type raises ``ResponseFormatError`` naming its JSON pointer, instead of
being guessed around. Keys the service adds later are ignored, and the whole object stays in ``raw``.

Type notation in ``SHAPE``: ``str``, ``int``, ``float``, ``bool``, ``dict`` (any object), a model class,
``[T]`` (a list of T) and ``(T, None)`` (T or null). Keys in ``OPTIONAL`` may be absent (their default).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ._errors import ResponseFormatError

__all__ = [
    "BufferInfo",
    "FileInfo",
    "FreezeResult",
    "Job",
    "JobLinks",
    "JobPage",
    "ModelFile",
    "ModelFiles",
    "ModuleState",
    "ParameterState",
    "Report",
    "ReportWarning",
    "RuleStats",
    "Summary",
]

FINISHED = frozenset({"succeeded", "failed"})
_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "an object"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object" if isinstance(value, Mapping) else "a value"


def _convert(spec: Any, value: Any, where: str) -> Any:
    """``value`` checked against ``spec`` (the SHAPE notation) and converted (lists to tuples, objects of a
    model to that model)."""
    if isinstance(spec, tuple):  # (T, None): nullable
        return None if value is None else _convert(spec[0], value, where)
    if isinstance(spec, list):
        if not isinstance(value, list):
            raise ResponseFormatError(f"{where}: expected a list, got {_kind(value)}")
        return tuple(_convert(spec[0], item, f"{where}/{i}") for i, item in enumerate(value))
    if isinstance(spec, type) and hasattr(spec, "SHAPE"):
        return spec._read(value, where)
    if spec is dict:
        ok = isinstance(value, Mapping)
    elif spec in (int, float):  # JSON numbers; true and false are not numbers here
        ok = isinstance(value, int if spec is int else int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, spec)
    if not ok:
        raise ResponseFormatError(f"{where}: expected {_NAMES.get(spec, spec)}, got {_kind(value)}")
    return dict(value) if spec is dict else float(value) if spec is float else value


def _fields(cls: Any, data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ResponseFormatError(f"{where or '/'}: expected an object, got {_kind(data)}")
    out: dict[str, Any] = {}
    for key, spec in cls.SHAPE.items():
        if key not in data:
            if key in cls.OPTIONAL:
                out[key] = cls.OPTIONAL[key]
                continue
            raise ResponseFormatError(f"{where}/{key}: missing from the service's answer")
        out[key] = _convert(spec, data[key], f"{where}/{key}")
    return out


class _Shaped:
    __slots__ = ()
    SHAPE: ClassVar[dict[str, Any]]
    OPTIONAL: ClassVar[dict[str, Any]] = {}

    @classmethod
    def from_json(cls, data: Any) -> Any:
        """Read the service's JSON for this type; ResponseFormatError when it has another shape."""
        return cls._read(data, "")

    @classmethod
    def _read(cls, data: Any, where: str) -> Any:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class FileInfo(_Shaped):
    """A file the service holds. ``sha256`` is null while the service still computes the digest of a
    large input in the background (the job's later answers carry it)."""

    filename: str
    bytes: int
    sha256: str | None

    SHAPE: ClassVar[dict[str, Any]] = {"filename": str, "bytes": int, "sha256": (str, None)}

    @classmethod
    def _read(cls, data: Any, where: str) -> FileInfo:
        return cls(**_fields(cls, data, where))


@dataclass(frozen=True, slots=True)
class ModelFile(_Shaped):
    """One file of a multi-file model: ``role`` is index, shard or other; ``changed`` by the freeze."""

    path: str
    bytes: int
    sha256: str | None
    role: str
    changed: bool

    SHAPE: ClassVar[dict[str, Any]] = {"path": str, "bytes": int, "sha256": (str, None), "role": str,
                                       "changed": bool}

    @classmethod
    def _read(cls, data: Any, where: str) -> ModelFile:
        return cls(**_fields(cls, data, where))


@dataclass(frozen=True, slots=True)
class ModelFiles(_Shaped):
    """A multi-file model's files: its index, the shard holding each tensor, and every file."""

    index: str | None
    shard_of: dict[str, str]
    files: tuple[ModelFile, ...]

    SHAPE: ClassVar[dict[str, Any]] = {"index": (str, None), "shard_of": dict, "files": [ModelFile]}

    @classmethod
    def _read(cls, data: Any, where: str) -> ModelFiles:
        return cls(**_fields(cls, data, where))

    def changed(self) -> list[str]:
        return [f.path for f in self.files if f.changed]


@dataclass(frozen=True, slots=True)
class JobLinks(_Shaped):
    """Only the links that answer for the job's status: ``report`` once it succeeded, ``artifact`` once it
    succeeded and was not a dry run; ``patch`` (the output as a delta against the input) where the service
    offers one, ``model`` when the job ran on a stored model; None otherwise."""

    self: str
    report: str | None
    artifact: str | None
    patch: str | None = None
    model: str | None = None

    SHAPE: ClassVar[dict[str, Any]] = {"self": str, "report": (str, None), "artifact": (str, None),
                                       "patch": (str, None), "model": (str, None)}
    OPTIONAL: ClassVar[dict[str, Any]] = {"patch": None, "model": None}

    @classmethod
    def _read(cls, data: Any, where: str) -> JobLinks:
        return cls(**_fields(cls, data, where))


@dataclass(frozen=True, slots=True)
class Job(_Shaped):
    id: str
    status: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    input: FileInfo
    output: FileInfo | None
    dry_run: bool
    error: dict[str, Any] | None
    links: JobLinks
    model: str | None  # the stored model's id, when the job ran on one
    raw: dict[str, Any] = field(repr=False, compare=False)

    SHAPE: ClassVar[dict[str, Any]] = {
        "id": str, "status": str, "created_at": str, "started_at": (str, None), "finished_at": (str, None),
        "input": FileInfo, "output": (FileInfo, None), "dry_run": bool, "error": (dict, None),
        "links": JobLinks, "model": (str, None),
    }
    OPTIONAL: ClassVar[dict[str, Any]] = {"output": None, "model": None}

    @classmethod
    def _read(cls, data: Any, where: str) -> Job:
        return cls(**_fields(cls, data, where), raw=dict(data))

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


@dataclass(frozen=True, slots=True)
class JobPage(_Shaped):
    items: tuple[Job, ...]
    next: str | None

    SHAPE: ClassVar[dict[str, Any]] = {"items": [Job], "next": (str, None)}

    @classmethod
    def _read(cls, data: Any, where: str) -> JobPage:
        return cls(**_fields(cls, data, where))


@dataclass(frozen=True, slots=True)
class Summary(_Shaped):
    parameters: int
    trainable: int
    frozen: int
    numel_total: int
    numel_trainable: int
    numel_frozen: int
    trainable_fraction: float
    bytes_total: int
    bytes_trainable: int
    bytes_frozen: int
    buffers: int
    bytes_buffers: int
    changed: int
    training_memory_saved_bytes: int
    training_memory_assumption: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    SHAPE: ClassVar[dict[str, Any]] = {
        "parameters": int, "trainable": int, "frozen": int, "numel_total": int, "numel_trainable": int,
        "numel_frozen": int, "trainable_fraction": float, "bytes_total": int, "bytes_trainable": int,
        "bytes_frozen": int, "buffers": int, "bytes_buffers": int, "changed": int,
        "training_memory_saved_bytes": int, "training_memory_assumption": str,
    }
    OPTIONAL: ClassVar[dict[str, Any]] = {"training_memory_assumption": ""}

    @classmethod
    def _read(cls, data: Any, where: str) -> Summary:
        return cls(**_fields(cls, data, where), raw=dict(data))


@dataclass(frozen=True, slots=True)
class RuleStats(_Shaped):
    """What one rule selected (parameters and elements) and how many of those it decided."""

    index: int
    action: str
    selectors: tuple[str, ...]
    selected: int
    selected_numel: int
    decided: int
    decided_numel: int
    children_counted: tuple[str, ...] | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    SHAPE: ClassVar[dict[str, Any]] = {
        "index": int, "action": str, "selectors": [str], "selected": int, "selected_numel": int,
        "decided": int, "decided_numel": int, "children_counted": ([str], None),
    }
    OPTIONAL: ClassVar[dict[str, Any]] = {"children_counted": None}

    @classmethod
    def _read(cls, data: Any, where: str) -> RuleStats:
        return cls(**_fields(cls, data, where), raw=dict(data))


@dataclass(frozen=True, slots=True)
class ParameterState(_Shaped):
    name: str
    module: str
    module_type: str | None
    shape: tuple[int, ...]
    dtype: str
    numel: int
    requires_grad: bool
    was: bool
    rule: int | None
    aliases: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    SHAPE: ClassVar[dict[str, Any]] = {
        "name": str, "module": str, "module_type": (str, None), "shape": [int], "dtype": str, "numel": int,
        "requires_grad": bool, "was": bool, "rule": (int, None), "aliases": [str],
    }

    @classmethod
    def _read(cls, data: Any, where: str) -> ParameterState:
        return cls(**_fields(cls, data, where), raw=dict(data))


@dataclass(frozen=True, slots=True)
class BufferInfo(_Shaped):
    name: str
    module: str
    shape: tuple[int, ...]
    dtype: str
    numel: int

    SHAPE: ClassVar[dict[str, Any]] = {"name": str, "module": str, "shape": [int], "dtype": str, "numel": int}

    @classmethod
    def _read(cls, data: Any, where: str) -> BufferInfo:
        return cls(**_fields(cls, data, where))


@dataclass(frozen=True, slots=True)
class ModuleState(_Shaped):
    """One module of the tree, in the service's module order; ``depth`` 0 is the root, ``name`` its path."""

    name: str
    type: str | None
    depth: int
    parameters: int
    trainable: int
    frozen: int
    numel: int
    numel_trainable: int
    numel_frozen: int
    state: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    SHAPE: ClassVar[dict[str, Any]] = {
        "path": str, "type": (str, None), "depth": int, "parameters": int, "trainable": int, "frozen": int,
        "numel": int, "numel_trainable": int, "numel_frozen": int, "state": (str, None),
    }

    @classmethod
    def _read(cls, data: Any, where: str) -> ModuleState:
        values = _fields(cls, data, where)
        values["name"] = values.pop("path")
        return cls(**values, raw=dict(data))


@dataclass(frozen=True, slots=True)
class ReportWarning(_Shaped):
    """``pointer`` and ``suggestions`` locate a spec value that matched nothing and the nearest names."""

    code: str
    message: str
    names: tuple[str, ...]
    rule: int | None
    pointer: str | None
    suggestions: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    SHAPE: ClassVar[dict[str, Any]] = {"code": str, "message": str, "names": [str], "rule": (int, None),
                                       "pointer": (str, None), "suggestions": [str]}
    OPTIONAL: ClassVar[dict[str, Any]] = {"names": (), "rule": None, "pointer": None, "suggestions": ()}

    @classmethod
    def _read(cls, data: Any, where: str) -> ReportWarning:
        return cls(**_fields(cls, data, where), raw=dict(data))


@dataclass(frozen=True, slots=True)
class Report(_Shaped):
    """The parameter-state report (CONTRACT section 2)."""

    report_version: int
    generator: str
    format: str
    input: FileInfo
    output: FileInfo | None
    dry_run: bool
    spec: dict[str, Any]
    spec_sha256: str
    types_known: bool
    children_exact: bool
    prefix: str | None
    summary: Summary
    rules: tuple[RuleStats, ...]
    parameters: tuple[ParameterState, ...]
    buffers: tuple[BufferInfo, ...]
    modules: tuple[ModuleState, ...]
    warnings: tuple[ReportWarning, ...]
    files: ModelFiles | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    SHAPE: ClassVar[dict[str, Any]] = {
        "report_version": int, "generator": str, "format": str, "input": FileInfo,
        "output": (FileInfo, None), "dry_run": bool, "spec": dict, "spec_sha256": str, "types_known": bool,
        "children_exact": bool, "prefix": (str, None), "summary": Summary, "rules": [RuleStats],
        "parameters": [ParameterState], "buffers": [BufferInfo], "modules": [ModuleState],
        "warnings": [ReportWarning], "files": (ModelFiles, None),
    }
    OPTIONAL: ClassVar[dict[str, Any]] = {"report_version": 1, "generator": "", "files": None}

    @classmethod
    def _read(cls, data: Any, where: str) -> Report:
        return cls(**_fields(cls, data, where), raw=dict(data))

    def frozen(self) -> list[str]:
        return [p.name for p in self.parameters if not p.requires_grad]

    def trainable(self) -> list[str]:
        return [p.name for p in self.parameters if p.requires_grad]

    def states(self) -> dict[str, bool]:
        """``{name: requires_grad}``: what ``apply`` accepts as a mapping."""
        return {p.name: p.requires_grad for p in self.parameters}

    def __iter__(self) -> Iterator[ParameterState]:
        return iter(self.parameters)


@dataclass(frozen=True, slots=True)
class FreezeResult:
    """What ``Client.freeze`` returns: the finished job, its report and where the checkpoint was written."""

    job: Job
    report: Report
    output: Path | None
