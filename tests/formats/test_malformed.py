"""Malformed and hostile containers get a clean FormatError / LimitExceeded, quickly, and nothing else."""

from __future__ import annotations

import contextlib
import json
import os
import random
import struct
import time
import zipfile
from pathlib import Path

import pytest
import torch
from fixtures.models import save
from layerfreeze.errors import ArchiveError, FormatError, LimitExceeded, SafetensorsFormatError
from layerfreeze.formats.detect import open_archive
from layerfreeze.limits import ReadLimits
from torch import nn

from formats.hostile import safetensors_bytes, zip_with_data_pkl

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BAD = (FormatError, LimitExceeded)


def rejects(path: Path, limits: ReadLimits | None = None, kind: type[Exception] | tuple = BAD,
            seconds: float = 1.0) -> Exception:
    started = time.monotonic()
    with pytest.raises(kind) as info:
        open_archive(path, limits or ReadLimits())
    assert time.monotonic() - started < seconds
    assert str(info.value)
    return info.value


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    assert "empty" in str(rejects(path))


def test_random_bytes(tmp_path: Path) -> None:
    rng = random.Random(7)
    for i in range(30):
        path = tmp_path / f"r{i}.pt"
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096))))
        rejects(path)


def test_unknown_content_says_what_it_starts_with(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(b"GIF89a" + b"\x00" * 40)
    assert "starts with b'GIF89a" in str(rejects(path))


def _saved(tmp_path: Path, fmt: str) -> Path:
    """A small real checkpoint (Linear, BatchNorm, Linear) in ``fmt`` (``zip`` = a torch.save state dict)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    return save(model, tmp_path / f"src.{fmt}", "state_dict" if fmt == "zip" else fmt)


@pytest.mark.parametrize("fmt", ["zip", "module", "legacy", "torchscript", "safetensors"])
def test_truncated_at_many_points(tmp_path: Path, fmt: str) -> None:
    data = _saved(tmp_path, fmt).read_bytes()
    cut = tmp_path / "cut.pt"
    points = sorted({*range(0, len(data), max(1, len(data) // 60)), len(data) - 1, 8, 9, 30})
    for n in points:
        cut.write_bytes(data[:n])
        rejects(cut)


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors"])
def test_corrupted_bytes(tmp_path: Path, fmt: str) -> None:
    """Single-byte corruption anywhere either still reads (tensor bytes) or is a clean error."""
    data = bytearray(_saved(tmp_path, fmt).read_bytes())
    rng = random.Random(3)
    bad = tmp_path / "bad.pt"
    for _ in range(60):
        copy = bytearray(data)
        copy[rng.randrange(len(copy))] ^= 0xFF
        bad.write_bytes(bytes(copy))
        with contextlib.suppress(*BAD):
            open_archive(bad)


def _patch_central(path: Path, member: str, *, size: int | None = None, attr: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
    pos = data.rfind(b"PK\x05\x06")
    (cd_offset,) = struct.unpack("<I", data[pos + 16:pos + 20])
    p = cd_offset
    for info in infos:
        nlen, xlen, clen = struct.unpack("<HHH", data[p + 28:p + 34])
        if info.filename == member:
            if size is not None:
                data[p + 24:p + 28] = struct.pack("<I", size)
            if attr is not None:
                data[p + 38:p + 42] = struct.pack("<I", attr)
        p += 46 + nlen + xlen + clen
    path.write_bytes(bytes(data))


def test_zip_member_declaring_a_huge_size(tmp_path: Path) -> None:
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("a/code/x.py", b"x" * 1000)
    _patch_central(path, "a/code/x.py", size=0xFFFFFFF0)
    err = rejects(path)
    assert isinstance(err, LimitExceeded) and err.limit == "max_zip_ratio"


def test_stored_member_size_beyond_the_file(tmp_path: Path) -> None:
    path = _saved(tmp_path, "zip")
    name = zipfile.ZipFile(path).namelist()[-1]
    _patch_central(path, name, size=1 << 30)
    rejects(path, kind=ArchiveError)


def test_too_many_entries(tmp_path: Path) -> None:
    path = _saved(tmp_path, "zip")
    err = rejects(path, ReadLimits(max_zip_entries=5))
    assert isinstance(err, LimitExceeded) and err.limit == "max_zip_entries"


@pytest.mark.parametrize("name", ["../evil/data.pkl", "/abs/data.pkl", "a/../../data.pkl", "C:/a/data.pkl"])
def test_escaping_member_names(tmp_path: Path, name: str) -> None:
    path = tmp_path / "z.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo(name), b"\x80\x02}.")
    assert "escapes" in str(rejects(path, kind=ArchiveError))


def test_symlink_member(tmp_path: Path) -> None:
    path = zip_with_data_pkl(tmp_path / "z.pt", b"\x80\x02}.", extra={"data/0": b"/etc/passwd"})
    _patch_central(path, "archive/data/0", attr=(0o120777 << 16))
    assert "symbolic link" in str(rejects(path, kind=ArchiveError))


def test_duplicate_member(tmp_path: Path) -> None:
    path = tmp_path / "z.pt"
    with pytest.warns(UserWarning), zipfile.ZipFile(path, "w") as z:
        z.writestr("a/data.pkl", b"\x80\x02}.")
        z.writestr("a/data.pkl", b"\x80\x02}.")
    assert "twice" in str(rejects(path, kind=ArchiveError))


def test_members_in_two_folders(tmp_path: Path) -> None:
    path = zip_with_data_pkl(tmp_path / "z.pt", b"\x80\x02}.")
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("other/data/0", b"0000")
    assert "two folders" in str(rejects(path, kind=ArchiveError))


def test_zip_without_data_pkl(tmp_path: Path) -> None:
    path = tmp_path / "z.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a/readme.txt", b"hello")
    assert "no data.pkl" in str(rejects(path))


def test_deflated_data_pkl_too_large_for_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "z.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        rng = random.Random(1)
        items = b"".join(b"J" + rng.randbytes(4) for _ in range(2000))
        z.writestr("a/data.pkl", b"\x80\x02]q\x00(" + items + b"e.")
    err = rejects(path, ReadLimits(max_pickle_bytes=1000))
    assert isinstance(err, LimitExceeded) and err.limit == "max_pickle_bytes"


def test_tensor_pointing_past_its_storage(tmp_path: Path) -> None:
    src = _saved(tmp_path, "zip")
    with zipfile.ZipFile(src) as z:
        names = z.namelist()
        root = names[0].split("/")[0]
        members = {n: z.read(n) for n in names}
    members[f"{root}/data/0"] = members[f"{root}/data/0"][:4]  # storage shorter than declared
    path = tmp_path / "short.pt"
    with zipfile.ZipFile(path, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    assert "declared" in str(rejects(path))


def test_pickle_op_and_depth_limits(tmp_path: Path) -> None:
    path = tmp_path / "deep.bin"
    path.write_bytes(b"\x80\x02" + b"(" * 5000 + b".")
    err = rejects(path)
    assert isinstance(err, LimitExceeded) and err.limit == "max_pickle_depth"
    path.write_bytes(b"\x80\x02]" + b"K\x01a" * 3000 + b".")
    err = rejects(path, ReadLimits(max_pickle_ops=1000))
    assert isinstance(err, LimitExceeded) and err.limit == "max_pickle_ops"


@pytest.mark.parametrize("opener", [b"]", b")"])
def test_nesting_without_marks(tmp_path: Path, opener: bytes) -> None:
    """200,000 lists (or 1-tuples) nested by APPEND / TUPLE1 alone. The lists pile up on the stack before
    the first APPEND and are stopped there (max_pickle_stack); the tuples nest one by one and are stopped
    by depth."""
    closer = b"a" if opener == b"]" else b"\x85"
    path = tmp_path / "deep.bin"
    path.write_bytes(b"\x80\x02" + (opener * 200_000 + closer * 199_999 if opener == b"]"
                                      else b"N" + closer * 200_000) + b".")
    err = rejects(path, seconds=3.0)
    expected = "max_pickle_stack" if opener == b"]" else "max_pickle_depth"
    assert isinstance(err, LimitExceeded) and err.limit == expected


def test_nesting_built_backwards_through_the_memo(tmp_path: Path) -> None:
    """Each new list goes into the previous innermost one, fetched from the memo: still bounded."""
    ops = [b"\x80\x02]r\x00\x00\x00\x00"]  # root list, memo 0
    for i in range(1, 1500):
        ops.append(b"j" + struct.pack("<I", i - 1) + b"]r" + struct.pack("<I", i) + b"a0")
    path = tmp_path / "memo-deep.bin"
    path.write_bytes(b"".join(ops) + b".")
    err = rejects(path)
    assert isinstance(err, LimitExceeded) and err.limit == "max_pickle_depth"


def test_legacy_pickle_longer_than_the_limit(tmp_path: Path) -> None:
    path = _saved(tmp_path, "legacy")
    err = rejects(path, ReadLimits(max_pickle_bytes=200))
    assert isinstance(err, LimitExceeded) and err.limit == "max_pickle_bytes"


def test_memo_read_before_write(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(b"\x80\x02h\x07.")
    rejects(path, kind=FormatError)


# -- safetensors header attacks ------------------------------------------------------------------------
T = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


@pytest.mark.parametrize(
    ("blob", "kind"),
    [
        (safetensors_bytes(T, b"\x00" * 8, length=10_000), SafetensorsFormatError),  # beyond the file
        (safetensors_bytes(T, b"\x00" * 8, length=100_000_001), LimitExceeded),  # over the cap
        (safetensors_bytes(b"[1, 2]" + b" " * 10), FormatError),  # not an object / not '{'
        (safetensors_bytes(b"{not json}"), SafetensorsFormatError),
        (safetensors_bytes({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                            "v": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\x00" * 12),
         SafetensorsFormatError),  # overlap
        (safetensors_bytes({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                            "v": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}}, b"\x00" * 20),
         SafetensorsFormatError),  # gap
        (safetensors_bytes(T, b"\x00" * 9), SafetensorsFormatError),  # trailing bytes
        (safetensors_bytes(T, b"\x00" * 7), SafetensorsFormatError),  # short data
        (safetensors_bytes({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\x00" * 8),
         SafetensorsFormatError),  # shape x dtype != bytes
        (safetensors_bytes({"w": {"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}}, b"\x00" * 8),
         SafetensorsFormatError),
        (safetensors_bytes({"__metadata__": {"a": 1}, **T}, b"\x00" * 8), SafetensorsFormatError),
        (safetensors_bytes({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\x00" * 8),
         SafetensorsFormatError),
    ],
    ids=["beyond-file", "over-cap", "not-object", "not-json", "overlap", "gap", "trailing", "short",
         "shape-mismatch", "dtype", "metadata-non-string", "negative-shape"],
)
def test_safetensors_header_attacks(tmp_path: Path, blob: bytes, kind: type[Exception]) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(blob)
    rejects(path, kind=kind)


def test_safetensors_valid_minimal_reads(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(safetensors_bytes({"__metadata__": {"a": "b"}, **T}, b"\x00" * 8))
    inv = open_archive(path).inventory
    assert [t.name for t in inv.tensors] == ["w"] and inv.tensors[0].dtype == "float32"


def test_huge_declared_header_is_not_read(tmp_path: Path) -> None:
    """A header length near 2**64 is refused from the 8 bytes alone."""
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", (1 << 64) - 1) + b"{}")
    rejects(path)
    assert os.path.getsize(path) == 10


def test_layerfreeze_metadata_must_be_ours(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(safetensors_bytes({"__metadata__": {"layerfreeze": json.dumps([1])}, **T}, b"\x00" * 8))
    rejects(path, kind=SafetensorsFormatError)


def test_torch_export_archive_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.pt2"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("m/archive_format", b"pt2")
        z.writestr("m/models/model.json", b"{}")
    assert "torch.export" in str(rejects(path))


def test_data_pkl_crc_mismatch(tmp_path: Path) -> None:
    path = _saved(tmp_path, "zip")
    data = bytearray(path.read_bytes())
    at = data.find(b"collections")  # inside data.pkl
    data[at] = ord("C")
    path.write_bytes(bytes(data))
    assert "CRC" in str(rejects(path, kind=ArchiveError))


def test_local_header_naming_another_member(tmp_path: Path) -> None:
    path = zip_with_data_pkl(tmp_path / "z.pt", b"\x80\x02}.")
    data = bytearray(path.read_bytes())
    at = data.find(b"archive/data.pkl")  # the local header's copy comes first
    data[at:at + 16] = b"archive/data.pkx"
    path.write_bytes(bytes(data))
    assert "different member" in str(rejects(path, kind=ArchiveError))
