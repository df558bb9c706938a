"""Corpus families carried by pickles: raw streams of every protocol, torch zips (hand-built and written
by torch.save itself), legacy .pt, TorchScript zips, and pickle bombs."""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Callable

from stress.case import EXTENSIONS, Builder
from stress.payloads import PAYLOADS, payload_pickle
from stress.pickles import Asm
from stress.zips import torch_zip, write_zip


class _Reduce:
    """Pickles as ``func(*args)``: lets torch.save itself write a payload nested in a real checkpoint."""

    def __init__(self, func: Callable[..., object], *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args

    def __call__(self) -> None:  # pickle requires reduce callables to be callable
        pass


def benign_pickles() -> tuple[bytes, list[tuple[str, bytes]], bytes]:
    """A real state dict's data.pkl with its storages, and a TorchScript archive, from torch itself."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    with zipfile.ZipFile(buf) as zf:
        data_pkl = zf.read("archive/data.pkl")
        storages = [(n.split("/data/", 1)[1], zf.read(n)) for n in zf.namelist() if "/data/" in n]
    ts = io.BytesIO()
    torch.jit.save(torch.jit.script(model), ts)
    return data_pkl, storages, ts.getvalue()


def _splice(data_pkl: bytes, technique: str, marker: str) -> bytes:
    """Insert a payload (and a POP) just before the final STOP of a real torch pickle."""
    a = Asm(2, memo_start=1 << 20)
    PAYLOADS[technique][0](a, marker)
    assert data_pkl.endswith(b".")
    return data_pkl[:-1] + a.body() + b"0."


def raw_pickles(b: Builder) -> None:
    i = 0
    for proto in range(6):
        for tech, (_, lo, hi) in PAYLOADS.items():
            if lo <= proto <= hi:
                name = f"raw-p{proto}-{tech}"
                data = payload_pickle(tech, proto, b.marker(name))
                b.add(name, "raw pickle", data, EXTENSIONS[i % len(EXTENSIONS)], control=("pickle", data))
                i += 1


def torch_zips(b: Builder, data_pkl: bytes, storages: list[tuple[str, bytes]]) -> None:
    for tech, (_, lo, hi) in PAYLOADS.items():
        proto = 2 if lo <= 2 <= hi else 4
        name = f"zip-{tech}"
        payload = payload_pickle(tech, proto, b.marker(name))
        b.add(name, "torch zip", torch_zip(payload), control=("pickle", payload))
        name = f"zip-spliced-{tech}"
        if lo <= 2 <= hi:
            spliced = _splice(data_pkl, tech, b.marker(name))
            b.add(
                name,
                "torch zip, payload after a real state dict",
                torch_zip(spliced, storages),
                control=("pickle", payload_pickle(tech, 2, b.marker(name))),
            )


def torch_saved(b: Builder) -> None:
    """torch.save itself writes the payload, nested in real containers."""
    import os

    import torch

    torch.manual_seed(0)

    def sh(name: str) -> _Reduce:
        return _Reduce(os.system, f"touch '{b.marker(name)}'")

    def model() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))

    objs: dict[str, Callable[[str], object]] = {}

    def in_state_dict(name: str) -> object:
        sd = model().state_dict()
        sd["1.evil"] = sh(name)
        return sd

    def in_checkpoint(name: str) -> object:
        return {"epoch": 1, "state_dict": model().state_dict(), "hyper_parameters": {"cb": sh(name)}}

    def in_module_dict(name: str) -> object:
        m = model()
        m.__dict__["notes"] = sh(name)
        return m

    def in_module_buffers(name: str) -> object:
        m = model()
        m[0]._buffers["evil"] = sh(name)  # type: ignore[assignment]
        return m

    def in_module_parameters(name: str) -> object:
        m = model()
        m[2]._parameters["bias"] = sh(name)  # type: ignore[assignment]
        return m

    def as_tensor_hooks(name: str) -> object:
        t = torch.ones(3)
        return {"w": t, "meta": [sh(name), {"deep": (sh(name),)}]}

    objs.update(
        state_dict=in_state_dict,
        checkpoint=in_checkpoint,
        module_dict=in_module_dict,
        module_buffers=in_module_buffers,
        module_parameters=in_module_parameters,
        nested_list=as_tensor_hooks,
    )
    for label, make in objs.items():
        for legacy in (False, True):
            name = f"saved-{'legacy-' if legacy else ''}{label}"
            buf = io.BytesIO()
            torch.save(make(name), buf, _use_new_zipfile_serialization=not legacy)
            path = b.out / f"{name}.control.pt"
            path.write_bytes(buf.getvalue())
            b.add(
                name, "torch.save legacy" if legacy else "torch.save", buf.getvalue(), control=("torch", path)
            )


def legacy(b: Builder) -> None:
    import pickle

    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    version = pickle.dumps(1001, protocol=2)
    info = pickle.dumps(
        {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}},
        protocol=2,
    )
    keys = pickle.dumps([], protocol=2)
    for slot in ("magic", "sys_info", "data"):
        name = f"legacy-{slot}"
        p = payload_pickle("os_system", 2, b.marker(name))
        parts = {
            "magic": [p, version, info, keys],
            "sys_info": [magic, version, p, keys],
            "data": [magic, version, info, p, keys],
        }[slot]
        b.add(name, "legacy .pt", b"".join(parts), ".pt", control=("pickle", p))


def torchscript(b: Builder, ts: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(ts)) as zf:
        members = [(i, zf.read(i)) for i in zf.infolist()]
    for target in ("data.pkl", "constants.pkl"):
        for tech in ("os_system", "rebuild_from_type_exec", "torch_load_from_bytes"):
            name = f"torchscript-{target.split('.')[0]}-{tech}"
            p = payload_pickle(tech, 2, b.marker(name))
            swapped = [(i, p if i.filename.endswith("/" + target) else raw) for i, raw in members]
            b.add(name, "torchscript zip", write_zip(swapped), ".pt", control=("pickle", p))


# lists nested without MARK pile their values up on the stack until the first APPEND: either bound stops them
_NESTING_LIMITS = ("max_pickle_depth", "max_pickle_stack")


def pickle_bombs(b: Builder, data_pkl: bytes, storages: list[tuple[str, bytes]]) -> None:
    depth = 200_000
    nested = b"]" * depth + b"a" * (depth - 1)  # lists nested 200,000 deep, without a single MARK
    b.add(
        "pickle-depth",
        "pickle bomb",
        b"\x80\x02" + nested + b".",
        ".bin",
        payload=False,
        expect_limit=_NESTING_LIMITS,
    )
    b.add(
        "zip-pickle-depth",
        "pickle bomb",
        torch_zip(b"\x80\x02" + nested + b"."),
        payload=False,
        expect_limit=_NESTING_LIMITS,
    )
    # a real checkpoint dict whose extra entry is that nesting: readable, unless depth is bounded
    body = data_pkl[2:-1]  # the state dict's opcodes, without PROTO and STOP
    ckpt = (
        b"\x80\x02}("
        + Asm(2).string("state_dict").body()
        + body
        + Asm(2).string("extra").body()
        + nested
        + b"u."
    )
    b.add(
        "zip-checkpoint-deep-list",
        "pickle bomb",
        torch_zip(ckpt, storages),
        payload=False,
        expect_limit=_NESTING_LIMITS,
    )
    b.add("pickle-marks", "pickle bomb", b"\x80\x02" + b"(" * 1_000_000 + b"N.", ".bin", payload=False)
    b.add(
        "pickle-long-int",
        "pickle bomb",
        b"\x80\x02\x8b" + struct.pack("<i", 50_000_000) + b"\x01" * 16 + b".",
        ".bin",
        payload=False,
    )
    # 4 million cheap opcodes (push None, pop) in 4 MB, well inside max_pickle_ops: work per byte uploaded
    b.add(
        "zip-pickle-ops-flood",
        "pickle bomb",
        torch_zip(b"\x80\x02" + b"N0" * 2_000_000 + b"}."),
        payload=False,
    )
