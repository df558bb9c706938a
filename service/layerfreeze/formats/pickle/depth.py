"""Bounding how deeply a pickle nests its values (``ReadLimits.max_pickle_depth``).

MARK nesting is bounded by the machine directly. Containers can also nest without a single MARK
(``EMPTY_LIST`` ... ``APPEND``), so the machine records each container's depth as values go into it and
refuses when it passes the limit; ``check_depth`` walks the finished tree once more (iteratively), which
also catches nesting built backwards through the memo.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from layerfreeze.errors import LimitExceeded
from layerfreeze.formats.pickle.nodes import Obj, Opaque, OrderedDictNode

_CONTAINERS = (list, tuple, dict, set, frozenset, Obj, Opaque)


def _too_deep(limit: int, pos: int) -> LimitExceeded:
    return LimitExceeded(f"pickle nests values deeper than {limit} (at byte {pos})",
                         limit="max_pickle_depth", maximum=limit)


class DepthTracker:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._depths: dict[int, tuple[Any, int]] = {}  # id -> (the object, kept alive; its depth)

    def depth(self, value: Any) -> int:
        entry = self._depths.get(id(value))
        return entry[1] if entry is not None and entry[0] is value else 0

    def nest(self, container: Any, children: Iterable[Any], pos: int) -> None:
        """``children`` went into ``container``: it is now at least one deeper than the deepest."""
        deepest = 0
        for child in children:
            if isinstance(child, _CONTAINERS):
                deepest = max(deepest, self.depth(child))
        depth = deepest + 1
        if depth > self.depth(container):
            if depth > self.limit:
                raise _too_deep(self.limit, pos)
            self._depths[id(container)] = (container, depth)


def _children(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        yield from value.keys()
        yield from value.values()
        if isinstance(value, OrderedDictNode):
            yield from value.attrs.values()
    elif isinstance(value, (list, tuple, set, frozenset)):
        yield from value
    elif isinstance(value, Obj):
        yield value.state
        yield from value.items
    elif isinstance(value, Opaque):
        yield value.args
        yield value.state


def check_depth(root: Any, limit: int, pos: int) -> None:
    """Walk the finished value once, without recursion; refuse nesting deeper than ``limit``."""
    seen: set[int] = set()
    todo: list[tuple[Any, int]] = [(root, 1)]
    while todo:
        value, depth = todo.pop()
        if not isinstance(value, _CONTAINERS) or id(value) in seen:
            continue
        if depth > limit:
            raise _too_deep(limit, pos)
        seen.add(id(value))
        todo.extend((child, depth + 1) for child in _children(value))
