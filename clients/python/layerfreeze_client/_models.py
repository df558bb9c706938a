"""Typed views of the service's JSON: jobs and the parameter-state report.

Every type is built with ``from_json`` from the decoded JSON, ignores fields it does not know (the service may
add some) and keeps the whole object in ``raw``, so nothing the service sends is lost.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BufferInfo",
    "FileInfo",
    "FreezeResult",
    "Job",
    "JobLinks",
    "JobPage",
    "ModuleState",
    "ParameterState",
    "Report",
    "ReportWarning",
    "RuleStats",
    "Summary",
]

FINISHED = frozenset({"succeeded", "failed"})


def _obj(data: Any) -> dict[str, Any]:
    return dict(data) if isinstance(data, Mapping) else {}


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class FileInfo:
    filename: str | None
    bytes: int
    sha256: str | None

    @classmethod
    def from_json(cls, data: Any) -> FileInfo:
        d = _obj(data)
        return cls(filename=_opt_str(d.get("filename")), bytes=_int(d.get("bytes")),
                   sha256=_opt_str(d.get("sha256")))


@dataclass(frozen=True, slots=True)
class JobLinks:
    self: str | None
    report: str | None
    artifact: str | None

    @classmethod
    def from_json(cls, data: Any) -> JobLinks:
        d = _obj(data)
        return cls(self=_opt_str(d.get("self")), report=_opt_str(d.get("report")),
                   artifact=_opt_str(d.get("artifact")))


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    status: str
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    input: FileInfo
    dry_run: bool
    error: dict[str, Any] | None
    links: JobLinks
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Job:
        d = _obj(data)
        err = d.get("error")
        return cls(
            id=str(d.get("id", "")),
            status=str(d.get("status", "")),
            created_at=_opt_str(d.get("created_at")),
            started_at=_opt_str(d.get("started_at")),
            finished_at=_opt_str(d.get("finished_at")),
            input=FileInfo.from_json(d.get("input")),
            dry_run=bool(d.get("dry_run", False)),
            error=dict(err) if isinstance(err, Mapping) else None,
            links=JobLinks.from_json(d.get("links")),
            raw=d,
        )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


@dataclass(frozen=True, slots=True)
class JobPage:
    items: tuple[Job, ...]
    next: str | None

    @classmethod
    def from_json(cls, data: Any) -> JobPage:
        d = _obj(data)
        items = d.get("items")
        return cls(items=tuple(Job.from_json(j) for j in items) if isinstance(items, list) else (),
                   next=_opt_str(d.get("next")))


@dataclass(frozen=True, slots=True)
class Summary:
    parameters: int
    trainable: int
    frozen: int
    numel_total: int
    numel_trainable: int
    numel_frozen: int
    trainable_fraction: float
    bytes_total: int | None
    bytes_trainable: int | None
    bytes_frozen: int | None
    training_memory_saved_bytes: int | None
    training_memory_assumption: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Summary:
        d = _obj(data)
        frac = d.get("trainable_fraction")
        total = _int(d.get("numel_total"))
        trainable = _int(d.get("numel_trainable"))
        if not isinstance(frac, int | float) or isinstance(frac, bool):
            frac = trainable / total if total else 0.0
        return cls(
            parameters=_int(d.get("parameters")), trainable=_int(d.get("trainable")),
            frozen=_int(d.get("frozen")), numel_total=total, numel_trainable=trainable,
            numel_frozen=_int(d.get("numel_frozen")), trainable_fraction=float(frac),
            bytes_total=_opt_int(d.get("bytes_total")), bytes_trainable=_opt_int(d.get("bytes_trainable")),
            bytes_frozen=_opt_int(d.get("bytes_frozen")),
            training_memory_saved_bytes=_opt_int(d.get("training_memory_saved_bytes")),
            training_memory_assumption=_opt_str(d.get("training_memory_assumption")), raw=d,
        )


@dataclass(frozen=True, slots=True)
class RuleStats:
    index: int
    action: str | None
    selected: int | None
    decided: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any, position: int) -> RuleStats:
        d = _obj(data)
        index = _opt_int(d.get("index"))
        action = d.get("action")
        if action is None and isinstance(d.get("rule"), Mapping):
            action = d["rule"].get("action")
        return cls(
            index=position if index is None else index,
            action=_opt_str(action),
            selected=_first_int(d, "selected", "selected_parameters", "parameters_selected"),
            decided=_first_int(d, "decided", "decided_parameters", "parameters_decided"),
            raw=d,
        )


def _first_int(d: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = d.get(key)
        if isinstance(value, Mapping):  # e.g. {"selected": {"parameters": 3, "numel": 120}}
            value = value.get("parameters", value.get("count"))
        got = _opt_int(value)
        if got is not None:
            return got
    return None


@dataclass(frozen=True, slots=True)
class ParameterState:
    name: str
    module: str | None
    module_type: str | None
    shape: tuple[int, ...]
    dtype: str | None
    numel: int
    requires_grad: bool
    was: bool | None
    rule: int | None
    aliases: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> ParameterState:
        d = _obj(data)
        shape = d.get("shape")
        was = d.get("was")
        aliases = d.get("aliases")
        return cls(
            name=str(d.get("name", "")), module=_opt_str(d.get("module")),
            module_type=_opt_str(d.get("module_type")),
            shape=tuple(int(s) for s in shape) if isinstance(shape, list) else (),
            dtype=_opt_str(d.get("dtype")), numel=_int(d.get("numel")),
            requires_grad=bool(d.get("requires_grad", False)),
            was=was if isinstance(was, bool) else None, rule=_opt_int(d.get("rule")),
            aliases=tuple(str(a) for a in aliases) if isinstance(aliases, list) else (), raw=d,
        )


@dataclass(frozen=True, slots=True)
class BufferInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str | None

    @classmethod
    def from_json(cls, data: Any) -> BufferInfo:
        d = _obj(data)
        shape = d.get("shape")
        return cls(name=str(d.get("name", "")),
                   shape=tuple(int(s) for s in shape) if isinstance(shape, list) else (),
                   dtype=_opt_str(d.get("dtype")))


@dataclass(frozen=True, slots=True)
class ModuleState:
    """One module of the tree, flattened in tree order; ``depth`` 0 is the root."""

    name: str
    type: str | None
    state: str | None
    parameters: int | None
    trainable: int | None
    frozen: int | None
    numel: int | None
    numel_trainable: int | None
    depth: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any, depth: int = 0) -> ModuleState:
        d = _obj(data)
        name = d.get("name", d.get("path", ""))
        return cls(
            name=str(name) if name is not None else "",
            type=_opt_str(d.get("type", d.get("module_type"))),
            state=_opt_str(d.get("state")),
            parameters=_first_int(d, "parameters"),
            trainable=_first_int(d, "trainable"),
            frozen=_first_int(d, "frozen"),
            numel=_first_int(d, "numel", "numel_total"),
            numel_trainable=_first_int(d, "numel_trainable"),
            depth=depth,
            raw=d,
        )


def _flatten_modules(data: Any) -> list[ModuleState]:
    """Accept the module tree as a nested object (``children``) or as a flat list."""
    out: list[ModuleState] = []

    def walk(node: Any, depth: int) -> None:
        if isinstance(node, list):
            for child in node:
                walk(child, depth)
            return
        if not isinstance(node, Mapping):
            return
        derived = depth
        name = node.get("name", node.get("path"))
        if "depth" not in node and isinstance(name, str) and name and depth == 0 and "children" not in node:
            derived = name.count(".") + 1  # flat list keyed by dotted path
        out.append(ModuleState.from_json(node, _int(node.get("depth"), derived)))
        children = node.get("children")
        if isinstance(children, list | Mapping):
            walk(list(children.values()) if isinstance(children, Mapping) else children, depth + 1)

    if isinstance(data, Mapping) and "children" not in data and "name" not in data and "path" not in data:
        data = [dict(v, name=k) if isinstance(v, Mapping) and "name" not in v else v for k, v in data.items()]
    walk(data, 0)
    return out


@dataclass(frozen=True, slots=True)
class ReportWarning:
    message: str
    code: str | None
    names: tuple[str, ...]
    rule: int | None
    raw: Any = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> ReportWarning:
        if isinstance(data, Mapping):
            msg = data.get("message", data.get("detail", ""))
            code = data.get("code", data.get("kind", data.get("type")))
            names = data.get("names")
            return cls(message=str(msg), code=_opt_str(code),
                       names=tuple(str(n) for n in names) if isinstance(names, list) else (),
                       rule=_opt_int(data.get("rule")), raw=dict(data))
        return cls(message=str(data), code=None, names=(), rule=None, raw=data)


@dataclass(frozen=True, slots=True)
class Report:
    """The parameter-state report (CONTRACT section 2)."""

    format: str | None
    input: FileInfo
    output: FileInfo | None
    dry_run: bool
    summary: Summary
    rules: tuple[RuleStats, ...]
    parameters: tuple[ParameterState, ...]
    buffers: tuple[BufferInfo, ...]
    modules: tuple[ModuleState, ...]
    warnings: tuple[ReportWarning, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Report:
        d = _obj(data)

        def items(key: str) -> list[Any]:
            value = d.get(key)
            return value if isinstance(value, list) else []

        out = d.get("output")
        return cls(
            format=_opt_str(d.get("format")),
            input=FileInfo.from_json(d.get("input")),
            output=FileInfo.from_json(out) if isinstance(out, Mapping) else None,
            dry_run=bool(d.get("dry_run", not isinstance(out, Mapping))),
            summary=Summary.from_json(d.get("summary")),
            rules=tuple(RuleStats.from_json(r, i) for i, r in enumerate(items("rules"))),
            parameters=tuple(ParameterState.from_json(p) for p in items("parameters")),
            buffers=tuple(BufferInfo.from_json(b) for b in items("buffers")),
            modules=tuple(_flatten_modules(d.get("modules"))),
            warnings=tuple(ReportWarning.from_json(w) for w in items("warnings")),
            raw=d,
        )

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
