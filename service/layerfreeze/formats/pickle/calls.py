"""Symbolic versions of the few calls a checkpoint pickle may make (see ``policy.ALLOWED_CALLS``).

Each returns an inert node or plain data instead of running anything: ``_rebuild_tensor_v2`` becomes a
TensorNode, ``OrderedDict()`` an OrderedDictNode, ``copyreg._reconstructor`` an opaque Obj, and so on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from layerfreeze.errors import AmbiguousCheckpoint, PickleFormatError, UnsafePickleError
from layerfreeze.formats.dtypes import storage_dtype
from layerfreeze.formats.pickle import policy
from layerfreeze.formats.pickle.nodes import (
    Flag,
    Global,
    Obj,
    Opaque,
    OrderedDictNode,
    ParamNode,
    StorageRef,
    TensorNode,
)
from layerfreeze.formats.pickle.tensor_state import state_flag


class SymbolicCalls:
    """Mixed into the machine: ``pos`` is the offset of the opcode being executed."""

    pos: int = 0

    def charge(self, items: int) -> None:  # the machine counts this work against max_pickle_ops
        raise NotImplementedError

    def _call(self, func: Any, args: Any) -> Any:
        if not isinstance(func, Global):
            raise UnsafePickleError(f"pickle calls a computed value at byte {self.pos}; a checkpoint never "
                                    "needs that", global_name=None, offset=self.pos)
        kind = policy.call_kind(func.qualname, self.pos)
        if not isinstance(args, tuple):
            raise PickleFormatError(f"call arguments are not a tuple at byte {self.pos}", offset=self.pos)
        return _CALLS[kind](self, func, args)

    # -- symbolic versions of the allowlisted calls ---------------------------------------------------
    def _call_ordered_dict(self, func: Global, args: tuple[Any, ...]) -> Any:
        node = OrderedDictNode(self.pos)
        if args:
            self.charge(len(args[0]))
            for pair in args[0]:
                node[hashable_key(pair[0])] = pair[1]
        return node

    def _call_set(self, func: Global, args: tuple[Any, ...]) -> Any:
        items = args[0] if args else ()
        self.charge(len(items))
        members = [hashable_key(x) for x in items]
        return set(members) if func.name == "set" else frozenset(members)

    def _call_bytearray(self, func: Global, args: tuple[Any, ...]) -> Any:
        self.charge(len(args[0]) // 64 if args else 0)
        return _call_encode(self, func, args) if len(args) == 2 else bytes(args[0] if args else b"")

    def _call_opaque(self, func: Global, args: tuple[Any, ...]) -> Any:
        return Opaque(func, args, self.pos)

    def _call_first(self, func: Global, args: tuple[Any, ...]) -> Any:
        if not args:
            raise PickleFormatError(f"{func.qualname} without arguments at byte {self.pos}", offset=self.pos)
        return args[0]

    def _call_size(self, func: Global, args: tuple[Any, ...]) -> Any:
        return tuple(_ints(args[0], self.pos)) if args else ()

    def _call_tensor(self, func: Global, args: tuple[Any, ...]) -> Any:
        if func.name == "_rebuild_tensor":
            # The oldest rebuilder, (storage, offset, size, stride): no requires_grad argument, so torch
            # gives requires_grad=False and there is no byte that could record anything else.
            if len(args) != 4 or not isinstance(args[0], StorageRef):
                raise PickleFormatError(f"unsupported tensor record at byte {self.pos}", offset=self.pos)
            args = (*args, Flag(False, self.pos, fixed=True), None)
        counts = (7, 8) if func.name == "_rebuild_tensor_v3" else (6, 7)  # torch's own signatures
        if len(args) not in counts or not isinstance(args[0], StorageRef) or not isinstance(args[4], Flag):
            raise PickleFormatError(f"unsupported tensor record at byte {self.pos}", offset=self.pos)
        offset = args[1]
        shape, stride = _ints(args[2], self.pos), _ints(args[3], self.pos)
        if type(offset) is not int or offset < 0 or len(shape) != len(stride):
            raise PickleFormatError(f"invalid tensor geometry at byte {self.pos}", offset=self.pos)
        dtype: str = args[0].dtype
        if func.name == "_rebuild_tensor_v3":
            named = args[6] if len(args) > 6 and isinstance(args[6], Global) else None
            named_dtype = storage_dtype(named.module, named.name) if named is not None else None
            if named_dtype is None or named_dtype == "untyped":
                raise PickleFormatError(f"tensor record without a known dtype at byte {self.pos}",
                                        offset=self.pos)
            dtype = named_dtype
        elif dtype == "untyped":
            raise PickleFormatError(f"untyped storage without a dtype at byte {self.pos}", offset=self.pos)
        return TensorNode(args[0], offset, shape, stride, args[4], self.pos, dtype)

    def _call_parameter(self, func: Global, args: tuple[Any, ...]) -> Any:
        with_state = func.name == "_rebuild_parameter_with_state"
        if (len(args) != (4 if with_state else 3) or not isinstance(args[0], TensorNode)
                or not isinstance(args[1], Flag)):
            raise PickleFormatError(f"unsupported parameter record at byte {self.pos}", offset=self.pos)
        node = ParamNode(args[0], args[1], self.pos)
        if with_state:
            _apply_state(node, args[3], self.pos, self)
        return node

    def _call_from_type(self, func: Global, args: tuple[Any, ...]) -> Any:
        # _rebuild_from_type_v2(func, new_type, args, state): ``func(*args)``, cast to new_type, then the
        # state applied with setattr. torch.save writes it for a plain tensor that has a __dict__.
        if (len(args) != 4 or not isinstance(args[0], Global) or not isinstance(args[1], Global)
                or not isinstance(args[2], tuple)):
            raise PickleFormatError(f"unsupported tensor subclass record at byte {self.pos}", offset=self.pos)
        if args[1].qualname not in ("torch.Tensor", "torch.nn.parameter.Parameter"):
            raise UnsafePickleError(
                f"pickle rebuilds a tensor as {args[1].qualname} at byte {self.pos}; a checkpoint never "
                "needs that", global_name=args[1].qualname, offset=self.pos,
            )
        result = self._call(args[0], args[2])
        wanted = ParamNode if args[1].qualname == "torch.nn.parameter.Parameter" else TensorNode
        if type(result) is not wanted:
            raise AmbiguousCheckpoint(
                f"pickle rebuilds a tensor with {args[0].qualname} and casts it to {args[1].qualname} at "
                f"byte {self.pos}; torch.save never writes that: refused as ambiguous",
                ambiguity="pickled-state", offset=self.pos)
        _apply_state(result, args[3], self.pos, self)
        return result

    def _call_encode(self, func: Global, args: tuple[Any, ...]) -> Any:
        self.charge(len(args[0]) // 64 if args and isinstance(args[0], str) else 0)
        return _call_encode(self, func, args)

    def _call_reconstructor(self, func: Global, args: tuple[Any, ...]) -> Any:
        # copyreg._reconstructor(cls, object, None) is object.__new__(cls): an opaque record.
        if (len(args) != 3 or not isinstance(args[0], Global) or not isinstance(args[1], Global)
                or args[1].qualname not in ("builtins.object", "__builtin__.object") or args[2] is not None):
            raise UnsafePickleError(f"pickle reconstructs an object through a base class at byte {self.pos}",
                                    global_name=func.qualname, offset=self.pos)
        return Obj(args[0], self.pos)


def _call_encode(machine: SymbolicCalls, func: Global, args: tuple[Any, ...]) -> bytes:
    # _codecs.encode(text, "latin1") is how protocol 2 pickles bytes.
    if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"pickle encodes with unexpected arguments at byte {machine.pos}",
                                global_name=func.qualname, offset=machine.pos)
    return args[0].encode("latin1")


_CALLS: dict[str, Callable[[SymbolicCalls, Global, tuple[Any, ...]], Any]] = {
    "ordered_dict": SymbolicCalls._call_ordered_dict,
    "set": SymbolicCalls._call_set,
    "frozenset": SymbolicCalls._call_set,
    "bytearray": SymbolicCalls._call_bytearray,
    "opaque": SymbolicCalls._call_opaque,
    "size": SymbolicCalls._call_size,
    "first": SymbolicCalls._call_first,
    "tensor": SymbolicCalls._call_tensor,
    "parameter": SymbolicCalls._call_parameter,
    "from_type": SymbolicCalls._call_from_type,
    "encode": SymbolicCalls._call_encode,
    "reconstructor": SymbolicCalls._call_reconstructor,
}


def _apply_state(node: TensorNode | ParamNode, state: Any, pos: int, calls: SymbolicCalls) -> None:
    """What ``_set_obj_state`` does to the flag: a state's ``requires_grad`` is the one torch keeps."""
    calls.charge(sum(len(part) for part in (state if isinstance(state, tuple) else (state,))
                     if isinstance(part, dict)))
    flag = state_flag(state, pos)
    if flag is not None and flag is not node.flag:
        node.overridden.append(node.flag)
        node.flag = flag


# A dict key or set member must hash in bounded time: hashing a tuple visits every node below it, and
# the memo lets a 100-byte pickle build a tuple DAG of 2**60 nodes. Real checkpoints key by strings,
# numbers and small tuples of them.
MAX_KEY_NODES = 64
MAX_TENSOR_RANK = 64  # torch's own limit on dimensions


def hashable_key(value: Any) -> Any:
    """A dict key / set member; a Flag (a bool in the real pickle) keys by its value."""
    if isinstance(value, Flag):
        return value.value
    if isinstance(value, tuple):
        _check_key_size(value)
    hash(value)  # TypeError for unhashable keys, as the real unpickler
    return value


def _check_key_size(value: tuple[Any, ...]) -> None:
    count = 0
    todo: list[Any] = [value]
    while todo:
        item = todo.pop()
        count += 1
        if count > MAX_KEY_NODES:
            raise PickleFormatError(f"pickle uses a tuple of more than {MAX_KEY_NODES} values as a dict key "
                                    "or set member; a checkpoint never needs that")
        if isinstance(item, tuple):
            todo.extend(item)
        elif isinstance(item, frozenset):
            count += len(item)


def _ints(value: Any, pos: int) -> tuple[int, ...]:
    if (not isinstance(value, tuple) or len(value) > MAX_TENSOR_RANK
            or not all(type(v) is int and v >= 0 for v in value)):
        raise PickleFormatError(f"expected a tuple of at most {MAX_TENSOR_RANK} sizes at byte {pos}",
                                offset=pos)
    return value

