"""Warnings about a final freeze state: things that work as specified but surprise people in training.

Findings are data (they go into the report's ``warnings``); only failures raise.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from layerfreeze.core.model import Inventory, TensorInfo
from layerfreeze.core.patterns import containing_modules, leaf, owner
from layerfreeze.core.torch_classes import ancestors

if TYPE_CHECKING:
    from layerfreeze.core.selection import RuleOutcome

NORM_BASE = "torch.nn.modules.batchnorm._NormBase"  # BatchNorm*, SyncBatchNorm, InstanceNorm*


@dataclass(frozen=True, slots=True)
class Finding:
    """A warning for the report: ``names`` are the names concerned; ``pointer`` locates a spec value
    (``/rules/0/names/1``) and ``suggestions`` are the nearest real names, when the finding is about one."""

    code: str
    message: str
    names: tuple[str, ...] = ()
    rule: int | None = None
    pointer: str | None = None
    suggestions: tuple[str, ...] = ()


def state_findings(
    inventory: Inventory, params: Sequence[TensorInfo], final: Sequence[bool],
    rules: Sequence[RuleOutcome],
) -> list[Finding]:
    out = [Finding("reader_note", note) for note in inventory.notes]
    out.extend(_batchnorm(inventory, params, final))
    tied = [p for p in params if p.aliases]
    if tied:
        out.append(Finding(
            "tied_parameters",
            "tied parameters are one tensor with several names; each is listed once, under its first name, "
            "and every name shares its state: "
            + "; ".join(f"{p.name} = {', '.join(p.aliases)}" for p in tied),
            tuple(p.name for p in tied),
        ))
    by_storage: dict[str, list[str]] = defaultdict(list)
    for p in params:
        if p.storage is not None:
            by_storage[p.storage].append(p.name)
    shared = [names for names in by_storage.values() if len(names) > 1]
    if shared:
        out.append(Finding(
            "shared_storage",
            "distinct parameters share the same storage (views of one buffer); their states are set "
            "independently but their bytes are shared: " + "; ".join(", ".join(n) for n in shared),
            tuple(n for names in shared for n in names),
        ))
    for rule in rules:
        if rule.selected and not rule.decided:
            out.append(Finding(
                "rule_decided_nothing",
                f"rule {rule.index} selected {rule.selected} parameters but later rules decided all of them",
                rule=rule.index,
            ))
    return out


def _batchnorm(inventory: Inventory, params: Sequence[TensorInfo], final: Sequence[bool]) -> list[Finding]:
    """Normalization layers with running statistics inside frozen regions: the statistics still move in
    ``train()`` mode, because they are buffers updated by the forward pass, not by the optimizer."""
    stats: dict[str, set[str]] = defaultdict(set)
    for t in inventory.tensors:
        if t.kind == "buffer" and leaf(t.name) in ("running_mean", "running_var"):
            stats[owner(t.name)].add(leaf(t.name))
    if not stats:
        return []
    types = {m.path: m.type for m in inventory.modules}
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # path -> [parameters, frozen]
    for info, state in zip(params, final, strict=True):
        for path in containing_modules(info.name):
            totals[path][0] += 1
            totals[path][1] += not state
    frozen_norms = []
    for path in stats:
        recorded = types.get(path)
        if recorded is not None and NORM_BASE not in ancestors(recorded):
            continue  # e.g. FrozenBatchNorm2d: its statistics never change
        region = path
        while region not in totals and region:
            region = owner(region)  # affine=False: judge by the enclosing module
        count, frozen = totals.get(region, (0, 0))
        if count and frozen == count:
            frozen_norms.append(path)
    if not frozen_norms:
        return []
    return [Finding(
        "batchnorm_in_frozen_region",
        "normalization layers in frozen regions still update their running statistics in train() mode. "
        "To keep them fixed, call module.eval() on them after every model.train() (or override train()), "
        "or set track_running_stats=False (which then normalizes with batch statistics instead): "
        + ", ".join(frozen_norms),
        tuple(frozen_norms),
    )]
