"""The preview's columnar view: what a spec changes, aligned to the model's report, for a front end that
asks for a preview on every edit.

The full report repeats every parameter's name, module, type, shape and dtype on each preview (2.7 MB for
10,000 parameters). None of that depends on the spec: a client reads it once from the model's report and
then needs only the states. This view carries the summary, rules and warnings as the report has them, and
per parameter and per module only what a spec decides, as columns in the order of the model's report's
``parameters`` and ``modules`` lists:

    {"view": "columns", "format", "input", "spec", "spec_sha256", "summary", "rules", "warnings",
     "parameters": {"count": N, "requires_grad": "0110…", "decided_by": [[first, count, rule], …]},
     "modules": {"count": M, "trainable": [...], "numel_trainable": [...]}}

``requires_grad`` has one character per parameter ("1" trainable, "0" frozen); ``decided_by`` gives runs of
consecutive parameters whose state a rule decided (parameters in no run kept their start state); a module's
``trainable`` and ``numel_trainable`` count its parameters (tied ones once), and its state follows from them
and the model's report's ``parameters`` and ``numel`` of that module.

    layout = Layout.of(inventory)            # once per model: nothing in it depends on the spec
    view = columns(selection, spec, layout, input=FileRef(...))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layerfreeze.core.model import Inventory
from layerfreeze.core.ordering import natural_key, order_known
from layerfreeze.core.patterns import containing_modules, owner
from layerfreeze.core.report import (
    FileRef,
    module_order,
    rule_reports,
    summarize,
    tensor_bytes,
    warning_reports,
)
from layerfreeze.core.selection import Selection
from layerfreeze.core.spec import FreezeSpec, spec_sha256

VIEW = "columns"


@dataclass(frozen=True, slots=True)
class Layout:
    """A model's report order and who holds whom, computed once per model."""

    order: tuple[int, ...]  # report position -> index into the inventory's parameters
    modules: tuple[str, ...]  # module paths in report order
    holders: tuple[tuple[int, ...], ...]  # per inventory parameter: the modules that hold it (indices)
    buffers: int
    bytes_buffers: int

    @classmethod
    def of(cls, inventory: Inventory) -> Layout:
        params = [t for t in inventory.tensors if t.kind == "parameter"]
        order = list(range(len(params)))
        if not order_known(inventory.format):  # as build_report sorts them
            order.sort(key=lambda i: natural_key(params[i].name))
        chains: dict[str, list[str]] = {}
        held: list[set[str]] = []
        for p in params:
            paths: set[str] = set()
            for name in (p.name, *p.aliases):
                own = owner(name)
                if own not in chains:
                    chains[own] = containing_modules(name)
                paths.update(chains[own])
            held.append(paths)
        modules = module_order(inventory, {m for paths in held for m in paths})
        position = {m: i for i, m in enumerate(modules)}
        buffers = [t for t in inventory.tensors if t.kind == "buffer"]
        return cls(order=tuple(order), modules=tuple(modules),
                   holders=tuple(tuple(sorted(position[m] for m in paths)) for paths in held),
                   buffers=len(buffers), bytes_buffers=sum(tensor_bytes(b.dtype, b.numel) for b in buffers))


def columns(selection: Selection, spec: FreezeSpec, layout: Layout, *, input: FileRef) -> dict[str, Any]:
    """The columnar preview of ``selection`` as a JSON-ready dict (no per-row validation: every value
    is built here from typed data)."""
    params, final, decided = selection.parameters, selection.final, selection.decided_by
    if len(params) != len(layout.holders):
        raise ValueError("the layout is of another inventory")
    trainable = [0] * len(layout.modules)
    numel_trainable = [0] * len(layout.modules)
    for p, state, holders in zip(params, final, layout.holders, strict=True):
        if state:
            n = p.numel
            for m in holders:
                trainable[m] += 1
                numel_trainable[m] += n
    runs: list[list[int]] = []
    for position, i in enumerate(layout.order):
        rule = decided[i]
        if rule is None:
            continue
        last = runs[-1] if runs else None
        if last is not None and last[2] == rule and last[0] + last[1] == position:
            last[1] += 1
        else:
            runs.append([position, 1, rule])
    summary = summarize(selection, buffers=layout.buffers, bytes_buffers=layout.bytes_buffers)
    return {
        "view": VIEW,
        "format": selection.inventory.format,
        "input": input.model_dump(mode="json"),
        "spec": spec.model_dump(mode="json", exclude_none=True),
        "spec_sha256": spec_sha256(spec),
        "summary": summary.model_dump(mode="json"),
        "rules": [r.model_dump(mode="json") for r in rule_reports(selection)],
        "warnings": [w.model_dump(mode="json") for w in warning_reports(selection)],
        "parameters": {"count": len(params),
                       "requires_grad": "".join("1" if final[i] else "0" for i in layout.order),
                       "decided_by": runs},
        "modules": {"count": len(layout.modules), "trainable": trainable, "numel_trainable": numel_trainable},
    }


__all__ = ["VIEW", "Layout", "columns"]
