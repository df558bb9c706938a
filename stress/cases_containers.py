"""Corpus families in the containers: zip tricks and bombs, safetensors header attacks, polyglots."""

from __future__ import annotations

import json
import struct

from stress.case import Builder
from stress.payloads import payload_pickle
from stress.zips import deflated, patch_member, symlink, torch_zip, write_ratio_bomb, write_zip


def zip_tricks(b: Builder, data_pkl: bytes, storages: list[tuple[str, bytes]]) -> None:
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


def _st(header: dict | bytes, data: bytes, *, length: int | None = None, trailing: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if length is None else length
    return struct.pack("<Q", n) + raw + data + trailing


def safetensors(b: Builder, data_pkl: bytes) -> None:
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
