"""Recovering the model from a torch.save pickle tree: a state dict, a checkpoint dict, or a whole module.

    recovered = recover_model(root, storage_bytes=..., storage_prefix="zip", limits=...)

The result is an Inventory for the core plus, for every parameter, the flag bytes that record its
``requires_grad`` (what the writers patch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from layerfreeze.core.kinds import tensor_kind
from layerfreeze.core.model import FLOATING_DTYPES, Inventory, ModuleInfo, TensorInfo
from layerfreeze.errors import AmbiguousCheckpoint, FormatError, LimitExceeded
from layerfreeze.formats.dtypes import ITEMSIZE
from layerfreeze.formats.module_tree import modules_from_names
from layerfreeze.formats.pickle.nodes import Flag, Obj, OrderedDictNode, ParamNode, TensorNode
from layerfreeze.limits import ReadLimits

DEFAULT_LIMITS = ReadLimits()

# Keys under which training loops and libraries keep the model in a checkpoint dict, most specific first.
MODEL_KEYS = (
    "state_dict", "model_state_dict", "model_state", "model", "module", "net", "network", "ema",
    "model_ema", "state_dict_ema", "ema_state_dict", "params", "weights", "generator", "student", "teacher",
)


@dataclass
class Recovered:
    inventory: Inventory
    flags: dict[str, list[Flag]] = field(default_factory=dict)  # parameter name -> its flag(s), aliases too


@dataclass
class _Entry:
    name: str
    kind: str
    node: TensorNode
    flag: Flag
    is_param_node: bool
    aliases: list[str] = field(default_factory=list)
    alias_flags: list[Flag] = field(default_factory=list)
    sites: list[Flag] = field(default_factory=list)  # every flag byte behind the name and its aliases


StorageBytes = Callable[[str], "int | None"]


def recover_model(root: Any, *, storage_bytes: StorageBytes, storage_prefix: str,
                  limits: ReadLimits = DEFAULT_LIMITS) -> Recovered:
    """Find the model in ``root``; raise FormatError when the pickle is not a torch checkpoint."""
    sd = as_state_dict(root)
    if sd is not None:
        return _from_state_dict(sd, "torch.state_dict", None, (), storage_bytes, storage_prefix, limits)
    if is_module(root):
        return _from_module(root, "torch.module", None, (), storage_bytes, storage_prefix, limits)
    if isinstance(root, dict) and root and all(isinstance(k, str) for k in root):
        return _from_checkpoint(root, storage_bytes, storage_prefix, limits)
    raise FormatError(f"the pickle holds a {_describe(root)}, not a state dict, checkpoint or module")


def _describe(value: Any) -> str:
    if isinstance(value, Obj):
        return f"{value.type_name} object"
    if isinstance(value, (TensorNode, ParamNode)):  # not our internal node names: what the user saved
        return "single tensor"
    if isinstance(value, dict) and not value:
        return "dict with no entries (no tensors at all)"
    return type(value).__name__


def as_state_dict(value: Any) -> dict[str, Any] | None:
    """``value`` if it is a mapping of names to tensors (a state dict), else None."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return None
    tensors = 0
    for key, item in value.items():
        if isinstance(item, (TensorNode, ParamNode)):
            tensors += 1
        elif not key.endswith("_extra_state"):
            return None
    if tensors or (isinstance(value, OrderedDictNode) and "_metadata" in value.attrs):
        return value
    return None


def is_module(value: Any) -> bool:
    return (isinstance(value, Obj) and isinstance(value.state, dict)
            and isinstance(value.state.get("_parameters"), dict) and "_modules" in value.state)


def _from_checkpoint(root: dict[str, Any], storage_bytes: StorageBytes, prefix: str,
                     limits: ReadLimits) -> Recovered:
    candidates = [k for k in MODEL_KEYS if k in root] + [k for k in root if k not in MODEL_KEYS]
    for key in candidates:
        value = root[key]
        others = tuple(k for k in root if k != key)
        note = f"model found under '{key}'" + (f"; also present: {', '.join(others)}" if others else "")
        sd = as_state_dict(value)
        if sd is not None and (key in MODEL_KEYS or sd):
            return _from_state_dict(sd, "torch.checkpoint", key, (note,), storage_bytes, prefix, limits)
        if is_module(value):
            return _from_module(value, "torch.checkpoint", key, (note,), storage_bytes, prefix, limits)
    hint = ""
    if {"state", "param_groups"} <= set(root):  # a common mix-up: the optimizer.pt beside the model
        hint = "; this is an optimizer's state_dict, not a model's"
    raise FormatError(
        "the checkpoint dict holds no state dict or module (keys: " + ", ".join(list(root)[:20]) + ")" + hint
    )


def _tensor_of(value: TensorNode | ParamNode) -> tuple[TensorNode, Flag, bool]:
    if isinstance(value, ParamNode):
        return value.tensor, value.flag, True
    return value, value.flag, False


def name_budget(limits: ReadLimits, ops: int) -> ReadLimits:
    """``limits`` with ``max_tensors`` also bounded by the pickle's own size (``ops``, its opcodes).

    Shared records (one ``_parameters`` dict in many modules, one module under many names) let a small
    pickle name a tensor any number of times, and every name goes into the report. Real models spend
    far more than one opcode per name; the floor keeps small files free of this check."""
    return limits.model_copy(update={"max_tensors": min(limits.max_tensors, max(10_000, ops))})


def check_name_count(count: int, limits: ReadLimits) -> None:
    if count > limits.max_tensors:
        raise LimitExceeded(f"the checkpoint names more than {limits.max_tensors} tensors (aliases included)",
                            limit="max_tensors", value=count, maximum=limits.max_tensors)


def _sites(value: TensorNode | ParamNode) -> list[Flag]:
    return value.sites


def check_flags(name: str, value: TensorNode | ParamNode) -> None:
    """torch.load refuses to set requires_grad=True on an integer tensor (every flag it applies on the
    way, the inner tensor's included); we refuse the same file rather than accept what torch cannot load."""
    node = value.tensor if isinstance(value, ParamNode) else value
    if node.dtype in FLOATING_DTYPES:
        return
    flags = [*value.sites, *(node.sites if isinstance(value, ParamNode) else ())]
    if any(f.value for f in flags):
        raise FormatError(f"tensor {name!r} is {node.dtype} but recorded with requires_grad=True; torch.load "
                          "refuses that (only floating point and complex tensors can require gradients)")


def check_extent(name: str, node: TensorNode, storage_bytes: StorageBytes) -> None:
    st = node.storage
    size = storage_bytes(st.key)
    itemsize = ITEMSIZE.get(st.dtype)
    if size is None:
        raise FormatError(f"tensor {name!r} refers to storage {st.key!r}, which the archive does not hold")
    if itemsize is not None and size != st.numel * itemsize:
        raise FormatError(f"storage {st.key!r} holds {size} bytes, but {st.numel} x {st.dtype} are declared")
    if all(node.shape):
        extent = node.offset + sum((d - 1) * s for d, s in zip(node.shape, node.stride, strict=True)) + 1
        extent_bytes = extent * ITEMSIZE.get(node.dtype, 1)
        if extent_bytes > st.span()[1] * ITEMSIZE.get(st.dtype, 1):
            raise FormatError(f"tensor {name!r} reaches beyond its storage {st.key!r}")


def _info(entry: _Entry, prefix: str, recorded: bool) -> TensorInfo:
    node = entry.node
    return TensorInfo(
        name=entry.name, kind=entry.kind,  # type: ignore[arg-type]
        shape=node.shape, dtype=node.dtype,
        requires_grad=entry.flag.value if recorded else None,
        aliases=tuple(entry.aliases), storage=f"{prefix}:{node.storage.key}",
    )


def _from_state_dict(sd: dict[str, Any], fmt: str, key: str | None, notes: tuple[str, ...],
                     storage_bytes: StorageBytes, prefix: str, limits: ReadLimits) -> Recovered:
    if len(sd) > limits.max_tensors:
        raise LimitExceeded(f"more than {limits.max_tensors} tensors", limit="max_tensors",
                            value=len(sd), maximum=limits.max_tensors)
    entries: list[_Entry] = []
    by_identity: dict[int, _Entry] = {}
    by_view: dict[tuple[Any, ...], _Entry] = {}
    for name, value in sd.items():
        if not isinstance(value, (TensorNode, ParamNode)):
            continue  # *_extra_state
        limits.check_name(name)
        check_flags(name, value)
        node, flag, is_param = _tensor_of(value)
        check_extent(name, node, storage_bytes)
        start = node.storage.view_offset + node.offset
        view = (node.storage.key, start, node.shape, node.stride, node.dtype)
        first = by_identity.get(id(value)) or by_view.get(view)
        if first is not None:
            first.aliases.append(name)
            first.alias_flags.append(flag)
            first.sites.extend(_sites(value))
            continue
        entry = _Entry(name, tensor_kind(name, node.dtype), node, flag, is_param, sites=_sites(value))
        by_identity[id(value)] = entry
        by_view[view] = entry
        entries.append(entry)
    for e in entries:
        if any(f.value != e.flag.value for f in e.alias_flags):
            raise AmbiguousCheckpoint(
                f"{e.name!r} and {', '.join(e.aliases)} are one tensor (the same bytes) saved with different "
                "requires_grad; one state cannot describe them: refused as ambiguous",
                ambiguity="tied-flags")
    # Nothing recorded: plain tensors (state_dict() drops requires_grad) whose flags are all False.
    # Our own outputs set every parameter's flag, so any True flag or any Parameter means "recorded".
    recorded = any(e.is_param_node for e in entries) or any(
        e.kind == "parameter" and e.flag.value for e in entries
    )
    tensors = tuple(_info(e, prefix, recorded) for e in entries)
    metadata = sd.attrs.get("_metadata") if isinstance(sd, OrderedDictNode) else None
    paths = list(metadata) if isinstance(metadata, dict) else None
    modules, exact = modules_from_names([t.name for t in tensors] + [a for t in tensors for a in t.aliases],
                                        paths)
    flags = {e.name: e.sites for e in entries if e.kind == "parameter"}
    if not recorded:
        notes = (*notes, "no requires_grad recorded (plain tensors, as state_dict() saves them): "
                 "every parameter starts trainable")
    inventory = Inventory(format=fmt, tensors=tensors, modules=modules, types_known=False,
                          children_exact=exact, prefix=key, notes=notes)
    return Recovered(inventory, flags)


def _module_state(obj: Obj) -> dict[str, Any]:
    state = obj.state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
        state = state[0]  # (dict state, slot state)
    return state if isinstance(state, dict) else {}


def _named_modules(root: Obj, limits: ReadLimits) -> list[tuple[str, Obj, bool]]:
    """``named_modules(remove_duplicate=False)`` (what ``named_parameters(remove_duplicate=False)`` walks):
    pre-order, children in definition order, a shared module under every path it has. The flag marks
    a module's first path (``named_modules()``'s own listing). Paths count against the name budget, and
    every path against the name limits, so shared or cyclic records cannot multiply without bound."""
    out: list[tuple[str, Obj, bool]] = []
    seen: set[int] = set()
    todo: list[tuple[str, Obj]] = [("", root)]
    while todo:
        path, module = todo.pop()
        out.append((path, module, id(module) not in seen))
        seen.add(id(module))
        check_name_count(len(out), limits)
        children = _module_state(module).get("_modules") or {}
        if not isinstance(children, dict):
            raise FormatError(f"module {path or '<root>'} has a malformed _modules record")
        if not all(isinstance(n, str) for n in children):
            raise FormatError(f"module {path or '<root>'} names a child with something not a string")
        kids = [(limits.check_name(f"{path}.{n}" if path else n), m) for n, m in children.items()
                if m is not None]
        for child_path, child in reversed(kids):
            if not is_module(child):
                raise FormatError(f"module child {child_path!r} is not a module record")
            todo.append((child_path, child))
    return out


def _from_module(root: Obj, fmt: str, key: str | None, notes: tuple[str, ...],
                 storage_bytes: StorageBytes, prefix: str, limits: ReadLimits) -> Recovered:
    modules = _named_modules(root, limits)
    infos: list[ModuleInfo] = []
    entries: list[_Entry] = []
    names = 0
    for slot, kind in (("_parameters", "parameter"), ("_buffers", "buffer")):
        seen: dict[int, _Entry] = {}
        for path, module, _ in modules:
            table = _module_state(module).get(slot) or {}
            if not isinstance(table, dict):
                raise FormatError(f"module {path or '<root>'} has a malformed {slot} record")
            for leaf, value in table.items():
                if value is None:
                    continue  # e.g. bias=False
                names += 1
                check_name_count(names, limits)
                if not isinstance(value, (TensorNode, ParamNode)) or not isinstance(leaf, str):
                    raise FormatError(f"a {slot[1:-1]} of {path or '<root>'} is not a named tensor")
                name = limits.check_name(f"{path}.{leaf}" if path else leaf)
                check_flags(name, value)
                node, flag, is_param = _tensor_of(value)
                check_extent(name, node, storage_bytes)
                if id(value) in seen:
                    seen[id(value)].aliases.append(name)
                    seen[id(value)].alias_flags.append(flag)
                    continue  # the same node: the same flag sites
                entry = _Entry(name, kind, node, flag, is_param, sites=_sites(value))
                seen[id(value)] = entry
                entries.append(entry)
    for path, module, first in modules:
        if not first:
            continue  # named_modules() lists a shared module once, under its first path
        children = _module_state(module).get("_modules") or {}
        infos.append(ModuleInfo(path, module.type_name,
                                tuple(str(n) for n, m in children.items() if m is not None)))
    tensors = tuple(_info(e, prefix, True) for e in entries)
    flags = {e.name: e.sites for e in entries if e.kind == "parameter"}
    inventory = Inventory(format=fmt, tensors=tensors, modules=tuple(infos), types_known=True,
                          children_exact=True, prefix=key, notes=notes)
    return Recovered(inventory, flags)


def flag_patches(flags: Mapping[str, list[Flag]], inventory: Inventory,
                 final: Mapping[str, bool]) -> dict[int, bytes]:
    """File offset -> replacement bytes that set every parameter's recorded flag to ``final``.

    A flag is never set True on a buffer or a non-floating tensor; a parameter missing from ``final``
    keeps its flag. Every site of a name changes together (a pickled state's ``requires_grad`` and the
    rebuilder's own). A flag whose bytes the pickle also uses elsewhere (memo, DUP) is changed only if
    that changes nothing else; a flag without bytes (``_rebuild_tensor``) is never changed.
    """
    patches: dict[int, bytes] = {}
    floating = {t.name: t.dtype in FLOATING_DTYPES for t in inventory.tensors}
    for name, sites in flags.items():
        if name not in final:
            continue
        value = bool(final[name]) and floating.get(name, False)
        for site in sites:
            if site.fixed:
                if value != site.value:
                    raise FormatError(f"parameter {name!r} has no requires_grad in this file to change")
                continue
            if site.shared and value != site.value:
                raise FormatError(f"the requires_grad of parameter {name!r} is a value the pickle reuses "
                                  "elsewhere (memo); changing it would change those values too")
            offset, data = site.patch(value)
            if patches.get(offset, data) != data:
                raise FormatError(f"parameter {name!r} shares its flag bytes with another parameter")
            patches[offset] = data
    return patches


def unrecordable(flags: Mapping[str, list[Flag]]) -> frozenset[str]:
    """Parameters whose file records no requires_grad at all: torch.load gives them False, always."""
    return frozenset(name for name, sites in flags.items() if sites and all(s.fixed for s in sites))


def flags_to_json(flags: Mapping[str, list[Flag]]) -> dict[str, list[list[Any]]]:
    """The flag sites as JSON (name -> [[offset, text form, value, shared, fixed], ...]), stored."""
    return {name: [[f.pos, f.text, f.value, f.shared, f.fixed] for f in sites]
            for name, sites in flags.items()}


def flags_from_json(doc: Mapping[str, Any]) -> dict[str, list[Flag]]:
    return {str(name): [Flag(bool(value), int(pos), bool(text), bool(shared), bool(fixed))
                        for pos, text, value, shared, fixed in sites]
            for name, sites in doc.items()}
