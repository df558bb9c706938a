"""Builders of hostile files, made at test time (never checked in)."""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any


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
    """Protocol 4: module and name pushed as strings, joined by STACK_GLOBAL, then REDUCE."""
    def s(text: str) -> bytes:
        raw = text.encode()
        return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE

    body = b"\x80\x04"
    if memo_trick:  # park the names in the memo and fetch them back, as obfuscators do
        body += s(module) + b"\x94" + s(name) + b"\x94" + b"0" + b"0" + b"h\x00h\x01"
    else:
        body += s(module) + s(name)
    return body + b"\x93" + s(arg) + b"\x85R."


def getattr_chain_pickle(marker: Path) -> bytes:
    """builtins.getattr(builtins.__import__('os'), 'system')('touch marker'), protocol 2."""
    return (
        b"\x80\x02cbuiltins\ngetattr\n"
        b"cbuiltins\n__import__\nX\x02\x00\x00\x00os\x85R"
        b"X\x06\x00\x00\x00system\x86R"
        + b"X" + struct.pack("<I", len(f"touch {marker}")) + f"touch {marker}".encode() + b"\x85R."
    )


def protocol0_inst_pickle(marker: Path) -> bytes:
    """Protocol 0 INST: ``(S'touch marker'\\nios\\nsystem\\n.``"""
    return b"(S'touch " + str(marker).encode() + b"'\nios\nsystem\n."


def zip_with_data_pkl(path: Path, data_pkl: bytes, root: str = "archive",
                      extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{root}/data.pkl", data_pkl)
        z.writestr(f"{root}/version", b"3\n")
        for name, data in (extra or {}).items():
            z.writestr(f"{root}/{name}", data)
    return path


def safetensors_bytes(header: dict[str, Any] | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    import json

    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def pickle_bytes(obj: Any, protocol: int) -> bytes:
    buf = io.BytesIO()
    pickle.Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()
