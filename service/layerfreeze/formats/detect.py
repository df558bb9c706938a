"""Open any supported checkpoint, recognising the format from its first bytes (never its name).

    archive = open_archive(path, limits)   # -> Archive with .inventory and .write(dst, final, spec_sha256)

zip (``PK\\x03\\x04``) -> torch.save archive or TorchScript; a pickle (``\\x80`` or a protocol 0/1
opcode) -> legacy torch.save or a plain pickle; an 8-byte length followed by ``{`` -> safetensors.
"""

from __future__ import annotations

import struct
from pathlib import Path

from layerfreeze.errors import FormatError, LayerfreezeError
from layerfreeze.formats.base import Archive
from layerfreeze.formats.legacy import LegacyArchive
from layerfreeze.formats.safetensors import SafetensorsArchive
from layerfreeze.formats.torchzip import TorchZipArchive
from layerfreeze.limits import ReadLimits

DEFAULT_LIMITS = ReadLimits()

# First bytes of protocol 0/1 pickles: MARK, the list/dict/tuple openers, GLOBAL, INT/LONG, strings, ...
_PICKLE_0_1_STARTS = frozenset(b"(]})cILFSVNK")


def sniff(head: bytes) -> str:
    """``zip``, ``pickle``, ``safetensors`` or ``unknown`` for a file starting with ``head`` (>= 9 bytes)."""
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] >= 2:
        return "safetensors"
    if head[:1] and head[0] in _PICKLE_0_1_STARTS:
        return "pickle"
    return "unknown"


def open_archive(path: Path, limits: ReadLimits = DEFAULT_LIMITS) -> Archive:
    """Detect, parse and validate ``path``. Raises FormatError subclasses or LimitExceeded only."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
        kind = sniff(head)
        if kind == "zip":
            return TorchZipArchive(path, limits)
        if kind == "pickle":
            return LegacyArchive(path, limits)
        if kind == "safetensors":
            return SafetensorsArchive(path, limits)
    except LayerfreezeError:
        raise
    except (OSError, ValueError, struct.error, RecursionError, MemoryError) as exc:
        raise FormatError(f"cannot read the file: {type(exc).__name__}: {exc}") from exc
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        # A structure no real checkpoint has (the readers check what they rely on; this is the net).
        raise FormatError(f"malformed checkpoint structure ({type(exc).__name__}: {exc})") from exc
    if not head:
        raise FormatError("the file is empty")
    raise FormatError(f"not a PyTorch checkpoint or safetensors file: starts with {head[:8]!r}")
