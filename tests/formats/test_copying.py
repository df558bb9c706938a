"""The streaming copier: patches land exactly, across chunk boundaries, and both hashes are right."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from layerfreeze.formats.copying import CHUNK, stream_copy
from layerfreeze.formats.module_tree import modules_from_names


def test_patches_across_chunk_boundaries(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    data = os.urandom(2 * CHUNK + 12345)
    src.write_bytes(data)
    patches = {0: b"\x01", CHUNK - 2: b"\xaa\xbb\xcc\xdd", 2 * CHUNK + 5: b"zz", len(data) - 1: b"\x00"}
    written = stream_copy(src, dst, patches)
    expected = bytearray(data)
    for off, value in patches.items():
        expected[off:off + len(value)] = value
    assert dst.read_bytes() == bytes(expected)
    assert written.bytes == len(data)
    assert written.sha256 == hashlib.sha256(expected).hexdigest()
    assert written.source_sha256 == hashlib.sha256(data).hexdigest()


def test_new_head_replaces_the_skipped_prefix(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    data = os.urandom(CHUNK + 77)
    src.write_bytes(data)
    written = stream_copy(src, dst, {100: b"Q"}, head=b"HEADER!!", skip=64)
    expected = b"HEADER!!" + data[64:100] + b"Q" + data[101:]
    assert dst.read_bytes() == expected
    assert written.sha256 == hashlib.sha256(expected).hexdigest()
    assert written.source_sha256 == hashlib.sha256(data).hexdigest()


def test_empty_source(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"")
    written = stream_copy(src, dst)
    assert dst.read_bytes() == b"" and written.sha256 == hashlib.sha256(b"").hexdigest()


@pytest.mark.heavy
def test_memory_stays_flat_for_a_large_file(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """Copy 512 MiB in a child process and check its peak RSS stays far below the file size."""
    src = tmp_path / "big"
    with open(src, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(512):
            f.write(block)
    code = (
        "import sys; from pathlib import Path; from layerfreeze.formats.copying import stream_copy\n"
        "stream_copy(Path(sys.argv[1]), Path(sys.argv[2]), {5: b'x'})\n"
        "from testing.procs import peak_rss_mib; print(peak_rss_mib())\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(src), str(tmp_path / "out")], env=subprocess_env,
                         capture_output=True, text=True, check=True, timeout=300)
    peak_mib = float(out.stdout.strip())
    assert peak_mib < 96, f"peak RSS {peak_mib:.1f} MiB"
    assert (tmp_path / "out").stat().st_size == src.stat().st_size


def test_deep_names_do_not_recurse() -> None:
    name = ".".join(["m"] * 5000) + ".weight"
    modules, exact = modules_from_names([name])
    assert len(modules) == 5001 and not exact


@pytest.mark.parametrize("patch_at", [None, 3 * CHUNK // 2, 2 * CHUNK - 1])
def test_shared_prefix_hash(tmp_path: Path, patch_at: int | None) -> None:
    """Late or no patches (TorchScript keeps data.pkl last): the shared-prefix shortcut stays exact."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    data = os.urandom(2 * CHUNK)
    src.write_bytes(data)
    patches = {} if patch_at is None else {patch_at: b"\x00\x01"[: 2 * CHUNK - patch_at]}
    written = stream_copy(src, dst, patches)
    expected = bytearray(data)
    for off, value in patches.items():
        expected[off:off + len(value)] = value
    assert dst.read_bytes() == bytes(expected)
    assert written.sha256 == hashlib.sha256(expected).hexdigest()
    assert written.source_sha256 == hashlib.sha256(data).hexdigest()


def test_known_source_digest_skips_the_source_pass(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    data = os.urandom(CHUNK + 5)
    src.write_bytes(data)
    known = hashlib.sha256(data).hexdigest()
    written = stream_copy(src, dst, {CHUNK: b"!"}, source_sha256=known)
    expected = data[:CHUNK] + b"!" + data[CHUNK + 1:]
    assert written.source_sha256 == known
    assert written.sha256 == hashlib.sha256(expected).hexdigest() and dst.read_bytes() == expected


def test_a_given_source_digest_is_trusted_and_hashing_can_be_skipped(tmp_path: Path) -> None:
    """The service hands over the digest it took on arrival: the source is not read for it again, and
    with nothing to hash the writer returns no digests at all."""
    from layerfreeze.formats.copying import write_segments

    src, dst = tmp_path / "src", tmp_path / "dst"
    data = os.urandom(CHUNK + 5)
    src.write_bytes(data)
    segments = [(0, CHUNK), b"!", (CHUNK + 1, CHUNK + 5)]
    expected = data[:CHUNK] + b"!" + data[CHUNK + 1:]
    written = write_segments(src, dst, segments, source_sha256="given")
    assert written.source_sha256 == "given"  # returned as given, not recomputed
    assert written.sha256 == hashlib.sha256(expected).hexdigest() and dst.read_bytes() == expected
    bare = write_segments(src, dst, segments, hash_source=False, hash_output=False)
    assert (bare.source_sha256, bare.sha256) == ("", "") and dst.read_bytes() == expected
