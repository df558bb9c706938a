"""Definition order where a file does not record it.

``children`` and ``until`` depend on the order modules were defined in. Torch archives keep it (pickle and
state-dict order is ``named_parameters()`` order); safetensors stores tensors sorted by name, so ``10``
comes before ``2`` and ``wte`` after ``h``. Children of a ``Sequential`` or ``ModuleList`` are named by their
index, so their order (and even the positions of parameter-less children) follows from the names; any
other order is unknown, and a rule that depends on it is reported as a problem, never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence

UNORDERED_FORMATS = frozenset({"safetensors"})


def order_known(fmt: str) -> bool:
    return fmt not in UNORDERED_FORMATS


def is_index(name: str) -> bool:
    return name.isascii() and name.isdigit()


def indexed_children(children: Sequence[str]) -> list[str] | None:
    """``list(module.children())`` by index for index-named children (``Sequential``, ``ModuleList``):
    positions 0..max, parameter-less children included by their index. None for named children."""
    if children and all(is_index(c) for c in children):
        return [str(i) for i in range(max(int(c) for c in children) + 1)]
    return None


def until_by_names(path: str, names: Sequence[tuple[str, ...]]) -> tuple[list[bool], str | None]:
    """``until`` without recorded order: at each level of ``path``, the parameters of the enclosing
    module come first, then the earlier siblings by index. Returns the selection mask and, when some
    level has named siblings holding parameters (order unknown), a description of that level instead."""
    segs = path.split(".")
    split = [[name.split(".") for name in group] for group in names]
    for i, seg in enumerate(segs):
        parent = segs[:i]
        siblings = {ns[i] for group in split for ns in group
                    if len(ns) > i + 1 and ns[:i] == parent and ns[i] != seg}
        if siblings and not (is_index(seg) and all(is_index(s) for s in siblings)):
            where = ".".join(parent) or "the model"
            listed = ", ".join(sorted(siblings | {seg}))
            return [False] * len(names), f"the children of {where} ({listed}) are named, not numbered"
    if any(ns == segs for group in split for ns in group):  # ``path`` is a parameter: its siblings'
        parent, last = segs[:-1], len(segs) - 1  # order inside the module is not recorded either
        params = {ns[last] for group in split for ns in group if len(ns) == len(segs) and ns[:last] == parent}
        if len(params) > 1:
            where = ".".join(parent) or "the model"
            listed = ", ".join(sorted(params))
            return [False] * len(names), f"the order of the parameters of {where} ({listed}) is not recorded"

    def before(ns: list[str]) -> bool:
        if ns[: len(segs)] == segs:
            return True  # the module itself and everything in it (or the parameter itself)
        for i, seg in enumerate(segs):
            if ns[:i] != segs[:i]:
                return False
            if len(ns) == i + 1:
                return True  # a parameter of an enclosing module: registered before its children
            if ns[i] != seg:
                return is_index(ns[i]) and is_index(seg) and int(ns[i]) < int(seg)
        return False

    return [any(before(ns) for ns in group) for group in split], None


def natural_key(path: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that puts ``2`` before ``10`` and a module before what it contains."""
    if not path:
        return ()
    return tuple((0, int(seg)) if is_index(seg) else (1, seg) for seg in path.split("."))
