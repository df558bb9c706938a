"""safetensors specifics: other metadata survives, the header stays aligned, our key is replaced on a
second freeze, and the recorded lists become the start state."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from layerfreeze.formats.detect import open_archive
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def _tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"enc.weight": torch.randn(4, 3), "enc.bias": torch.randn(4), "bn.running_mean": torch.zeros(4),
            "ids": torch.arange(4), "head.weight": torch.randn(2, 4).to(torch.bfloat16)}


def test_metadata_kept_header_aligned_and_refreeze(tmp_path: Path) -> None:
    src, once, twice = tmp_path / "a.safetensors", tmp_path / "b.safetensors", tmp_path / "c.safetensors"
    tensors = _tensors()
    save_file(tensors, str(src), metadata={"format": "pt", "note": "kept"})
    inv = open_archive(src).inventory
    kinds = {t.name: t.kind for t in inv.tensors}
    assert kinds == {"enc.weight": "parameter", "enc.bias": "parameter", "bn.running_mean": "buffer",
                     "ids": "buffer", "head.weight": "parameter"}
    assert all(t.requires_grad is None for t in inv.tensors)

    open_archive(src).write(once, {"enc.weight": False, "enc.bias": True, "head.weight": True}, "1" * 64)
    (header_len,) = struct.unpack("<Q", once.read_bytes()[:8])
    assert header_len % 8 == 0
    with safe_open(str(once), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and meta["note"] == "kept"
    record = json.loads(meta["layerfreeze"])
    assert record == {"format_version": 1, "frozen": ["enc.weight"], "trainable": ["enc.bias", "head.weight"],
                      "spec_sha256": "1" * 64}
    assert {t.name: t.requires_grad for t in open_archive(once).inventory.tensors} == {
        "enc.weight": False, "enc.bias": True, "head.weight": True, "bn.running_mean": False, "ids": False}

    open_archive(once).write(twice, {"enc.weight": True, "enc.bias": True, "head.weight": False}, "2" * 64)
    with safe_open(str(twice), "pt") as f:
        record = json.loads(f.metadata()["layerfreeze"])
        assert f.metadata()["note"] == "kept"
    assert record["frozen"] == ["head.weight"] and record["spec_sha256"] == "2" * 64
    loaded = load_file(str(twice))
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor)
