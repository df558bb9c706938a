"""Apply a freeze spec to an inventory: which parameters each rule selects, and the final state.

    selection = select(spec, inventory)      # raises SpecError (strict rules that select nothing, ...)

Strictness is per rule (CONTRACT section 1): a rule that selects nothing fails a strict spec (a warning
otherwise); a value that matches nothing while its rule still selects something is a warning with its
pointer and the nearest real names, so one spec can serve several models.

Start state: the flag recorded in the file, or, where nothing is recorded, trainable for floating
parameters (as after ``load_state_dict`` on a fresh model). Rules apply in order; the last rule that
selects a parameter decides it. Buffers are never selected or counted. Tied parameters are one tensor:
a rule selects it when it selects any of its names, and every name gets the same state.
"""

from __future__ import annotations

from dataclasses import dataclass

from layerfreeze.core.findings import Finding, state_findings
from layerfreeze.core.matchers import RuleMatch, match_rule
from layerfreeze.core.model import Inventory, TensorInfo
from layerfreeze.core.ordering import order_known
from layerfreeze.core.spec import FreezeSpec
from layerfreeze.errors import SpecError, SpecIssue


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """What one rule did: parameters (and elements) it selected and those whose final state it decided."""

    index: int
    action: str
    selectors: tuple[str, ...]
    selected: int
    selected_numel: int
    decided: int
    decided_numel: int
    children_counted: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Selection:
    """The outcome of a spec on an inventory. Sequences run over ``parameters`` in definition order."""

    inventory: Inventory
    parameters: tuple[TensorInfo, ...]
    start: tuple[bool, ...]
    final: tuple[bool, ...]
    decided_by: tuple[int | None, ...]
    rules: tuple[RuleOutcome, ...]
    findings: tuple[Finding, ...]

    def final_by_name(self) -> dict[str, bool]:
        """Final ``requires_grad`` for every parameter name, aliases included (what writers take)."""
        out: dict[str, bool] = {}
        for info, state in zip(self.parameters, self.final, strict=True):
            out[info.name] = state
            for alias in info.aliases:
                out[alias] = state
        return out


def start_state(info: TensorInfo) -> bool:
    if info.requires_grad is not None:
        return info.requires_grad
    return info.is_floating


def select(spec: FreezeSpec, inventory: Inventory) -> Selection:
    params = tuple(t for t in inventory.tensors if t.kind == "parameter")
    start = tuple(start_state(p) for p in params)
    state = list(start)
    decided: list[int | None] = [None] * len(params)
    issues: list[SpecIssue] = []
    findings: list[Finding] = []
    matches: list[RuleMatch] = []
    skipped_integer: set[str] = set()

    context = _Context(inventory, params)
    for index, rule in enumerate(spec.rules):
        match = match_rule(index, rule, context)
        matches.append(match)
        issues.extend(match.errors)  # errors whatever ``strict`` says (types on a weight-only file)
        if match.selected:  # strictness is per rule: an alternative that matches nothing is a warning
            findings.extend(_finding("unmatched_value", p, index) for p in match.problems)
        elif spec.strict:
            issues.extend(match.problems)
        else:
            findings.extend(_finding("rule_problem", p, index) for p in match.problems)
        trainable = rule.action == "unfreeze"
        for k in match.selected:
            if trainable and not params[k].is_floating:
                skipped_integer.add(params[k].name)  # only floating tensors can require grad
                continue
            state[k] = trainable
            decided[k] = index
    if issues:
        raise SpecError(_summary(issues), issues)

    decided_by_rule: dict[int, list[int]] = {}
    for k, d in enumerate(decided):
        if d is not None:
            decided_by_rule.setdefault(d, []).append(k)
    outcomes = []
    for index, (rule, match) in enumerate(zip(spec.rules, matches, strict=True)):
        mine = decided_by_rule.get(index, [])
        outcomes.append(RuleOutcome(
            index=index, action=rule.action, selectors=rule.selectors(),
            selected=len(match.selected), selected_numel=sum(params[k].numel for k in match.selected),
            decided=len(mine), decided_numel=sum(params[k].numel for k in mine),
            children_counted=match.children_counted,
        ))
        if match.children_counted is not None and not inventory.children_exact:
            findings.append(Finding(
                "children_from_names",
                "this file does not record parameter-less modules, so children were counted from tensor "
                f"names only: {', '.join(match.children_counted) or '(none)'} (numbered children by their "
                "index; negative positions count back from the last child that holds tensors)",
                match.children_counted, rule=index,
            ))
    if skipped_integer:
        findings.append(Finding(
            "not_floating", "only floating-point tensors can require gradients; these stay frozen",
            tuple(sorted(skipped_integer)),
        ))
    final = tuple(state)
    findings.extend(state_findings(inventory, params, final, outcomes))
    return Selection(inventory, params, start, final, tuple(decided), tuple(outcomes), tuple(findings))


class _Context:
    """Per-inventory lookups shared by all rules (built once)."""

    def __init__(self, inventory: Inventory, params: tuple[TensorInfo, ...]) -> None:
        self.inventory = inventory
        self.params = params
        self.names = tuple((p.name, *p.aliases) for p in params)
        self.modules = {m.path: m for m in inventory.modules}
        self.module_order = {m.path: i for i, m in enumerate(inventory.modules)}
        self.order_known = order_known(inventory.format)
        if "" not in self.modules:
            self.module_order[""] = -1


def _finding(code: str, issue: SpecIssue, rule: int) -> Finding:
    hint = f" (did you mean: {', '.join(issue.suggestions)}?)" if issue.suggestions else ""
    return Finding(code, f"{issue.pointer}: {issue.message}{hint}", rule=rule, pointer=issue.pointer,
                   suggestions=tuple(issue.suggestions))


def _summary(issues: list[SpecIssue]) -> str:
    first = issues[0]
    more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
    return f"the freeze spec does not fit this model: {first.pointer or '/'}: {first.message}{more}"


__all__ = ["RuleOutcome", "Selection", "select", "start_state"]
