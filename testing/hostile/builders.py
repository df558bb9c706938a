"""Small hostile pickles and containers for focused tests, made at test time (never checked in)."""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path
from typing import Any

from testing.hostile.asm import Asm
from testing.hostile.zips import torch_zip

__all__ = ["ResolvesName", "RunsCommand", "getattr_chain_pickle", "pickle_bytes", "protocol0_inst_pickle",
           "safetensors_bytes", "stack_global_pickle", "zip_with_data_pkl"]


class RunsCommand:
    """Unpickling this runs ``touch <marker>`` through os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class ResolvesName:
    """``pkgutil.resolve_name('os:system')(cmd)``: the picklescan bypass, as a two-step REDUCE."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        import pkgutil

        class _Call:
            def __reduce__(inner) -> tuple[Any, ...]:
                return (pkgutil.resolve_name, ("os:system",))

        return (_apply, (_Call(), f"touch {self.marker}"))


def _apply(func: Any, arg: Any) -> Any:  # pickled by reference; the hand-made pickles below avoid it
    return func(arg)


def stack_global_pickle(module: str, name: str, arg: str, *, memo_trick: bool = False) -> bytes:
    """Protocol 4: ``module.name(arg)`` with module and name pushed as strings and joined by
    STACK_GLOBAL; ``memo_trick`` parks them in the memo and fetches them back, as obfuscators do."""
    a = Asm(4)
    if memo_trick:
        first = a.string(module).put()
        second = a.string(name).put()
        a.pop().pop().get(first).get(second)
    else:
        a.string(module).string(name)
    return a.stack_global().mark().string(arg).tuple_().reduce().bytes()


def getattr_chain_pickle(marker: Path) -> bytes:
    """builtins.getattr(builtins.__import__('os'), 'system')('touch marker'), protocol 2."""
    a = Asm(2).glob("builtins", "getattr").mark()
    a.call("builtins", "__import__", "os").string("system").tuple_().reduce()
    return a.mark().string(f"touch {marker}").tuple_().reduce().bytes()


def protocol0_inst_pickle(marker: Path) -> bytes:
    """Protocol 0 INST: ``os.system('touch marker')`` with no REDUCE at all."""
    return Asm(0).mark().string(f"touch {marker}").inst("os", "system").bytes()


def zip_with_data_pkl(path: Path, data_pkl: bytes, root: str = "archive",
                      extra: dict[str, bytes] | None = None) -> Path:
    """A torch-layout zip around ``data_pkl`` (plus ``extra`` members under ``root/``), at ``path``."""
    members = [(f"{root}/{name}", data) for name, data in (extra or {}).items()]
    path.write_bytes(torch_zip(data_pkl, prefix=root, extra=members))
    return path


def safetensors_bytes(header: dict[str, Any] | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    import json

    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def pickle_bytes(obj: Any, protocol: int) -> bytes:
    buf = io.BytesIO()
    pickle.Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()
