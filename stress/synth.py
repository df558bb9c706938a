"""Checkpoints written the way torch.save writes them, with every structural choice made explicit.

torch.save only writes what a live tensor needs; the conformance harness also needs the records torch
*reads* but rarely writes: a pickled ``state`` on a tensor, the old ``_rebuild_tensor`` without a flag,
one storage named by several tensors (or with two dtypes), storages on ``cuda:0``. ``write_zip`` and
``write_legacy`` pickle such records with Python's own pickler (protocol 2, persistent ids as torch
writes them), so the files are byte-for-byte in torch's format; ``random_entries`` draws a model.

    entries = random_entries(random.Random(0))
    write_zip(entries, path)      # or write_legacy(entries, path)
"""

from __future__ import annotations

import io
import pickle
import random
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ITEMSIZE = {"FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "LongStorage": 8, "IntStorage": 4,
            "BoolStorage": 1, "ByteStorage": 1, "BFloat16Storage": 2}
REBUILDS = ("tensor", "param", "param_state", "from_type", "old")


@dataclass
class Entry:
    """One named tensor and how its record is written."""

    name: str
    key: str  # storage key (data/<key> in a zip)
    storage: str = "FloatStorage"  # storage class named in the persistent id
    numel: int = 4  # elements the persistent id declares
    shape: tuple[int, ...] = (4,)
    offset: int = 0
    rebuild: str = "param"  # one of REBUILDS
    flag: bool = True  # the rebuilder's requires_grad (none for "old")
    state: Any = None  # the pickled state of param_state / from_type
    location: str = "cpu"
    same_as: str | None = None  # the very same object as an earlier entry (tied: one memo record)
    extra: dict[str, Any] = field(default_factory=dict)


class _Storage:
    def __init__(self, e: Entry) -> None:
        self.entry = e


class _Record:
    """Pickles as ``rebuild(*args)``: the REDUCE torch's own tensors pickle to."""

    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def _stride(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, step = [], 1
    for d in reversed(shape):
        out.append(step)
        step *= max(d, 1)
    return tuple(reversed(out))


def _record(e: Entry, storages: dict[tuple[Any, ...], _Storage]) -> _Record:
    ident = (e.key, e.storage, e.numel, e.location)
    storage = storages.setdefault(ident, _Storage(e))  # one object per distinct persistent id
    geometry = (storage, e.offset, torch.Size(e.shape), _stride(e.shape))
    if e.rebuild == "old":
        return _Record(torch._utils._rebuild_tensor, geometry)
    tensor = _Record(torch._utils._rebuild_tensor_v2, (*geometry, e.flag, OrderedDict()))
    if e.rebuild == "tensor":
        return tensor
    if e.rebuild == "param":
        return _Record(torch._utils._rebuild_parameter, (tensor, e.flag, OrderedDict()))
    if e.rebuild == "param_state":
        return _Record(torch._utils._rebuild_parameter_with_state, (tensor, e.flag, OrderedDict(), e.state))
    if e.rebuild == "from_type":
        return _Record(torch._tensor._rebuild_from_type_v2,
                       (torch._utils._rebuild_tensor_v2, torch.Tensor, (*geometry, e.flag, OrderedDict()),
                        e.state))
    raise ValueError(e.rebuild)


class _Pickler(pickle.Pickler):
    def __init__(self, f: io.BytesIO, legacy: bool) -> None:
        super().__init__(f, protocol=2)
        self.legacy = legacy

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, _Storage):
            return None
        e = obj.entry
        pid = ("storage", getattr(torch, e.storage), e.key, e.location, e.numel)
        return (*pid, None) if self.legacy else pid


def state_dict_pickle(entries: list[Entry], legacy: bool = False, wrap: str | None = None) -> bytes:
    """The main pickle: an OrderedDict of the entries (inside ``{wrap: ...}`` when ``wrap`` is set)."""
    storages: dict[tuple[Any, ...], _Storage] = {}
    by_name: dict[str, _Record] = {}
    sd: OrderedDict[str, Any] = OrderedDict()
    for e in entries:
        rec = by_name[e.same_as] if e.same_as in by_name else _record(e, storages)
        by_name[e.name] = rec
        sd[e.name] = rec
    root: Any = sd if wrap is None else {"epoch": 1, wrap: sd}
    buf = io.BytesIO()
    _Pickler(buf, legacy).dump(root)
    return buf.getvalue()


def storage_bytes(entries: list[Entry]) -> dict[str, bytes]:
    """Raw bytes per storage key, sized by the first persistent id naming it (as torch reads)."""
    out: dict[str, bytes] = {}
    for e in entries:
        if e.key not in out and e.same_as is None:
            n = e.numel * ITEMSIZE[e.storage]
            out[e.key] = bytes((i * 7 + len(e.key)) % 256 for i in range(n))
    return out


def write_zip(entries: list[Entry], path: Path, *, wrap: str | None = None, root: str = "archive",
              pickle_bytes: bytes | None = None) -> Path:
    data = pickle_bytes if pickle_bytes is not None else state_dict_pickle(entries, wrap=wrap)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{root}/data.pkl", data)
        z.writestr(f"{root}/byteorder", b"little")
        for key, raw in storage_bytes(entries).items():
            z.writestr(f"{root}/data/{key}", raw)
        z.writestr(f"{root}/version", b"3\n")
        z.writestr(f"{root}/.data/serialization_id", b"0123456789")
    return path


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def legacy_head() -> bytes:
    sys_info = {"protocol_version": 1001, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return b"".join(pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC, 1001, sys_info))


def write_legacy(entries: list[Entry], path: Path, *, wrap: str | None = None,
                 pickle_bytes: bytes | None = None) -> Path:
    main = pickle_bytes if pickle_bytes is not None else state_dict_pickle(entries, legacy=True, wrap=wrap)
    raws = storage_bytes(entries)
    out = [legacy_head(), main, pickle.dumps(list(raws), protocol=2)]
    for key, raw in raws.items():
        first = next(e for e in entries if e.key == key and e.same_as is None)
        out.append(struct.pack("<q", len(raw) // ITEMSIZE[first.storage]) + raw)
    path.write_bytes(b"".join(out))
    return path


# -- random models ---------------------------------------------------------------------------------------
_LEAVES = ("weight", "bias", "running_mean", "num_batches_tracked", "scale", "position_ids")
_STATES: tuple[Any, ...] = (
    None, {}, {"_is_hf_initialized": True}, {"requires_grad": True}, {"requires_grad": False},
    ({}, None), ({"requires_grad": True}, {}), {"note": "x", "requires_grad": False}, {"data": 0},
    {"__class__": 0}, ({"a": 1},), {"requires_grad": 1}, {"_backward_hooks": 1},
)


def random_entries(rng: random.Random) -> list[Entry]:
    """A small random state dict: names, storages (sometimes shared or renamed with another dtype),
    rebuilders, flags and pickled states drawn from what torch reads."""
    entries: list[Entry] = []
    for i in range(rng.randint(1, 6)):
        leaf = rng.choice(_LEAVES)
        storage = "LongStorage" if leaf == "num_batches_tracked" else rng.choice(
            ["FloatStorage"] * 4 + ["HalfStorage", "DoubleStorage", "LongStorage", "BoolStorage"])
        numel = rng.choice([1, 2, 4, 6])
        shape = {1: (), 2: (2,), 4: rng.choice([(4,), (2, 2)]), 6: rng.choice([(6,), (2, 3)])}[numel]
        if shape == () and rng.random() < 0.5:
            shape = (1,)
        e = Entry(name=f"layer{i // 2}.{leaf}" if rng.random() < 0.8 else leaf, key=str(i), storage=storage,
                  numel=numel, shape=shape, rebuild=rng.choice(REBUILDS), flag=rng.random() < 0.5,
                  location=rng.choice(["cpu"] * 6 + ["cuda:0"]))
        if e.rebuild in ("param_state", "from_type"):
            e.state = rng.choice(_STATES)
        if entries and rng.random() < 0.15:  # a second name for the same storage (maybe another dtype)
            other = rng.choice(entries)
            e.key = other.key
            if rng.random() < 0.5:
                e.storage, e.numel, e.shape = other.storage, other.numel, other.shape
        if entries and rng.random() < 0.1:
            e.same_as = rng.choice(entries).name  # the same record under a second name (tied)
        if any(x.name == e.name for x in entries):
            e.name = f"{e.name}_{i}"
        entries.append(e)
    return entries
