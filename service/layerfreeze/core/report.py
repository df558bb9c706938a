"""The parameter-state report (CONTRACT section 2) as Pydantic models with a stable JSON schema.

    report = build_report(selection, spec, input=FileRef(...), output=None)
    report.model_dump(mode="json")
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from layerfreeze.core.model import ITEMSIZE, Inventory
from layerfreeze.core.ordering import natural_key, order_known
from layerfreeze.core.patterns import containing_modules, owner
from layerfreeze.core.selection import Selection
from layerfreeze.core.spec import FreezeSpec, spec_sha256
from layerfreeze.version import __version__

REPORT_VERSION = 1

# Per frozen parameter, AdamW training would hold a gradient and two moments of the parameter's own size.
SAVING_FACTOR = 3
SAVING_ASSUMPTION = (
    "frozen bytes x 3: no gradient and no AdamW exp_avg / exp_avg_sq for frozen parameters, each the size "
    "and dtype of the parameter; activations, master weights and mixed-precision copies not included"
)

State = Literal["trainable", "frozen", "partial"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileRef(_Model):
    filename: str
    bytes: int
    sha256: str | None  # None only while a stored-model job's output digest is still being computed


class Summary(_Model):
    parameters: int
    trainable: int
    frozen: int
    numel_total: int
    numel_trainable: int
    numel_frozen: int
    trainable_fraction: float = Field(description="numel_trainable / numel_total (0 for no parameters)")
    bytes_total: int
    bytes_trainable: int
    bytes_frozen: int
    buffers: int
    bytes_buffers: int
    changed: int = Field(description="parameters whose requires_grad differs from the start state")
    training_memory_saved_bytes: int
    training_memory_assumption: str = SAVING_ASSUMPTION


class RuleReport(_Model):
    index: int
    action: Literal["freeze", "unfreeze"]
    selectors: list[str]
    selected: int
    selected_numel: int
    decided: int
    decided_numel: int
    children_counted: list[str] | None = Field(
        default=None, description="for a children rule: the children list that was sliced, in order")


class ParameterReport(_Model):
    name: str
    module: str
    module_type: str | None
    shape: list[int]
    dtype: str
    numel: int
    requires_grad: bool
    was: bool
    rule: int | None
    aliases: list[str]


class BufferReport(_Model):
    name: str
    module: str
    shape: list[int]
    dtype: str
    numel: int


class ModuleReport(_Model):
    path: str
    type: str | None
    depth: int
    parameters: int
    trainable: int
    frozen: int
    numel: int
    numel_trainable: int
    numel_frozen: int
    state: State | None = Field(description="null for modules without parameters")


class WarningReport(_Model):
    code: str
    message: str
    names: list[str] = Field(default_factory=list)
    rule: int | None = None
    pointer: str | None = Field(default=None, description="JSON pointer of the spec value it is about")
    suggestions: list[str] = Field(default_factory=list, description="the nearest real names")


class ModelFile(_Model):
    path: str = Field(description="relative path inside the model directory")
    bytes: int
    sha256: str | None
    role: Literal["index", "shard", "other"]
    changed: bool = Field(description="the output file differs from the input file")


class FilesReport(_Model):
    """A multi-file model (CONTRACT section 9): where each tensor lives and which files a freeze changes."""

    index: str | None = Field(description="the index naming the shards; null for an unsharded directory")
    shard_of: dict[str, str] = Field(description="tensor name -> relative path of the shard holding it")
    files: list[ModelFile]


class Report(_Model):
    report_version: int = REPORT_VERSION
    generator: str = f"layerfreeze {__version__}"
    format: str
    input: FileRef
    output: FileRef | None
    dry_run: bool
    spec: dict[str, Any]
    spec_sha256: str
    types_known: bool
    children_exact: bool
    prefix: str | None
    summary: Summary
    rules: list[RuleReport]
    parameters: list[ParameterReport]
    buffers: list[BufferReport]
    modules: list[ModuleReport]
    warnings: list[WarningReport]
    files: FilesReport | None = Field(default=None, description="multi-file models only")


def tensor_bytes(dtype: str, numel: int) -> int:
    return ITEMSIZE.get(dtype, 0) * numel


def build_report(
    selection: Selection, spec: FreezeSpec, *, input: FileRef, output: FileRef | None,
) -> Report:
    inv = selection.inventory
    types = {m.path: m.type for m in inv.modules}
    params = selection.parameters
    final = selection.final
    # Bulk entries are plain dicts validated once, in pydantic-core, with the whole report.
    parameters: list[dict[str, Any]] = [
        dict(
            name=p.name, module=owner(p.name), module_type=types.get(owner(p.name)), shape=list(p.shape),
            dtype=p.dtype, numel=p.numel, requires_grad=state, was=was, rule=rule, aliases=list(p.aliases),
        )
        for p, state, was, rule in zip(params, final, selection.start, selection.decided_by, strict=True)
    ]
    if not order_known(inv.format):  # no recorded order (safetensors sorts by name): 2 before 10
        parameters.sort(key=lambda entry: natural_key(entry["name"]))
    buffers: list[dict[str, Any]] = [
        dict(name=t.name, module=owner(t.name), shape=list(t.shape), dtype=t.dtype, numel=t.numel)
        for t in inv.tensors if t.kind == "buffer"
    ]
    summary = summarize(selection, buffers=len(buffers),
                        bytes_buffers=sum(tensor_bytes(b["dtype"], b["numel"]) for b in buffers))
    rules, warnings = rule_reports(selection), warning_reports(selection)
    return Report(
        format=inv.format, input=input, output=output, dry_run=output is None,
        spec=spec.model_dump(mode="json", exclude_none=True), spec_sha256=spec_sha256(spec),
        types_known=inv.types_known, children_exact=inv.children_exact, prefix=inv.prefix,
        summary=summary, rules=rules, parameters=parameters, buffers=buffers,
        modules=_module_tree(selection), warnings=warnings,
    )


def summarize(selection: Selection, *, buffers: int, bytes_buffers: int) -> Summary:
    """The report's totals over the selection's final states."""
    params, final = selection.parameters, selection.final
    numel_total = sum(p.numel for p in params)
    numel_trainable = sum(p.numel for p, s in zip(params, final, strict=True) if s)
    bytes_total = sum(tensor_bytes(p.dtype, p.numel) for p in params)
    bytes_trainable = sum(tensor_bytes(p.dtype, p.numel) for p, s in zip(params, final, strict=True) if s)
    bytes_frozen = bytes_total - bytes_trainable
    trainable = sum(final)
    return Summary(
        parameters=len(params), trainable=trainable, frozen=len(params) - trainable,
        numel_total=numel_total, numel_trainable=numel_trainable, numel_frozen=numel_total - numel_trainable,
        trainable_fraction=(numel_trainable / numel_total) if numel_total else 0.0,
        bytes_total=bytes_total, bytes_trainable=bytes_trainable, bytes_frozen=bytes_frozen,
        buffers=buffers, bytes_buffers=bytes_buffers,
        changed=sum(a != b for a, b in zip(selection.start, final, strict=True)),
        training_memory_saved_bytes=bytes_frozen * SAVING_FACTOR,
    )


def rule_reports(selection: Selection) -> list[RuleReport]:
    return [
        RuleReport(
            index=r.index, action=r.action, selectors=list(r.selectors), selected=r.selected,
            selected_numel=r.selected_numel, decided=r.decided, decided_numel=r.decided_numel,
            children_counted=list(r.children_counted) if r.children_counted is not None else None,
        )
        for r in selection.rules
    ]


def warning_reports(selection: Selection) -> list[WarningReport]:
    return [
        WarningReport(code=f.code, message=f.message, names=list(f.names), rule=f.rule, pointer=f.pointer,
                      suggestions=list(f.suggestions))
        for f in selection.findings
    ]


def _module_tree(selection: Selection) -> list[dict[str, Any]]:
    """Per-module totals over every parameter inside it, counted once per module even when tied
    (``sum(p.numel() for p in module.parameters())``), in the inventory's module order."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # params, trainable, numel, numel_tr
    chains: dict[str, list[str]] = {}  # owner -> the owner and every module containing it
    for p, state in zip(selection.parameters, selection.final, strict=True):
        paths: list[str] | set[str] = []
        for name in (p.name, *p.aliases):
            own = owner(name)
            chain = chains.get(own)
            if chain is None:
                chain = chains[own] = containing_modules(name)
            if not p.aliases:
                paths = chain
            else:  # one growing set: rebuilding it per alias would cost aliases squared
                paths = paths if isinstance(paths, set) else set()
                paths.update(chain)
        numel_trainable = p.numel if state else 0
        for path in paths:
            t = totals[path]
            t[0] += 1
            t[1] += state
            t[2] += p.numel
            t[3] += numel_trainable
    types = {m.path: m.type for m in selection.inventory.modules}
    out = []
    for path in module_order(selection.inventory, totals):
        count, trainable, numel, numel_tr = totals.get(path, (0, 0, 0, 0))
        module_state: State | None = None
        if count:
            module_state = "trainable" if trainable == count else "frozen" if trainable == 0 else "partial"
        out.append(dict(
            path=path, type=types.get(path), depth=path.count(".") + 1 if path else 0,
            parameters=count, trainable=trainable, frozen=count - trainable, numel=numel,
            numel_trainable=numel_tr, numel_frozen=numel - numel_tr, state=module_state,
        ))
    return out


def module_order(inventory: Inventory, holding: Iterable[str]) -> list[str]:
    """The report's module order: the inventory's modules, then those only parameter names reveal
    (``holding``: every module that holds a parameter), sorted; natural order where the file keeps none."""
    order = [m.path for m in inventory.modules]
    known = set(order)
    order += sorted(p for p in holding if p not in known)  # modules the reader did not list
    if not order_known(inventory.format):
        order.sort(key=natural_key)
    return order
