"""One file per class of disagreement between our reader and torch's loader, built with torch or with
``stress.synth`` (never checked in). Each builder returns the path it wrote."""

from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import torch
from fixtures.models import build, save

from stress import synth
from stress.structured import make_zip, opcodes, zip_members


class Payload:
    """Runs a shell command when unpickled without weights_only (it must never be)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def state_requires_grad(tmp: Path) -> Path:
    """A parameter saved with requires_grad=False whose pickled state says True: torch.load gives True."""
    p = torch.nn.Parameter(torch.ones(4), requires_grad=False)
    p.__dict__["requires_grad"] = True
    q = torch.nn.Parameter(torch.zeros(2))
    torch.save(OrderedDict([("layer.weight", p), ("layer.bias", q)]), tmp / "state-rg.pt")
    return tmp / "state-rg.pt"


def state_sets_data(tmp: Path) -> Path:
    """A pickled state that replaces the tensor's data: torch.load gives another dtype and shape."""
    p = torch.nn.Parameter(torch.ones(4))
    p.__dict__["data"] = torch.zeros(2, dtype=torch.float64)
    torch.save({"layer.weight": p}, tmp / "state-data.pt")
    return tmp / "state-data.pt"


def case_shadowed(tmp: Path, marker: Path | None = None) -> Path:
    """A real state dict plus ``<root>/DATA.PKL``, the pickle torch's case-insensitive lookup finds."""
    src = save(build("seq3"), tmp / "plain.pt", "state_dict")
    members = zip_members(src.read_bytes())
    root = members[0][0].split("/", 1)[0]
    if marker is not None:
        shadow = pickle.dumps({"0.weight": Payload(marker)}, protocol=2)
    else:
        shadow = all_flags_true(next(b for n, b in members if n.endswith("/data.pkl")))
    path = tmp / "shadowed.pt"
    path.write_bytes(make_zip([*members, (f"{root}/DATA.PKL", shadow)]))
    return path


def all_flags_true(p: bytes) -> bytes:
    out = bytearray(p)
    for name, _, start, _ in opcodes(p):
        if name == "NEWFALSE":
            out[start] = 0x88
    return bytes(out)


def storage_two_dtypes(tmp: Path) -> Path:
    """Storage "0" named first as float32, then as int64: torch keeps float32 for both."""
    entries = [synth.Entry("a.weight", "0", "FloatStorage", 4, (4,), rebuild="param", flag=True),
               synth.Entry("a.bias", "0", "LongStorage", 2, (2,), rebuild="tensor", flag=False)]
    return synth.write_zip(entries, tmp / "two-dtypes.pt")


def torchscript_code(tmp: Path, transform) -> Path:  # type: ignore[no-untyped-def]
    """Our own TorchScript of ``nested`` with every code/ file passed through ``transform``."""
    src = save(build("nested"), tmp / "ts.pt", "torchscript")
    members = [(n, transform(b.decode()).encode() if "/code/" in n and n.endswith(".py") else b)
               for n, b in zip_members(src.read_bytes())]
    path = tmp / "ts-mutant.pt"
    path.write_bytes(make_zip(members))
    return path


def reindented(text: str) -> str:
    lines = text.split("\n")
    return "\n".join("    " * ((len(ln) - len(ln.lstrip(" "))) // 2) + ln.lstrip(" ") for ln in lines)


def repeated_empty_decl(text: str) -> str:
    return text.replace("  __parameters__ = [", "  __parameters__ = []\n  __parameters__ = [")


def split_decl(text: str) -> str:
    """``__parameters__ = ["a", "b", ]`` as two declarations, one name each (torch merges them)."""
    out = []
    for line in text.split("\n"):
        names = line.strip().removeprefix("__parameters__ = [").removesuffix("]").split(", ")
        if line.startswith("  __parameters__ = [") and len([n for n in names if n.strip()]) > 1:
            out += [f"  __parameters__ = [{n}, ]" for n in names if n.strip() and n.strip() != ","]
        else:
            out.append(line)
    return "\n".join(out)


def commented_decl(text: str) -> str:
    return text.replace("  __buffers__ = [", "  # __parameters__ = []\n  __buffers__ = [")


def hash_dag(tmp: Path) -> Path:
    """127 bytes: a dict keyed by a tuple DAG of 2**60 nodes (hashing it never ends)."""
    path = tmp / "dag.pt"
    path.write_bytes(b"\x80\x02}N" + b"2\x86" * 60 + b"Ns.")
    return path


def deep_name(tmp: Path, segments: int = 16_000) -> Path:
    """One parameter whose name has ``segments`` dotted parts (the report lists every prefix)."""
    path = tmp / "deep.pt"
    torch.save({".".join(["a"] * segments): torch.zeros(1)}, path)
    return path


def old_rebuild(tmp: Path, legacy: bool) -> Path:
    """LPIPS-style: ``_rebuild_tensor(storage, offset, size, stride)`` on cuda:0 storages (no flag)."""
    entries = [synth.Entry(f"lin{i}.model.1.weight", str(i), "FloatStorage", 8, (1, 8, 1, 1), rebuild="old",
                           location="cuda:0") for i in range(3)]
    write = synth.write_legacy if legacy else synth.write_zip
    return write(entries, tmp / f"lpips-{'legacy' if legacy else 'zip'}.pth", wrap=None)


def shared_flag(tmp: Path) -> Path:
    """``a.weight``'s inner tensor flag memoized and read back as ``b.weight``'s own flag: one byte, two
    meanings (changing b's flag would change a's record too)."""
    entries = [synth.Entry("a.weight", "0", flag=False), synth.Entry("b.weight", "1", flag=False)]
    data = synth.state_dict_pickle(entries)
    first, second = data.index(b"\x89"), data.rindex(b"\x89")
    data = data[:second] + b"h\xc8" + data[second + 1:]
    data = data[:first + 1] + b"q\xc8" + data[first + 1:]
    return synth.write_zip(entries, tmp / "shared-flag.pt", pickle_bytes=data)


def two_model_dicts(tmp: Path) -> tuple[Path, torch.nn.Module]:
    """``{"model_state": sd, "ema": ema}``: the service and apply() must pick the same one."""
    model = build("seq3")
    ema = build("seq3", seed=1)
    path = tmp / "two.pt"
    torch.save({"ema": ema.state_dict(), "model_state": model.state_dict(), "step": 3}, path)
    return path, model


def load_flags(path: Path | bytes) -> dict[str, bool]:
    src = io.BytesIO(path) if isinstance(path, bytes) else path
    sd = torch.load(src, weights_only=True, map_location="cpu")
    return {k: bool(v.requires_grad) for k, v in sd.items()}



def shared_module(tmp: Path) -> tuple[Path, torch.nn.Module]:
    """One Linear under three paths: named_parameters(remove_duplicate=False) lists all three."""
    layer = torch.nn.Linear(2, 2)
    model = torch.nn.Sequential(layer, torch.nn.ReLU(), layer)
    model.extra = layer
    torch.save(model, tmp / "shared.pt")
    return tmp / "shared.pt", model


def shared_tables(tmp: Path, modules: int = 300, params: int = 300) -> Path:
    """``modules`` modules sharing one ``_parameters`` dict of ``params`` entries: a small pickle that
    names modules x params tensors (each name would go into the report)."""
    table = OrderedDict((f"p{i}", torch.nn.Parameter(torch.zeros(1))) for i in range(params))
    root = torch.nn.Module()
    for i in range(modules):
        child = torch.nn.Module()
        child._parameters = table
        root.add_module(f"m{i}", child)
    torch.save(root, tmp / "tables.pt")
    return tmp / "tables.pt"
