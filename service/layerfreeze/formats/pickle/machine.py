"""A symbolic pickle machine: runs the opcode stream over inert nodes, never importing or calling anything.

    root = PickleMachine(limits).run(reader)      # reader: a bounded binary file positioned at the pickle

Opcodes come from ``pickletools.genops`` (with their file offsets); the stack, the MARK stack and the memo
behave as in the real unpickler, so shared objects stay shared (tied parameters keep one identity).
Calls (REDUCE, INST, OBJ) go through ``policy.call_kind``; everything else a call could do is refused.
"""

from __future__ import annotations

import pickletools
from collections.abc import Callable
from typing import Any, BinaryIO

from layerfreeze.errors import LimitExceeded, PickleFormatError, UnsafePickleError
from layerfreeze.formats.pickle import policy
from layerfreeze.formats.pickle.calls import SymbolicCalls, hashable_key
from layerfreeze.formats.pickle.depth import DepthTracker, check_depth
from layerfreeze.formats.pickle.nodes import (
    Flag,
    Global,
    Obj,
    Opaque,
    OrderedDictNode,
    StorageRef,
)
from layerfreeze.formats.pickle.storages import StorageIds
from layerfreeze.limits import ReadLimits

DEFAULT_LIMITS = ReadLimits()

_PUSH_VALUE = frozenset(
    {"BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING", "SHORT_BINSTRING",
     "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
     "FLOAT", "BINFLOAT", "BYTEARRAY8"}
)

class PickleMachine(SymbolicCalls):
    """``storage_format`` is how torch will read the persistent ids: "zip" (``torch.save`` archives and
    TorchScript: ``('storage', type, key, location, numel)``), "legacy" (the same plus a view record),
    or None for either."""

    def __init__(self, limits: ReadLimits = DEFAULT_LIMITS, storage_format: str | None = None) -> None:
        self.limits = limits
        self.storage_ids = StorageIds(storage_format)
        self.ops = 0  # opcodes run so far, plus the items calls iterate over (see ``charge``)
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.pos = 0
        self.storages: list[StorageRef] = []
        self.depths = DepthTracker(limits.max_pickle_depth)
        self._ops: dict[str, Callable[[Any], None]] = {
            name[3:]: getattr(self, name) for name in dir(self) if name.startswith("op_")
        }

    # -- driver -------------------------------------------------------------------------------------
    def run(self, reader: BinaryIO, start: int = 0) -> Any:
        """Execute one pickle (up to STOP) from ``reader`` and return its symbolic value."""
        max_ops = self.limits.max_pickle_ops
        max_stack = self.limits.max_pickle_stack
        handlers = self._ops
        try:
            for op, arg, raw_pos in pickletools.genops(reader):
                self.ops += 1
                if self.ops > max_ops:
                    raise LimitExceeded(f"pickle has more than {max_ops} opcodes", limit="max_pickle_ops",
                                        maximum=max_ops)
                name = op.name
                self.pos = pos = (raw_pos or 0) + start
                if len(self.stack) >= max_stack:
                    raise LimitExceeded(
                        f"pickle piles up more than {max_stack} values on its stack at byte {pos}",
                        limit="max_pickle_stack", maximum=max_stack,
                    )
                if name in _PUSH_VALUE:  # the hot path: plain values
                    self.stack.append(arg)
                    continue
                if name == "STOP":
                    if len(self.stack) != 1 or self.metastack:
                        raise PickleFormatError(f"pickle ends at byte {pos} with a malformed stack",
                                                offset=pos)
                    check_depth(self.stack[-1], self.limits.max_pickle_depth, pos)
                    return self.stack.pop()
                handler = handlers.get(name)
                if handler is None:
                    raise UnsafePickleError(
                        f"pickle uses opcode {name} at byte {pos}; a checkpoint never needs it",
                        global_name=None, offset=pos,
                    )
                try:
                    handler(arg)
                except (IndexError, KeyError, TypeError, ValueError, AttributeError) as exc:
                    raise PickleFormatError(
                        f"malformed pickle at byte {pos} ({name}): {type(exc).__name__}", offset=pos
                    ) from exc
        except (ValueError, EOFError, UnicodeDecodeError, OverflowError, MemoryError) as exc:
            # raised by the opcode reader itself (our handlers' errors are converted above)
            where = _tell(reader) + start
            raise PickleFormatError(f"malformed pickle near byte {where}: {exc}", offset=where) from exc
        raise PickleFormatError(f"pickle ends at byte {self.pos} without STOP", offset=self.pos)

    def charge(self, items: int) -> None:
        """Count the items a call walks against ``max_pickle_ops``: one opcode can apply a call to a
        memoized container of any size, again and again, so walking it must cost as much as building it."""
        self.ops += items
        if self.ops > self.limits.max_pickle_ops:
            raise LimitExceeded(f"pickle does more than {self.limits.max_pickle_ops} steps of work",
                                limit="max_pickle_ops", maximum=self.limits.max_pickle_ops)

    # -- stack helpers -------------------------------------------------------------------------------
    def push(self, value: Any) -> None:
        self.stack.append(value)

    def pop(self) -> Any:
        if not self.stack:
            raise PickleFormatError(f"pickle pops an empty stack at byte {self.pos}", offset=self.pos)
        return self.stack.pop()

    def pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise PickleFormatError(f"pickle has no MARK to close at byte {self.pos}", offset=self.pos)
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    # -- framing, marks, memo ------------------------------------------------------------------------
    def op_PROTO(self, arg: Any) -> None:
        if not 0 <= arg <= 5:
            raise PickleFormatError(f"unsupported pickle protocol {arg} at byte {self.pos}", offset=self.pos)

    def op_FRAME(self, arg: Any) -> None:
        pass

    def op_MARK(self, arg: Any) -> None:
        if len(self.metastack) >= self.limits.max_pickle_depth:
            raise LimitExceeded(
                f"pickle nests deeper than {self.limits.max_pickle_depth} at byte {self.pos}",
                limit="max_pickle_depth", maximum=self.limits.max_pickle_depth,
            )
        self.metastack.append(self.stack)
        self.stack = []

    def op_POP(self, arg: Any) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self.pop_mark()

    def op_POP_MARK(self, arg: Any) -> None:
        self.pop_mark()

    def op_DUP(self, arg: Any) -> None:
        _mark_shared(self.stack[-1])
        self.push(self.stack[-1])

    def _memo_put(self, index: int) -> None:
        if index < 0:
            raise PickleFormatError(f"negative memo index at byte {self.pos}", offset=self.pos)
        _mark_shared(self.stack[-1])
        self.memo[index] = self.stack[-1]

    def op_PUT(self, arg: Any) -> None:
        self._memo_put(int(arg))

    op_BINPUT = op_LONG_BINPUT = op_PUT

    def op_MEMOIZE(self, arg: Any) -> None:
        self._memo_put(len(self.memo))

    def op_GET(self, arg: Any) -> None:
        index = int(arg)
        if index not in self.memo:
            raise PickleFormatError(f"pickle reads memo {index} before writing it, at byte {self.pos}",
                                    offset=self.pos)
        self.push(self.memo[index])

    op_BINGET = op_LONG_BINGET = op_GET

    # -- values ---------------------------------------------------------------------------------------
    def op_NONE(self, arg: Any) -> None:
        self.push(None)

    def op_NEWTRUE(self, arg: Any) -> None:
        self.push(Flag(True, self.pos))

    def op_NEWFALSE(self, arg: Any) -> None:
        self.push(Flag(False, self.pos))

    def op_INT(self, arg: Any) -> None:
        self.push(Flag(arg, self.pos, text=True) if isinstance(arg, bool) else arg)

    # -- containers -----------------------------------------------------------------------------------
    def op_EMPTY_LIST(self, arg: Any) -> None:
        self.push([])

    def op_EMPTY_TUPLE(self, arg: Any) -> None:
        self.push(())

    def op_EMPTY_DICT(self, arg: Any) -> None:
        self.push({})

    def op_EMPTY_SET(self, arg: Any) -> None:
        self.push(set())

    def _push_built(self, container: Any, items: Any) -> None:
        self.depths.nest(container, items, self.pos)
        self.push(container)

    def op_LIST(self, arg: Any) -> None:
        items = self.pop_mark()
        self._push_built(items, items)

    def op_TUPLE(self, arg: Any) -> None:
        items = tuple(self.pop_mark())
        self._push_built(items, items)

    def op_TUPLE1(self, arg: Any) -> None:
        items = (self.pop(),)
        self._push_built(items, items)

    def op_TUPLE2(self, arg: Any) -> None:
        b, a = self.pop(), self.pop()
        self._push_built((a, b), (a, b))

    def op_TUPLE3(self, arg: Any) -> None:
        c, b, a = self.pop(), self.pop(), self.pop()
        self._push_built((a, b, c), (a, b, c))

    def op_DICT(self, arg: Any) -> None:
        items = self.pop_mark()
        self._push_built({hashable_key(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}, items)

    def op_FROZENSET(self, arg: Any) -> None:
        items = self.pop_mark()
        self._push_built(frozenset(hashable_key(x) for x in items), items)

    def op_APPEND(self, arg: Any) -> None:
        value = self.pop()
        _extend(self.stack[-1], [value], self.pos)
        self.depths.nest(self.stack[-1], (value,), self.pos)

    def op_APPENDS(self, arg: Any) -> None:
        items = self.pop_mark()
        _extend(self.stack[-1], items, self.pos)
        self.depths.nest(self.stack[-1], items, self.pos)

    def op_SETITEM(self, arg: Any) -> None:
        value, key = self.pop(), self.pop()
        _setitems(self.stack[-1], [key, value], self.pos)
        self.depths.nest(self.stack[-1], (key, value), self.pos)

    def op_SETITEMS(self, arg: Any) -> None:
        items = self.pop_mark()
        _setitems(self.stack[-1], items, self.pos)
        self.depths.nest(self.stack[-1], items, self.pos)

    def op_ADDITEMS(self, arg: Any) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if not isinstance(target, set):
            raise PickleFormatError(f"ADDITEMS on a non-set at byte {self.pos}", offset=self.pos)
        target.update(hashable_key(x) for x in items)
        self.depths.nest(target, items, self.pos)

    # -- names and objects ----------------------------------------------------------------------------
    def _global(self, module: Any, name: Any) -> None:
        if not isinstance(module, str) or not isinstance(name, str):
            raise UnsafePickleError(
                f"pickle builds a global name from computed values at byte {self.pos}",
                global_name=None, offset=self.pos,
            )
        policy.check_global(module, name, self.pos)
        self.push(Global(module, name, self.pos))

    def op_GLOBAL(self, arg: Any) -> None:
        module, _, name = str(arg).partition(" ")
        self._global(module, name)

    def op_STACK_GLOBAL(self, arg: Any) -> None:
        name, module = self.pop(), self.pop()
        self._global(module, name)

    def op_PERSID(self, arg: Any) -> None:
        self.push(self._persistent(arg))

    def op_BINPERSID(self, arg: Any) -> None:
        self.push(self._persistent(self.pop()))

    def _persistent(self, pid: Any) -> Any:
        # The legacy (non-zip) format records each nn.Module class as ``('module', <class global>,
        # source file, source code)``; torch's loader answers with the class itself. The class is
        # already a checked name (its GLOBAL went through the policy); the source is never looked at.
        if (isinstance(pid, tuple) and len(pid) == 4 and pid[0] == "module"
                and isinstance(pid[1], Global)):
            return pid[1]
        return self._storage(pid)

    def _storage(self, pid: Any) -> StorageRef:
        ref = self.storage_ids.resolve(pid, self.pos)
        self.storages.append(ref)
        return ref

    def op_NEWOBJ(self, arg: Any) -> None:
        args, cls = self.pop(), self.pop()
        self.push(self._new(cls, args, {}))

    def op_NEWOBJ_EX(self, arg: Any) -> None:
        kwargs, args, cls = self.pop(), self.pop(), self.pop()
        self.push(self._new(cls, args, kwargs))

    def _new(self, cls: Any, args: Any, kwargs: Any) -> Obj:
        if not isinstance(cls, Global):
            raise UnsafePickleError(f"pickle constructs a computed class at byte {self.pos}",
                                    global_name=None, offset=self.pos)
        if args != () or kwargs != {}:
            raise UnsafePickleError(
                f"pickle constructs {cls.qualname} with arguments at byte {self.pos}; checkpoint classes "
                "are rebuilt from their state only", global_name=cls.qualname, offset=self.pos,
            )
        return Obj(cls, self.pos)

    def op_REDUCE(self, arg: Any) -> None:
        args, func = self.pop(), self.pop()
        result = self._call(func, args)
        self.depths.nest(result, (args,), self.pos)
        self.push(result)

    def op_OBJ(self, arg: Any) -> None:
        items = self.pop_mark()
        if not items:
            raise PickleFormatError(f"OBJ without a class at byte {self.pos}", offset=self.pos)
        self.push(self._call(items[0], tuple(items[1:])))

    def op_INST(self, arg: Any) -> None:
        module, _, name = str(arg).partition(" ")
        self._global(module, name)
        func = self.pop()
        self.push(self._call(func, tuple(self.pop_mark())))

    def op_BUILD(self, arg: Any) -> None:
        state = self.pop()
        target = self.stack[-1]
        self.depths.nest(target, (state,), self.pos)
        if isinstance(target, Obj):
            if target.state is not None:
                raise PickleFormatError(f"object state set twice at byte {self.pos}", offset=self.pos)
            target.state = state
        elif isinstance(target, Opaque):
            target.state = state
        elif isinstance(target, OrderedDictNode) and isinstance(state, dict):
            target.attrs.update({k: v for k, v in state.items() if isinstance(k, str)})
        else:
            raise UnsafePickleError(
                f"pickle sets state on {type(target).__name__} at byte {self.pos}; a checkpoint never "
                "needs that",
                global_name=None, offset=self.pos,
            )


def _mark_shared(value: Any) -> None:
    if isinstance(value, Flag):
        value.shared = True


def _extend(target: Any, items: list[Any], pos: int) -> None:
    if isinstance(target, list):
        target.extend(items)
    elif isinstance(target, Obj):
        target.items.extend(items)
    else:
        raise PickleFormatError(f"APPEND to a {type(target).__name__} at byte {pos}", offset=pos)


def _setitems(target: Any, items: list[Any], pos: int) -> None:
    if len(items) % 2:
        raise PickleFormatError(f"SETITEMS with an odd number of items at byte {pos}", offset=pos)
    if isinstance(target, dict):
        for i in range(0, len(items), 2):
            target[hashable_key(items[i])] = items[i + 1]
    elif isinstance(target, Obj):
        target.items.extend(zip(items[::2], items[1::2], strict=False))
    else:
        raise PickleFormatError(f"SETITEM on a {type(target).__name__} at byte {pos}", offset=pos)


def _tell(reader: BinaryIO) -> int:
    try:
        return reader.tell()
    except (OSError, ValueError):
        return 0
