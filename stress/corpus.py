"""The hostile-file corpus, generated (never checked in).

    python -m stress.corpus OUT_DIR            write every case and print a summary
    python -m stress.corpus OUT_DIR --verify   also prove each payload is live: run it with pickle/torch.load
                                               in a child process and check that its marker appears

Every case that carries code has a ``marker``: a file (unique per case) that the payload creates if it ever
runs. A reader must refuse every case with a ``layerfreeze.errors`` exception, quickly, marker absent.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from stress.payloads import PAYLOADS, payload_pickle
from stress.pickles import Asm
from stress.zips import deflated, patch_member, symlink, torch_zip, write_ratio_bomb, write_zip

EXTENSIONS = (".bin", ".pt", ".pkl", ".pth", ".ckpt", ".txt", ".safetensors", "")


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    group: str
    path: Path
    marker: Path | None = None  # created by the payload if it ever runs
    control: tuple[str, Path] | None = None  # ("pickle" | "torch", file) that proves the payload is live
    expect_limit: str | None = None  # the refusal must be LimitExceeded for this ReadLimits field

    @property
    def filename(self) -> str:
        return self.path.name.split("__", 1)[-1]


class _Reduce:
    """Pickles as ``func(*args)``: lets torch.save itself write a payload nested in a real checkpoint."""

    def __init__(self, func: Callable[..., object], *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args

    def __call__(self) -> None:  # pickle requires reduce callables to be callable
        pass


class _Builder:
    def __init__(self, out: Path, markers: Path) -> None:
        self.out, self.markers = out, markers
        self.cases: list[Case] = []
        out.mkdir(parents=True, exist_ok=True)
        markers.mkdir(parents=True, exist_ok=True)

    def marker(self, name: str) -> str:
        return str(self.markers / f"{name}.ran")

    def add(
        self,
        name: str,
        group: str,
        data: bytes,
        ext: str = ".pt",
        *,
        payload: bool = True,
        control: tuple[str, bytes | Path] | None = None,
        expect_limit: str | None = None,
    ) -> None:
        path = self.out / f"{name}__model{ext}"
        path.write_bytes(data)
        ctl: tuple[str, Path] | None = None
        if control is not None:
            kind, src = control
            if isinstance(src, bytes):
                cpath = self.out / f"{name}.control.pkl"
                cpath.write_bytes(src)
                src = cpath
            ctl = (kind, src)
        marker = Path(self.marker(name)) if payload else None
        self.cases.append(Case(name, group, path, marker, ctl, expect_limit))


def _benign_pickles() -> tuple[bytes, list[tuple[str, bytes]], bytes]:
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


def _raw_pickles(b: _Builder) -> None:
    i = 0
    for proto in range(6):
        for tech, (_, lo, hi) in PAYLOADS.items():
            if lo <= proto <= hi:
                name = f"raw-p{proto}-{tech}"
                data = payload_pickle(tech, proto, b.marker(name))
                b.add(name, "raw pickle", data, EXTENSIONS[i % len(EXTENSIONS)], control=("pickle", data))
                i += 1


def _torch_zips(b: _Builder, data_pkl: bytes, storages: list[tuple[str, bytes]]) -> None:
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


def _torch_saved(b: _Builder) -> None:
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


def _legacy(b: _Builder) -> None:
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


def _torchscript(b: _Builder, ts: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(ts)) as zf:
        members = [(i, zf.read(i)) for i in zf.infolist()]
    for target in ("data.pkl", "constants.pkl"):
        for tech in ("os_system", "rebuild_from_type_exec", "torch_load_from_bytes"):
            name = f"torchscript-{target.split('.')[0]}-{tech}"
            p = payload_pickle(tech, 2, b.marker(name))
            swapped = [(i, p if i.filename.endswith("/" + target) else raw) for i, raw in members]
            b.add(name, "torchscript zip", write_zip(swapped), ".pt", control=("pickle", p))


def _zip_tricks(b: _Builder, data_pkl: bytes, storages: list[tuple[str, bytes]]) -> None:
    def evil(name: str) -> bytes:
        return payload_pickle("os_system", 2, b.marker(name))

    name = "zipflag-encrypted"
    b.add(
        name,
        "zip trick",
        patch_member(torch_zip(evil(name)), "archive/data.pkl", set_flags=0x1),
        control=("pickle", evil(name)),
    )
    name = "zipflag-encrypted-strong"
    b.add(
        name,
        "zip trick",
        patch_member(torch_zip(evil(name)), "archive/data.pkl", set_flags=0x41),
        control=("pickle", evil(name)),
    )
    name = "zip-data-descriptor"
    members = [
        ("archive/data.pkl", evil(name)),
        ("archive/byteorder", b"little"),
        ("archive/version", b"3\n"),
    ]
    b.add(name, "zip trick", write_zip(members, stream=True), control=("pickle", evil(name)))
    name = "zip-data-pkl-twice-evil-last"
    b.add(
        name,
        "zip trick",
        torch_zip(data_pkl, storages, extra=[("archive/data.pkl", evil(name))]),
        control=("pickle", evil(name)),
    )
    name = "zip-data-pkl-twice-evil-first"
    first = write_zip(
        [
            ("archive/data.pkl", evil(name)),
            ("archive/data.pkl", data_pkl),
            *[(f"archive/data/{k}", v) for k, v in storages],
            ("archive/version", b"3\n"),
        ]
    )
    b.add(name, "zip trick", first, control=("pickle", evil(name)))
    name = "zip-deflated-evil-pkl"
    b.add(
        name,
        "zip trick",
        write_zip([(deflated("archive/data.pkl"), evil(name)), ("archive/version", b"3\n")]),
        ".zip",
        control=("pickle", evil(name)),
    )
    for ext in (".safetensors", ".txt", ".json", ".npz", ".onnx"):
        name = f"zip-odd-ext{ext.replace('.', '-')}"
        b.add(name, "odd extension", torch_zip(evil(name)), ext, control=("pickle", evil(name)))
    # traversal and links: benign pickle, hostile members
    name = "zip-absolute-member"
    b.add(name, "zip trick", torch_zip(data_pkl, storages, extra=[(b.marker(name), b"x")]))
    b.add(
        "zip-dotdot-member",
        "zip trick",
        torch_zip(data_pkl, storages, extra=[("archive/../../../../tmp/lf-dotdot", b"x")]),
        payload=False,
    )
    b.add("zip-dotdot-prefix", "zip trick", torch_zip(data_pkl, storages, prefix="../archive"), payload=False)
    b.add(
        "zip-symlink-storage",
        "zip trick",
        write_zip(
            [
                ("archive/data.pkl", data_pkl),
                (symlink("archive/data/0"), b"/etc/passwd"),
                *[(f"archive/data/{k}", v) for k, v in storages if k != "0"],
                ("archive/version", b"3\n"),
            ]
        ),
        payload=False,
    )
    b.add(
        "zip-symlink-extra",
        "zip trick",
        torch_zip(data_pkl, storages, extra=[(symlink("archive/link"), b"/etc/shadow")]),
        payload=False,
    )
    # bombs: rejected from the directory, before anything is inflated
    decl = write_zip(
        [
            (deflated("archive/data.pkl"), data_pkl),
            *[(f"archive/data/{k}", v) for k, v in storages],
            ("archive/version", b"3\n"),
        ]
    )
    b.add(
        "zipbomb-declared-size",
        "zip bomb",
        patch_member(decl, "archive/data.pkl", file_size=0xFFFFFFF0),
        payload=False,
    )
    b.add("zipbomb-ratio", "zip bomb", write_ratio_bomb(data_pkl, 256 << 20), payload=False)
    many = [(f"archive/data/x{i}", b"") for i in range(100_001)]
    b.add("zipbomb-entries", "zip bomb", torch_zip(data_pkl, storages, extra=many), payload=False)


def _pickle_bombs(b: _Builder, data_pkl: bytes, storages: list[tuple[str, bytes]]) -> None:
    depth = 200_000
    nested = b"]" * depth + b"a" * (depth - 1)  # lists nested 200,000 deep, without a single MARK
    b.add(
        "pickle-depth",
        "pickle bomb",
        b"\x80\x02" + nested + b".",
        ".bin",
        payload=False,
        expect_limit="max_pickle_depth",
    )
    b.add(
        "zip-pickle-depth",
        "pickle bomb",
        torch_zip(b"\x80\x02" + nested + b"."),
        payload=False,
        expect_limit="max_pickle_depth",
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
        expect_limit="max_pickle_depth",
    )
    b.add("pickle-marks", "pickle bomb", b"\x80\x02" + b"(" * 1_000_000 + b"N.", ".bin", payload=False)
    b.add(
        "pickle-long-int",
        "pickle bomb",
        b"\x80\x02\x8b" + struct.pack("<i", 50_000_000) + b"\x01" * 16 + b".",
        ".bin",
        payload=False,
    )
    # 1.2 million cheap opcodes (push None, pop) in 1.2 MB: work per byte uploaded
    b.add(
        "zip-pickle-ops-flood", "pickle bomb", torch_zip(b"\x80\x02" + b"N0" * 600_000 + b"}."), payload=False
    )


def _st(header: dict | bytes, data: bytes, *, length: int | None = None, trailing: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if length is None else length
    return struct.pack("<Q", n) + raw + data + trailing


def _safetensors(b: _Builder, data_pkl: bytes) -> None:
    f32 = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    ok = {"w": f32}
    cases: dict[str, bytes] = {
        "st-length-past-end": _st(ok, bytes(16), length=10_000_000),
        "st-length-u64-max": _st(ok, bytes(16), length=(1 << 64) - 1),
        "st-header-100MB-plus-1": _st(
            b'{"w":' + json.dumps(f32).encode() + b"}" + b" " * 99_999_960 + b"", bytes(16), length=None
        ),
        "st-overlap": _st(
            {"a": f32, "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, bytes(24)
        ),
        "st-gap": _st({"a": f32, "b": {"dtype": "F32", "shape": [4], "data_offsets": [20, 36]}}, bytes(36)),
        "st-trailing-bytes": _st(ok, bytes(16), trailing=b"\x00" * 7),
        "st-short-data": _st(ok, bytes(12)),
        "st-metadata-int": _st({"__metadata__": {"a": 1}, "w": f32}, bytes(16)),
        "st-metadata-nested": _st({"__metadata__": {"a": {"b": "c"}}, "w": f32}, bytes(16)),
        "st-metadata-list": _st({"__metadata__": ["a"], "w": f32}, bytes(16)),
        "st-dtype-size": _st({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)),
        "st-dtype-unknown": _st({"w": {"dtype": "X99", "shape": [4], "data_offsets": [0, 16]}}, bytes(16)),
        "st-shape-negative": _st({"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, bytes(16)),
        "st-shape-overflow": _st(
            {"w": {"dtype": "F32", "shape": [1 << 40, 1 << 40], "data_offsets": [0, 16]}}, bytes(16)
        ),
        "st-offsets-reversed": _st({"w": {"dtype": "F32", "shape": [0], "data_offsets": [16, 0]}}, bytes(16)),
        "st-offsets-float": _st(
            {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0.0, 16.5]}}, bytes(16)
        ),
        "st-header-array": _st(b"[1,2,3]", b""),
        "st-header-not-json": _st(b"{not json", b""),
        "st-header-bad-utf8": _st(b'{"\xff\xfe": 1}', b""),
        "st-header-nul": _st(b"{\x00}", b""),
        "st-tensor-not-object": _st({"w": "F32"}, bytes(16)),
        "st-missing-offsets": _st({"w": {"dtype": "F32", "shape": [4]}}, bytes(16)),
        "st-extra-field": _st({"w": {**f32, "exec": "os.system"}}, bytes(16)),
    }
    for name, data in cases.items():
        b.add(name, "safetensors header", data, ".safetensors", payload=False)
    # polyglots: valid-looking safetensors with a torch zip glued on, and a zip behind a safetensors header
    name = "polyglot-st-then-zip"
    evil = payload_pickle("os_system", 2, b.marker(name))
    b.add(name, "polyglot", _st(ok, bytes(16)) + torch_zip(evil), ".safetensors", control=("pickle", evil))
    name = "polyglot-zip-under-st-header"
    evil = payload_pickle("os_system", 2, b.marker(name))
    head = json.dumps({"w": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}}).encode()
    prefix = struct.pack("<Q", len(head)) + head
    b.add(
        name,
        "polyglot",
        write_zip([("archive/data.pkl", evil), ("archive/version", b"3\n")], prepend=prefix),
        ".pt",
        control=("pickle", evil),
    )


def generate(out: Path, markers: Path, *, heavy: bool = True) -> list[Case]:
    """Write the corpus under ``out``; payload markers go under ``markers`` (must not exist yet)."""
    b = _Builder(out, markers)
    data_pkl, storages, ts = _benign_pickles()
    _raw_pickles(b)
    _torch_zips(b, data_pkl, storages)
    _torch_saved(b)
    _legacy(b)
    _torchscript(b, ts)
    _zip_tricks(b, data_pkl, storages)
    _pickle_bombs(b, data_pkl, storages)
    _safetensors(b, data_pkl)
    if not heavy:
        b.cases = [c for c in b.cases if c.name not in HEAVY_CASES]
    return b.cases


# Cases the current readers fail (slow or unclean), each with the reason; tests hold them as strict xfails
# so a fix shows up as an unexpected pass. Keep this list short and explained.
KNOWN_FINDINGS: dict[str, str] = {
    "pickle-depth": (
        "max_pickle_depth counts MARK nesting only: 200,000 lists nested by EMPTY_LIST+APPEND are parsed "
        "to the end (~1 s) and refused for another reason"
    ),
    "zip-pickle-depth": "as pickle-depth, inside a torch zip",
    "zip-checkpoint-deep-list": (
        "a checkpoint dict holding a 200,000-deep list is accepted and written: max_pickle_depth (1,000) "
        "does not bound container nesting"
    ),
    "zip-pickle-ops-flood": (
        "1.2M opcodes in a 1.2 MB data.pkl are all interpreted (~2.5 s) before the refusal; "
        "max_pickle_ops (50M) allows ~100 s of CPU per upload"
    ),
}

HEAVY_CASES = frozenset({"st-header-100MB-plus-1", "zipbomb-ratio", "zipbomb-entries"})


def fired(cases: list[Case]) -> list[Case]:
    return [c for c in cases if c.marker is not None and c.marker.exists()]


_CONTROL = r"""
import io, pickle, sys, torch
for kind, path in (line.split("\t") for line in sys.stdin.read().splitlines()):
    try:
        if kind == "torch":
            torch.load(path, weights_only=False)
        else:
            pickle.loads(open(path, "rb").read())
    except BaseException:
        pass
"""


def run_controls(cases: list[Case], env: dict[str, str] | None = None) -> tuple[int, list[Case]]:
    """Run every case's control through a real unpickler in one child process; returns (controls run,
    cases whose marker did not appear). Markers are removed afterwards."""
    with_control = [c for c in cases if c.control is not None]
    lines = "\n".join(f"{c.control[0]}\t{c.control[1]}" for c in with_control if c.control)
    subprocess.run(
        [sys.executable, "-c", _CONTROL],
        input=lines,
        text=True,
        env=env,
        timeout=300,
        capture_output=True,
        cwd=with_control[0].path.parent if with_control else None,
    )
    dead = [c for c in with_control if c.marker is None or not c.marker.exists()]
    for c in with_control:
        if c.marker is not None:
            c.marker.unlink(missing_ok=True)
    return len(with_control), dead


def iter_groups(cases: list[Case]) -> Iterator[tuple[str, int]]:
    counts: dict[str, int] = {}
    for c in cases:
        counts[c.group] = counts.get(c.group, 0) + 1
    yield from sorted(counts.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stress.corpus", description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--verify", action="store_true", help="prove every payload is live (runs them!)")
    args = ap.parse_args(argv)
    cases = generate(args.out / "files", args.out / "markers")
    for group, n in iter_groups(cases):
        print(f"{n:5d}  {group}")
    print(f"{len(cases):5d}  cases in {args.out / 'files'}")
    if args.verify:
        n, dead = run_controls(cases)
        print(f"controls run: {n}, payloads that did not fire: {[c.name for c in dead]}")
        return 1 if dead else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
