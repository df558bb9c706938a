"""Arbitrary bytes after a pickle header, and mutated real pickles: only our own errors, never a crash,
never a hang."""

from __future__ import annotations

import contextlib
import io
import zipfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layerfreeze.errors import FormatError, LimitExceeded
from layerfreeze.formats.detect import open_archive
from layerfreeze.limits import ReadLimits

LIMITS = ReadLimits(max_pickle_ops=20_000, max_pickle_depth=200)
FUZZ = settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _real_members() -> dict[str, bytes]:
    buf = io.BytesIO()
    torch.manual_seed(0)
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)), buf)
    with zipfile.ZipFile(buf) as z:
        return {n: z.read(n) for n in z.namelist()}


MEMBERS = _real_members()
PKL_NAME = next(n for n in MEMBERS if n.endswith("data.pkl"))
REAL = MEMBERS[PKL_NAME]


def _open(path: Path, blob: bytes) -> None:
    path.write_bytes(blob)
    with contextlib.suppress(FormatError, LimitExceeded):
        open_archive(path, LIMITS)


def _as_archive(data_pkl: bytes) -> bytes:
    """The real archive (tensor storages included) with ``data_pkl`` in place of its data.pkl."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in MEMBERS.items():
            z.writestr(name, data_pkl if name == PKL_NAME else data)
    return buf.getvalue()


@FUZZ
@given(body=st.binary(max_size=400), proto=st.integers(0, 5))
def test_arbitrary_pickle_bodies(tmp_path: Path, body: bytes, proto: int) -> None:
    _open(tmp_path / "f.bin", (b"\x80" + bytes([proto]) if proto >= 2 else b"") + body)


@FUZZ
@given(data=st.data())
def test_mutated_real_module_pickle(tmp_path: Path, data: st.DataObject) -> None:
    blob = bytearray(REAL)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(blob) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            blob[at] = data.draw(st.integers(0, 255))
        elif action == "delete":
            del blob[at]
        else:
            blob.insert(at, data.draw(st.integers(0, 255)))
    _open(tmp_path / "raw.bin", bytes(blob))  # the pickle machine on its own
    _open(tmp_path / "zip.pt", _as_archive(bytes(blob)))  # and with the model recovery behind it


def test_unmutated_archive_reads(tmp_path: Path) -> None:
    """Control for the fuzzers: the base archive is a valid module checkpoint."""
    path = tmp_path / "ok.pt"
    path.write_bytes(_as_archive(REAL))
    inv = open_archive(path, LIMITS).inventory
    assert inv.format == "torch.module" and len([t for t in inv.tensors if t.kind == "parameter"]) == 4
