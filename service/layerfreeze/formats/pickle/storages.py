"""Storage persistent ids, checked the way torch resolves them.

``('storage', <storage type or dtype global>, key, location, numel)`` in zip archives, plus a sixth
``view`` item (``None`` or ``(view key, offset, size)``) in the legacy format. torch fixes a storage's
dtype, size and device by the *first* persistent id that names its key and ignores what later ones say,
so a key named twice differently (or a view key that reuses a storage key) is refused, never guessed.
"""

from __future__ import annotations

from typing import Any

from layerfreeze.errors import AmbiguousCheckpoint, PickleFormatError
from layerfreeze.formats.dtypes import storage_dtype
from layerfreeze.formats.pickle.nodes import Global, StorageRef


class StorageIds:
    """``storage_format``: "zip" (5 items), "legacy" (6 items) or None (either)."""

    def __init__(self, storage_format: str | None = None) -> None:
        self.storage_format = storage_format
        self.named: dict[str, StorageRef] = {}  # key -> the first persistent id naming it
        self.views: dict[str, tuple[str, int, int]] = {}  # legacy view key -> (root key, offset, size)

    def resolve(self, pid: Any, pos: int) -> StorageRef:
        """The storage a persistent id names (a new StorageRef per reference, checked against the first)."""
        sizes = {"zip": (5,), "legacy": (6,)}.get(self.storage_format or "", (5, 6))
        if (not isinstance(pid, tuple) or len(pid) not in sizes or pid[0] != "storage"
                or not isinstance(pid[1], Global) or not isinstance(pid[2], str)
                or not isinstance(pid[3], str) or type(pid[4]) is not int or pid[4] < 0):
            raise PickleFormatError(f"unsupported persistent id at byte {pos}", offset=pos)
        dtype = storage_dtype(pid[1].module, pid[1].name)
        if dtype is None:
            raise PickleFormatError(f"unknown storage type {pid[1].qualname} at byte {pos}", offset=pos)
        ref = StorageRef(pid[2], dtype, pid[3], pid[4], pos)
        self._check_same_storage(ref, pos)
        view = pid[5] if len(pid) == 6 else None
        if view is not None:  # (view key, offset, size): old legacy files saving storage views
            if (not isinstance(view, tuple) or len(view) != 3 or not isinstance(view[0], str)
                    or type(view[1]) is not int or type(view[2]) is not int or view[1] < 0 or view[2] < 0
                    or view[1] + view[2] > pid[4]):
                raise PickleFormatError(f"invalid storage view at byte {pos}", offset=pos)
            self._check_same_view(view[0], (ref.key, view[1], view[2]), pos)
            ref.view_offset, ref.view_numel = view[1], view[2]
        return ref

    def _check_same_storage(self, ref: StorageRef, pos: int) -> None:
        first = self.named.setdefault(ref.key, ref)
        if ref.key in self.views:
            raise _ambiguity(f"storage key {ref.key!r} also names a storage view", pos)
        if (first.dtype, first.numel, first.location) != (ref.dtype, ref.numel, ref.location):
            raise _ambiguity(
                f"storage {ref.key!r} is named as {first.numel} x {first.dtype} on {first.location!r} "
                f"(byte {first.pos}) and as {ref.numel} x {ref.dtype} on {ref.location!r}; torch keeps the "
                "first", pos)

    def _check_same_view(self, key: str, view: tuple[str, int, int], pos: int) -> None:
        if self.views.setdefault(key, view) != view or key in self.named:
            raise _ambiguity(f"storage view key {key!r} is named twice differently", pos)


def _ambiguity(what: str, pos: int) -> AmbiguousCheckpoint:
    return AmbiguousCheckpoint(f"{what} (byte {pos}): refused as ambiguous", ambiguity="storage-reuse",
                               offset=pos)
