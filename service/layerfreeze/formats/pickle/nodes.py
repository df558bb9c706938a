"""Inert values the symbolic pickle machine builds instead of Python objects.

Plain data (int, str, bytes, float, None, tuple, list, dict, set) is kept as Python values; everything that
the real unpickler would import or call becomes one of these nodes. Nodes compare by identity, exactly
like the objects a pickle memo shares, so tied tensors stay recognisable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False, slots=True)
class Global:
    """A name a pickle refers to (GLOBAL / STACK_GLOBAL). Never imported."""

    module: str
    name: str
    pos: int

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(eq=False, slots=True)
class Flag:
    """A boolean whose bytes we may rewrite in place: NEWTRUE/NEWFALSE (one byte) or ``I01\\n``/``I00\\n``."""

    value: bool
    pos: int  # file offset of the opcode
    text: bool = False  # protocol 0/1 INT form
    shared: bool = False  # also reachable through the memo or DUP: its bytes stand for other values too
    fixed: bool = False  # no bytes at all: a rebuilder without a requires_grad argument (always False)

    def patch(self, value: bool) -> tuple[int, bytes]:
        """(file offset, replacement bytes) that make this flag ``value``; same length as before."""
        if self.fixed:
            raise ValueError("a fixed flag has no bytes to patch")
        if self.text:
            return self.pos + 2, b"1" if value else b"0"
        return self.pos, b"\x88" if value else b"\x89"


@dataclass(eq=False, slots=True)
class StorageRef:
    """A persistent id naming a tensor storage (``('storage', type, key, location, numel, ...)``)."""

    key: str
    dtype: str
    location: str
    numel: int
    pos: int
    view_offset: int = 0  # legacy files may name a view (key, offset, size) of the root storage
    view_numel: int | None = None

    def span(self) -> tuple[int, int]:
        """(first element, element count) of the bytes this reference covers in the root storage."""
        return self.view_offset, self.numel if self.view_numel is None else self.view_numel


@dataclass(eq=False, slots=True)
class TensorNode:
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`` (or v3,
    which adds the dtype for storages saved untyped)."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    flag: Flag  # the requires_grad torch ends with
    pos: int
    dtype: str = ""  # the tensor's dtype: the storage's, or the one _rebuild_tensor_v3 names
    overridden: list[Flag] = field(default_factory=list)  # earlier flags a pickled state overrode

    def __post_init__(self) -> None:
        if not self.dtype:
            self.dtype = self.storage.dtype

    @property
    def sites(self) -> list[Flag]:
        """Every flag that must change together to change this tensor's requires_grad."""
        return [self.flag, *self.overridden]


@dataclass(eq=False, slots=True)
class ParamNode:
    """``torch._utils._rebuild_parameter(tensor, requires_grad, hooks)``; the outer flag is its own."""

    tensor: TensorNode
    flag: Flag  # the requires_grad torch ends with
    pos: int
    overridden: list[Flag] = field(default_factory=list)

    @property
    def sites(self) -> list[Flag]:
        return [self.flag, *self.overridden]


@dataclass(eq=False, slots=True)
class Obj:
    """An instance of a class built without calling it (NEWOBJ with no arguments, or
    ``copyreg._reconstructor``), with the state BUILD gave it and items SETITEM(S)/APPEND(S) added."""

    cls: Global
    pos: int
    state: Any = None
    items: list[Any] = field(default_factory=list)

    @property
    def type_name(self) -> str:
        return self.cls.qualname


@dataclass(eq=False, slots=True)
class Opaque:
    """The result of an allowlisted call we do not need to interpret (torch.device, numpy scalars, ...)."""

    func: Global
    args: Any
    pos: int
    state: Any = None  # what BUILD gave it (numpy arrays and dtypes carry their data this way)


class OrderedDictNode(dict):  # type: ignore[type-arg]
    """``collections.OrderedDict``: a dict plus the attributes BUILD set on it (``_metadata``)."""

    __slots__ = ("attrs", "pos")

    def __init__(self, pos: int) -> None:
        super().__init__()
        self.attrs: dict[str, Any] = {}
        self.pos = pos

    __hash__ = object.__hash__  # type: ignore[assignment]
