"""Evaluate one rule's selectors over the parameters of an inventory.

Each selector yields a boolean mask over the parameters; a rule selects the parameters every one of its
selectors selects (AND); inside one selector the values are alternatives (OR). Besides the selection,
``match_rule`` reports *problems* (a value or the whole rule selecting nothing, a path that does not exist)
and *errors* (always fatal: ``types`` on a file without types). Strictness is per rule: when the rule selects
nothing its problems are errors under ``strict`` (warnings otherwise); when it still selects something, the
problems of single values (an alternative that matches nothing) are only warnings.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from layerfreeze.core.ordering import indexed_children, until_by_names
from layerfreeze.core.patterns import NameMatcher, RegexMatcher, containing_modules, leaf, owner
from layerfreeze.core.spec import Children, Rule, json_pointer
from layerfreeze.core.torch_classes import ancestors, public_name
from layerfreeze.errors import SpecIssue

if TYPE_CHECKING:
    from layerfreeze.core.selection import _Context


Pointer = tuple[str | int, ...]  # a JSON pointer's parts (spec.json_pointer joins them)


@dataclass(slots=True)
class RuleMatch:
    selected: list[int]
    errors: list[SpecIssue] = field(default_factory=list)
    problems: list[SpecIssue] = field(default_factory=list)
    children_counted: tuple[str, ...] | None = None


def match_rule(index: int, rule: Rule, ctx: _Context) -> RuleMatch:
    n = len(ctx.params)
    base = ("rules", index)
    result = RuleMatch(selected=[])
    mask = [True] * n
    counts: dict[str, int] = {}
    for selector in rule.selectors():
        pointer = (*base, selector)
        if selector == "names":
            sel = _names(rule.names or [], ctx, pointer, result)
        elif selector == "regex":
            sel = _regex(rule.regex or [], ctx, pointer, result)
        elif selector == "types":
            sel = _types(rule.types or [], ctx, pointer, result)
        elif selector == "children":
            assert rule.children is not None
            sel = _children(rule.children, ctx, pointer, result)
        elif selector == "until":
            sel = _until(rule.until or "", ctx, pointer, result)
        else:
            sel = _params(rule.params or [], ctx, pointer, result)
        counts[selector] = sum(sel)
        mask = [a and b for a, b in zip(mask, sel, strict=True)]
    result.selected = [k for k in range(n) if mask[k]]
    if not result.selected and not result.errors:
        if len(counts) > 1 and all(counts.values()):
            detail = ", ".join(f"{s} selects {c}" for s, c in counts.items())
            message = f"rule {index} selects no parameter: {detail}, but no parameter satisfies all of them"
        else:
            message = f"rule {index} selects no parameter"
        suggestions = next((p.suggestions for p in result.problems if p.suggestions), ())
        result.problems.append(SpecIssue(json_pointer(base), message, suggestions))  # specifics first
    return result


_MAX_CANDIDATES = 20_000


def _suggest(value: str, candidates: list[str] | set[str]) -> tuple[str, ...]:
    """The nearest real names; on huge models only names of about the same depth are compared, so a
    typo costs milliseconds, not seconds."""
    depth = value.count(".")
    pool = sorted(c for c in candidates if c != value)
    if len(pool) > _MAX_CANDIDATES:
        pool = [c for c in pool if abs(c.count(".") - depth) <= 1][:_MAX_CANDIDATES]
    close = difflib.get_close_matches(value, pool, n=5, cutoff=0.6)
    if not close:  # nothing alike (short names such as "5"): show what exists at that depth instead
        close = [c for c in pool if c.count(".") == depth][:5]
    return tuple(close)


def _parameter_paths(ctx: _Context) -> set[str]:
    """Every name a ``names`` value could select something by: parameter names and the modules that hold
    them (a module without parameters is no suggestion: it would select nothing again)."""
    paths: set[str] = set()
    for names in ctx.names:
        for name in names:
            parts = name.split(".")
            paths.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))
    return paths


def _all_paths(ctx: _Context) -> set[str]:
    paths = {p for p in ctx.modules if p}
    for names in ctx.names:
        paths.update(names)
    return paths


def _names(values: list[str], ctx: _Context, pointer: Pointer, result: RuleMatch) -> list[bool]:
    matcher = NameMatcher(values)
    sel = matcher.select(ctx.names)
    for j, compiled in enumerate(matcher.compiled):
        if not _any_hit(compiled.fullmatch, ("." + nm for names in ctx.names for nm in names)):
            empty = [p for p in ctx.modules if p and compiled.fullmatch("." + p)]
            buffers = _buffers_hit(ctx, lambda b, c=compiled: c.fullmatch("." + b))
            message = (f"name pattern {values[j]!r} matches only modules without parameters: "
                       f"{', '.join(empty[:5])}" if empty else
                       f"name pattern {values[j]!r} matches only buffers, which are never trainable: "
                       f"{', '.join(buffers[:5])}" if buffers else
                       f"name pattern {values[j]!r} matches no parameter or module")
            result.problems.append(SpecIssue(json_pointer((*pointer, j)), message,
                                             _suggest(values[j], _parameter_paths(ctx))))
    return sel


def _regex(values: list[str], ctx: _Context, pointer: Pointer, result: RuleMatch) -> list[bool]:
    matcher = RegexMatcher(values)
    sel = [any(matcher.matches(name) for name in names) for names in ctx.names]
    for j, compiled in enumerate(matcher.compiled):
        if not _any_hit(compiled.fullmatch, (nm for names in ctx.names for nm in names)):
            buffers = _buffers_hit(ctx, lambda b, c=compiled: c.fullmatch(b))
            result.problems.append(SpecIssue(
                json_pointer((*pointer, j)),
                f"regular expression {values[j]!r} matches only buffers, which are never trainable: "
                f"{', '.join(buffers[:5])}" if buffers else
                f"regular expression {values[j]!r} matches no whole parameter name",
                _suggest(values[j], {nm for names in ctx.names for nm in names})))
    return sel


def type_matches(value: str, recorded: str) -> bool:
    """``isinstance`` by name: ``value`` (``Linear``, ``torch.nn.Linear``, ``nn.Linear`` or the qualified
    name) names the recorded class or, for torch.nn classes, one of its torch.nn bases."""
    if value.startswith("nn."):
        value = "torch." + value
    return any(value in (cls, cls.rsplit(".", 1)[-1], public_name(cls)) or _package_alias(value, cls)
               for cls in ancestors(recorded))


def _package_alias(value: str, cls: str) -> bool:
    """``transformers.BertLayer`` for ``transformers.models.bert.modeling_bert.BertLayer``: a package's
    top-level spelling of its class (how users import it)."""
    package, dot, name = value.partition(".")
    return bool(dot) and "." not in name and cls.startswith(package + ".") and cls.rsplit(".", 1)[-1] == name


def _types(values: list[str], ctx: _Context, pointer: Pointer, result: RuleMatch) -> list[bool]:
    if not ctx.inventory.types_known:
        result.errors.append(SpecIssue(
            json_pointer(pointer),
            f"this checkpoint ({ctx.inventory.format}) records no module types, so a rule cannot select by "
            "type; select by names, regex, params, children or until instead"))
        return [False] * len(ctx.params)
    types = {m.type for m in ctx.modules.values() if m.type}
    hits_by_value = [{t for t in types if type_matches(v, t)} for v in values]
    matching = set().union(*hits_by_value)
    paths = {path for path, m in ctx.modules.items() if m.type in matching}
    for j, hits in enumerate(hits_by_value):
        if hits and not any(_inside(names, {p for p, m in ctx.modules.items() if m.type in hits})
                            for names in ctx.names):
            result.problems.append(SpecIssue(
                json_pointer((*pointer, j)),
                f"modules of type {values[j]!r} exist in this model but hold no parameters"))
        if not hits:
            shorts = {t.rsplit(".", 1)[-1] for t in types}
            result.problems.append(SpecIssue(
                json_pointer((*pointer, j)), f"no module of type {values[j]!r} in this model",
                _suggest(values[j].rsplit(".", 1)[-1], shorts)))
    return [_inside(names, paths) for names in ctx.names]


def _inside(names: tuple[str, ...], paths: set[str]) -> bool:
    return any(m in paths for name in names for m in containing_modules(name))


def _children(spec: Children, ctx: _Context, pointer: Pointer, result: RuleMatch) -> list[bool]:
    module = ctx.modules.get(spec.of)
    if module is None and spec.of != "":
        result.problems.append(SpecIssue(
            json_pointer((*pointer, "of")), f"no module {spec.of!r} in this model",
            _suggest(spec.of, [p for p in ctx.modules if p])))
        return [False] * len(ctx.params)
    children = list(module.children) if module is not None else []
    if not (ctx.order_known and ctx.inventory.children_exact):
        by_index = indexed_children(children)
        if by_index is not None:
            children = by_index
        elif not ctx.order_known and len(children) > 1:
            result.problems.append(SpecIssue(
                json_pointer((*pointer, "of")),
                f"this {ctx.inventory.format} file does not record definition order, and the children of "
                f"{spec.of or 'the model'} ({', '.join(sorted(children))}) are named, not numbered; "
                "select them by names instead"))
            return [False] * len(ctx.params)
    where, count = spec.of or "the root", len(children)
    if spec.indices is not None:
        picked = []
        for j, i in enumerate(spec.indices):
            if -count <= i < count:
                picked.append(children[i])
            else:
                result.problems.append(SpecIssue(
                    json_pointer((*pointer, "indices", j)),
                    f"index {i} out of range: {where} has {count} children"))
    else:
        picked = children[spec.start:spec.stop]
        if not picked and spec.start is not None and spec.start >= count:
            result.problems.append(SpecIssue(
                json_pointer((*pointer, "start")),
                f"start {spec.start} is past the end: {where} has {count} children"))
        elif not picked:
            result.problems.append(SpecIssue(
                json_pointer(pointer),
                f"the slice [{_opt(spec.start)}:{_opt(spec.stop)}] is empty: {where} has {count} children"))
    result.children_counted = tuple(_join(spec.of, c) for c in children)
    paths = {_join(spec.of, c) for c in picked}
    sel = [_inside(names, paths) for names in ctx.names]
    if picked and not any(sel):
        result.problems.append(SpecIssue(
            json_pointer(pointer), f"the children selected ({', '.join(sorted(paths))}) hold no parameters"))
    return sel


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def _until(path: str, ctx: _Context, pointer: Pointer, result: RuleMatch) -> list[bool]:
    """Everything registered up to and including ``path``: a prefix of ``named_parameters()`` order,
    which is module order (each module's own parameters, module by module)."""
    n = len(ctx.params)
    exists = path in ctx.modules or any(
        name == path or name.startswith(path + ".") for names in ctx.names for name in names)
    if exists and not ctx.order_known:
        mask, unknown = until_by_names(path, ctx.names)
        if unknown is not None:
            result.problems.append(SpecIssue(
                json_pointer(pointer),
                f"this {ctx.inventory.format} file does not record definition order, and {unknown}; "
                "select those parameters by names or regex instead"))
        return mask
    order = ctx.module_order
    if path in ctx.modules and all(owner(name) in order for names in ctx.names for name in names):
        last = max(order[p] for p in ctx.modules if p == path or p.startswith(path + "."))
        return [min(order[owner(name)] for name in names) <= last for names in ctx.names]
    # a parameter's own name, or a file without module records: the parameters' own order
    hits = [k for k, names in enumerate(ctx.names)
            if any(name == path or name.startswith(path + ".") for name in names)]
    if hits:
        return [k <= hits[-1] for k in range(n)]
    is_buffer = bool(_buffers_hit(ctx, lambda b: b == path))
    result.problems.append(SpecIssue(
        json_pointer(pointer),
        f"{path!r} is a buffer, never trainable: until takes a module or a parameter" if is_buffer
        else f"no module or parameter {path!r} in this model",
        _suggest(path, _all_paths(ctx))))
    return [False] * n


def _params(values: list[str], ctx: _Context, pointer: Pointer, result: RuleMatch) -> list[bool]:
    wanted = set(values)
    leaves = [{leaf(name) for name in names} for names in ctx.names]
    present = set().union(*leaves) if leaves else set()
    for j, value in enumerate(values):
        if value not in present:
            buffers = _buffers_hit(ctx, lambda b, v=value: leaf(b) == v)
            result.problems.append(SpecIssue(
                json_pointer((*pointer, j)),
                f"{value!r} names only buffers, which are never trainable: {', '.join(buffers[:5])}"
                if buffers else f"no parameter is named {value!r} (leaf name)",
                _suggest(value, present)))
    return [not wanted.isdisjoint(ls) for ls in leaves]


def _buffers_hit(ctx: _Context, predicate) -> list[str]:  # type: ignore[no-untyped-def]
    """Buffers a value would have selected: named in the problem instead of "matches nothing"."""
    return [t.name for t in ctx.inventory.tensors if t.kind == "buffer" and predicate(t.name)]


def _any_hit(predicate, items) -> bool:  # type: ignore[no-untyped-def]
    return any(predicate(item) is not None for item in items)
