"""Every zoo model in every format: the inventory matches what torch says of the live model, and a written
freeze map is exactly what torch (or safetensors) reads back, with every tensor's bytes unchanged."""

from __future__ import annotations

import hashlib
import json
import random
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from fixtures.models import save
from layerfreeze.core.model import Inventory
from layerfreeze.formats.detect import open_archive
from safetensors import safe_open
from safetensors.torch import load_file

from formats.conftest import ZOO, example_for, make_model
from formats.expected import Expected, of_module, of_state_dict

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FORMATS = ("state_dict", "checkpoint", "module", "torchscript", "safetensors", "legacy")
FORMAT_NAMES = {"state_dict": "torch.state_dict", "checkpoint": "torch.checkpoint", "module": "torch.module",
                "torchscript": "torchscript", "safetensors": "safetensors", "legacy": "torch.state_dict"}


def _save(name: str, fmt: str, path: Path) -> torch.nn.Module:
    model = make_model(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save(model, path, fmt, example_for(name))
    return model


def _check_names(inv: Inventory, exp: Expected, *, ordered: bool = True) -> None:
    params = [t for t in inv.tensors if t.kind == "parameter"]
    buffers = [t for t in inv.tensors if t.kind == "buffer"]
    if ordered:
        assert [t.name for t in params] == exp.parameters
        assert [t.name for t in buffers] == exp.buffers
    else:
        assert sorted(t.name for t in params) == sorted(exp.parameters)
        assert sorted(t.name for t in buffers) == sorted(exp.buffers)
    for t in inv.tensors:
        assert list(t.aliases) == exp.aliases.get(t.name, []), t.name
        assert t.shape == exp.shapes[t.name], t.name
        assert t.dtype == exp.dtypes[t.name], t.name


def _check_tree(inv: Inventory, exp: Expected, *, types: bool) -> None:
    assert inv.modules[0].path == ""
    got = {m.path: m for m in inv.modules}
    if inv.children_exact:
        assert [m.path for m in inv.modules] == list(exp.children)
        for path, children in exp.children.items():
            assert list(got[path].children) == children, path
    if types:
        assert inv.types_known
        assert {m.path: m.type for m in inv.modules} == exp.types


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(ZOO))
def test_inventory_matches_torch(name: str, fmt: str, tmp_path: Path) -> None:
    path = tmp_path / "model.bin"  # never the real extension: detection is by content
    model = _save(name, fmt, path)
    inv = open_archive(path).inventory
    assert inv.format == FORMAT_NAMES[fmt]
    if fmt in ("state_dict", "checkpoint", "legacy"):
        _check_names(inv, of_state_dict(model))
        _check_tree(inv, of_state_dict(model), types=False)
        assert all(t.requires_grad is None for t in inv.tensors)  # state_dict() records nothing
        if fmt == "checkpoint":
            assert inv.prefix == "state_dict"
            assert "optimizer_states" in inv.notes[0]
    elif fmt == "module":
        _check_names(inv, of_module(model))
        _check_tree(inv, of_module(model), types=True)
        flags = dict(model.named_parameters())
        for t in inv.tensors:
            if t.kind == "parameter":
                assert t.requires_grad == flags[t.name].requires_grad
    elif fmt == "torchscript":
        loaded = torch.jit.load(str(path))
        exp = of_module(loaded)
        exp.types = {p: f"{type(m).__module__}.{type(m).__qualname__}" for p, m in model.named_modules()
                     if p in exp.types}
        _check_names(inv, exp)
        _check_tree(inv, exp, types=True)
    else:  # safetensors drops tied duplicates and records no order, types or buffers
        stored = load_file(str(path))
        exp = of_state_dict(model)
        assert sorted(t.name for t in inv.tensors) == sorted(stored)
        for t in inv.tensors:
            assert t.shape == tuple(stored[t.name].shape) and t.requires_grad is None
            assert t.kind == ("buffer" if t.name in exp.buffers else "parameter"), t.name
        assert not inv.types_known and not inv.children_exact


def _random_final(inv: Inventory, seed: int) -> dict[str, bool]:
    rng = random.Random(seed)
    final: dict[str, bool] = {}
    for t in inv.tensors:
        if t.kind == "parameter":
            value = rng.random() < 0.5
            for n in (t.name, *t.aliases):
                final[n] = value
    return final


def _tensors_of(obj: object) -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.nn.Module):
        return dict(obj.named_parameters(remove_duplicate=False)) | dict(obj.named_buffers())
    if isinstance(obj, dict) and "state_dict" in obj:
        return obj["state_dict"]
    return obj  # type: ignore[return-value]


def _load(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    if fmt == "torchscript":
        return _tensors_of(torch.jit.load(str(path)))
    if fmt == "safetensors":
        return load_file(str(path))
    if fmt == "module":  # our own fixture file: trusted, so the classes may be imported
        return _tensors_of(torch.load(path, weights_only=False, mmap=True))
    return _tensors_of(torch.load(path, weights_only=True, mmap=fmt != "legacy"))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(ZOO))
def test_written_flags_are_what_torch_loads(name: str, fmt: str, tmp_path: Path) -> None:
    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    _save(name, fmt, src)
    archive = open_archive(src)
    final = _random_final(archive.inventory, seed=len(name) * 31 + len(fmt))
    written = archive.write(dst, final, "ab" * 32)
    assert written.bytes == dst.stat().st_size
    assert written.sha256 == hashlib.sha256(dst.read_bytes()).hexdigest()
    assert written.source_sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    if zipfile.is_zipfile(dst):
        with zipfile.ZipFile(dst) as z:
            assert z.testzip() is None  # every CRC is right

    before, after = _load(src, fmt), _load(dst, fmt)
    assert sorted(before) == sorted(after)
    for key, tensor in before.items():
        assert after[key].dtype == tensor.dtype and torch.equal(after[key], tensor), key
    kinds = {t.name: t.kind for t in archive.inventory.tensors}
    kinds.update({a: t.kind for t in archive.inventory.tensors for a in t.aliases})
    if fmt == "safetensors":
        with safe_open(str(src), "pt") as f:
            original = f.metadata() or {}
        with safe_open(str(dst), "pt") as f:
            assert {k: v for k, v in f.metadata().items() if k != "layerfreeze"} == original
            meta = json.loads(f.metadata()["layerfreeze"])
        assert meta["format_version"] == 1 and meta["spec_sha256"] == "ab" * 32
        assert meta["frozen"] == [n for n, v in final.items() if not v and kinds.get(n) == "parameter"
                                  and n in before]
        assert sorted(meta["trainable"]) == sorted(n for n, v in final.items() if v and n in before)
    else:
        for key, tensor in after.items():
            want = final.get(key, False) if kinds.get(key) == "parameter" else False
            assert tensor.requires_grad == want, key

    # Our own output reads back with the flags we wrote (unless nothing at all was left trainable in a
    # plain state dict, which is indistinguishable from "nothing recorded").
    again = open_archive(dst).inventory
    assert [t.name for t in again.tensors] == [t.name for t in archive.inventory.tensors]
    if any(final.values()):
        for t in again.tensors:
            if t.kind == "parameter":
                assert t.requires_grad == final[t.name], t.name


def test_a_checkpoint_with_dtype_values_is_read(tmp_path):
    """Training loops save the dtype they ran in (``{"dtype": torch.bfloat16, "model": sd}``)."""
    import torch
    from layerfreeze.formats.detect import open_archive

    path = tmp_path / "ckpt.pt"
    torch.save({"dtype": torch.bfloat16, "amp": torch.float16, "model": torch.nn.Linear(2, 2).state_dict()},
               path)
    names = [t.name for t in open_archive(path).inventory.tensors]
    assert names == ["weight", "bias"]
