"""The strict zip reader (formats/zipread.py) on small inline archives: what torch.save writes is listed
exactly (offsets that point at the data and at every CRC); names that escape, links, duplicates, two
roots, encryption, bombs and truncation are refused before anything is decompressed."""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib

import pytest
import torch
from layerfreeze.errors import ArchiveError, LimitExceeded
from layerfreeze.formats.zipread import ZipListing, read_listing, read_member
from layerfreeze.limits import ReadLimits

from testing.hostile.zips import deflated, patch_member, symlink, torch_zip, write_ratio_bomb, write_zip

PKL = b"\x80\x02}q\x00."


def listing(data: bytes, limits: ReadLimits | None = None) -> ZipListing:
    return read_listing(io.BytesIO(data), len(data), limits or ReadLimits())


def test_a_torch_save_archive_is_listed_under_its_root() -> None:
    buf = io.BytesIO()
    torch.save({"w": torch.arange(4, dtype=torch.float32)}, buf)
    data = buf.getvalue()
    got = listing(data)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
        root = names[0].split("/")[0]
        assert got.root == root
        assert sorted(got.members) == sorted(n.removeprefix(root + "/") for n in names)
        storage = got.members["data/0"]
        assert read_member(io.BytesIO(data), storage, 1 << 20) == z.read(f"{root}/data/0")
    assert data[storage.data_offset:storage.data_offset + storage.size] == torch.arange(4.0).numpy().tobytes()


@pytest.mark.parametrize("stream", [False, True], ids=["seekable", "data-descriptors"])
def test_crc_offsets_point_at_the_crc_fields(stream: bool) -> None:
    bodies = {"m/a": b"hello", "m/b": b"world"}
    data = write_zip(list(bodies.items()), stream=stream)
    for member in listing(data).members.values():
        assert member.crc == zlib.crc32(bodies[member.name])
        # a streamed member's local header holds 0: its CRC follows the data, in the descriptor
        second = member.descriptor_crc_offset if stream else member.local_crc_offset
        for at in (member.central_crc_offset, second):
            assert at is not None and struct.unpack_from("<I", data, at)[0] == member.crc


def test_deflated_members_inflate_to_their_bytes() -> None:
    body = random.Random(0).randbytes(2000) + bytes(2000)  # compresses, well within the ratio limit
    data = write_zip([(deflated("m/data.pkl"), body)])
    member = listing(data).members["data.pkl"]
    assert member.method == 8 and member.compressed_size < member.size
    assert read_member(io.BytesIO(data), member, 1 << 20) == body


def test_bytes_before_the_archive_keep_offsets_absolute() -> None:
    data = write_zip([("m/data.pkl", PKL)], prepend=b"#!prefix\n")
    member = listing(data).members["data.pkl"]
    assert data[member.data_offset:member.data_offset + len(PKL)] == PKL


@pytest.mark.parametrize("members", [
    [("m/../../etc/passwd", b"x")],
    [("/m/data.pkl", b"x")],
    [("m/data.pkl", PKL), ("m/data.pkl", PKL)],  # the same name twice: which one is read?
    [("a/data.pkl", PKL), ("b/data.pkl", PKL)],  # two roots
    [("data.pkl", PKL)],  # no root folder
    [(symlink("m/data/0"), b"/etc/passwd"), ("m/data.pkl", PKL)],
], ids=["dot-dot", "absolute", "duplicate", "two-roots", "no-root", "symlink"])
def test_ambiguous_or_escaping_names_are_refused(members: list) -> None:  # type: ignore[type-arg]
    with pytest.raises(ArchiveError):
        listing(write_zip(members))


def test_encrypted_members_are_refused() -> None:
    with pytest.raises(ArchiveError):
        listing(patch_member(torch_zip(PKL), "archive/data.pkl", set_flags=0x1))


def test_a_compression_bomb_is_refused_from_its_header() -> None:
    with pytest.raises(LimitExceeded) as err:
        listing(write_ratio_bomb(PKL, 64 << 20))
    assert err.value.limit == "max_zip_ratio"


def test_entry_count_is_limited() -> None:
    data = torch_zip(PKL, storages=[(str(i), b"\0" * 4) for i in range(20)])
    assert len(listing(data).members) == 24
    with pytest.raises(LimitExceeded) as err:
        listing(data, ReadLimits(max_zip_entries=10))
    assert err.value.limit == "max_zip_entries"


def test_a_member_over_the_cap_is_not_read() -> None:
    data = torch_zip(b"\x80\x02" + b"N0" * 1000 + b"}.")
    member = listing(data).members["data.pkl"]
    with pytest.raises(LimitExceeded):
        read_member(io.BytesIO(data), member, 100)


def test_a_member_that_fails_its_crc_is_refused() -> None:
    data = bytearray(torch_zip(PKL))
    member = listing(bytes(data)).members["data.pkl"]
    data[member.data_offset] ^= 0xFF
    with pytest.raises(ArchiveError):
        read_member(io.BytesIO(bytes(data)), member, 1 << 20)


@pytest.mark.parametrize("cut", [1, 22, 200])
def test_a_truncated_archive_is_refused(cut: int) -> None:
    data = torch_zip(PKL, storages=[("0", b"\0" * 64)])
    with pytest.raises(ArchiveError):
        listing(data[:-cut])


def test_not_a_zip_is_refused() -> None:
    with pytest.raises(ArchiveError):
        listing(b"\x80\x02}." + b"\0" * 100)
