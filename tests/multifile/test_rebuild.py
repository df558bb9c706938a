"""The client's rebuild of an output file from a local base and a patch entry: ranges of the base copied in
the kernel where the system can, read and written otherwise; the same verified bytes either way."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from layerfreeze_client import IntegrityError
from layerfreeze_client._patch import rebuild


def entry_for(base: bytes) -> tuple[dict[str, object], bytes]:
    head = b"new header bytes"
    out = head + base[100:5000] + b"\x01" + base[5001:]
    segments = [{"data": base64.b64encode(head).decode()}, {"base": [100, 5000]},
                {"data": base64.b64encode(b"\x01").decode()}, {"base": [5001, len(base)]}]
    return {"path": "shard.bin", "base": {"sha256": hashlib.sha256(base).hexdigest(), "bytes": len(base)},
            "output": {"sha256": hashlib.sha256(out).hexdigest(), "bytes": len(out)},
            "segments": segments}, out


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_rebuild_gives_the_promised_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          kernel_copy: bool) -> None:
    if not kernel_copy:
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    data = os.urandom(3 << 20)
    (tmp_path / "base").write_bytes(data)
    entry, expected = entry_for(data)
    out = rebuild(tmp_path / "base", entry, tmp_path / "out")
    assert out.read_bytes() == expected

    entry["output"] = {**entry["output"], "sha256": "0" * 64}  # type: ignore[dict-item]
    with pytest.raises(IntegrityError):
        rebuild(tmp_path / "base", entry, tmp_path / "bad")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "out"]  # nothing half-written
