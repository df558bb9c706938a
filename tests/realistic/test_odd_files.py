"""Odd and hostile files a user may really upload: misleading names, extra zip members, dicts without a
model, repacked archives, our own outputs fed back in, odd dtypes. Each gets a correct result or a clear
error of the layerfreeze tree; nothing half-written is left behind."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
from fixtures.models import build, save
from layerfreeze.errors import ArchiveError, FormatError, SafetensorsFormatError, SpecError
from layerfreeze.freeze import freeze_file
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from realistic._check import assert_state_dict_output, frozen, run, same_bytes

FREEZE_0 = {"rules": [{"action": "freeze", "names": ["0"]}]}


def _seq3(tmp: Path, name: str = "sd.pt") -> Path:
    src = tmp / name
    torch.save(build("seq3").state_dict(), src)
    return src


def test_torch_file_named_safetensors(tmp_path: Path) -> None:
    src = _seq3(tmp_path, "model.safetensors")
    report, dst = run(src, FREEZE_0, tmp_path)
    assert report["format"] == "torch.state_dict"
    # torch.load picks its safetensors reader by the suffix: the user's own mislabel, so read the bytes
    with open(dst, "rb") as f:
        state = torch.load(f, weights_only=True)
    assert {k: v.requires_grad for k, v in state.items()} == \
        {"0.weight": False, "0.bias": False, "2.weight": True, "2.bias": True}
    with open(src, "rb") as f:
        before = torch.load(f, weights_only=True)
    assert all(same_bytes(before[k], state[k]) for k in before)


def test_safetensors_named_pt(tmp_path: Path) -> None:
    src = save(build("seq3"), tmp_path / "model.pt", "safetensors")
    report, dst = run(src, FREEZE_0, tmp_path)
    assert report["format"] == "safetensors"
    with safe_open(dst, "pt") as f:
        meta = json.loads(f.metadata()["layerfreeze"])
    assert sorted(meta["frozen"]) == ["0.bias", "0.weight"]


def test_extra_members_in_the_archive_folder_are_kept(tmp_path: Path) -> None:
    src = _seq3(tmp_path)
    with zipfile.ZipFile(src, "a") as z:
        z.writestr("sd/extra/notes.txt", "trained on the usual data")
        z.writestr("sd/.data/unknown_member", b"\x00" * 100)
    report, dst = run(src, FREEZE_0, tmp_path)
    with zipfile.ZipFile(dst) as z:
        assert z.read("sd/extra/notes.txt") == b"trained on the usual data"
        # every member kept, in order, plus the freeze state at the end
        assert z.namelist() == [*zipfile.ZipFile(src).namelist(), "sd/.data/layerfreeze.json"]
    assert_state_dict_output(src, dst, report, torch.load(dst, weights_only=True, mmap=True))


def test_members_outside_the_archive_folder_are_refused_as_torch_does(tmp_path: Path) -> None:
    src = _seq3(tmp_path)
    with zipfile.ZipFile(src, "a") as z:
        z.writestr("elsewhere/payload.txt", "x")
    with pytest.raises(RuntimeError):
        torch.load(src, weights_only=True)
    with pytest.raises(ArchiveError):
        freeze_file(src, FREEZE_0)


@pytest.mark.parametrize(("obj", "words"), [
    ({"epoch": 3, "lr": 0.1, "names": ["a"]}, "no state dict"),
    ({}, "no entries"),
    ({"model": {}, "epoch": 1}, "no state dict"),
    (torch.randn(3), "single tensor"),
    ([torch.randn(3)], "list"),
], ids=["no_tensors", "empty_dict", "empty_model", "bare_tensor", "list"])
def test_no_model_in_the_file_is_a_clear_error(tmp_path: Path, obj: object, words: str) -> None:
    src = tmp_path / "x.pt"
    torch.save(obj, src)
    dst = tmp_path / "out.pt"
    with pytest.raises(FormatError) as err:
        freeze_file(src, {}, dst)
    assert words in str(err.value)
    assert list(tmp_path.iterdir()) == [src]  # nothing written, no temporary left


def test_module_without_parameters(tmp_path: Path) -> None:
    src = tmp_path / "m.pt"
    torch.save(nn.Sequential(nn.ReLU(), nn.Flatten()), src)
    report = freeze_file(src, {}).model_dump(mode="json")
    assert report["summary"]["parameters"] == 0 and report["summary"]["trainable_fraction"] == 0
    with pytest.raises(SpecError):
        freeze_file(src, {"rules": [{"action": "freeze", "names": ["0"]}]})


@pytest.mark.parametrize("fmt", ["state_dict", "safetensors"])
def test_an_output_fed_back_starts_from_its_recorded_state(tmp_path: Path, fmt: str) -> None:
    suffix = ".safetensors" if fmt == "safetensors" else ".pt"
    src = save(build("seq3"), tmp_path / f"a{suffix}", fmt)
    once = tmp_path / f"b{suffix}"
    freeze_file(src, FREEZE_0, once)
    again = freeze_file(once, {"rules": [{"action": "unfreeze", "names": ["0.bias"]}]},
                        tmp_path / f"c{suffix}").model_dump(mode="json")
    was = {p["name"]: p["was"] for p in again["parameters"]}
    assert was == {"0.weight": False, "0.bias": False, "2.weight": True, "2.bias": True}
    assert frozen(again) == {"0.weight"}
    assert again["summary"]["changed"] == 1


@pytest.mark.parametrize(("meta", "words"), [
    ("not json", "not valid JSON"),
    (json.dumps({"format_version": 1, "frozen": "0.weight"}), "lists"),
    (json.dumps({"format_version": 2, "frozen": ["0.weight"], "trainable": []}), "format_version 2"),
], ids=["garbage", "not_a_list", "future_version"])
def test_safetensors_with_broken_freeze_metadata(tmp_path: Path, meta: str, words: str) -> None:
    state = {k: v.contiguous() for k, v in build("seq3").state_dict().items()}
    src = tmp_path / "m.safetensors"
    save_file(state, src, metadata={"layerfreeze": meta, "format": "pt"})
    with pytest.raises(SafetensorsFormatError) as err:
        freeze_file(src, FREEZE_0)
    assert words in str(err.value)


def test_safetensors_other_metadata_is_kept(tmp_path: Path) -> None:
    state = {k: v.contiguous() for k, v in build("seq3").state_dict().items()}
    src = tmp_path / "m.safetensors"
    save_file(state, src, metadata={"format": "pt", "author": "ünïcode", "empty": ""})
    report, dst = run(src, FREEZE_0, tmp_path)
    with safe_open(dst, "pt") as f:
        meta = f.metadata()
        for k in state:
            assert torch.equal(f.get_tensor(k), state[k])
    kept = {k: meta[k] for k in ("format", "author", "empty")}
    assert kept == {"format": "pt", "author": "ünïcode", "empty": ""}
    assert sorted(json.loads(meta["layerfreeze"])["frozen"]) == sorted(frozen(report))


def test_repacked_deflated_archive(tmp_path: Path) -> None:
    """A torch zip re-packed with deflate (torch.load reads it): inspected fine; writing a modified copy is
    refused clearly and leaves neither a partial file nor a damaged destination."""
    src = _seq3(tmp_path)
    repacked = tmp_path / "repacked.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(repacked, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    assert set(torch.load(repacked, weights_only=True)) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert freeze_file(repacked, FREEZE_0).summary.frozen == 2
    dst = tmp_path / "out.pt"
    dst.write_bytes(b"previous output")
    with pytest.raises(FormatError):
        freeze_file(repacked, FREEZE_0, dst)
    assert dst.read_bytes() == b"previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pt", "repacked.pt", "sd.pt"]


def test_output_over_its_own_input(tmp_path: Path) -> None:
    src = _seq3(tmp_path)
    freeze_file(src, FREEZE_0, src)
    assert {k: v.requires_grad for k, v in torch.load(src, weights_only=True).items()} == \
        {"0.weight": False, "0.bias": False, "2.weight": True, "2.bias": True}


def test_unusual_dtypes(tmp_path: Path) -> None:
    src = tmp_path / "d.pt"
    tensors = {"c.weight": torch.randn(2, dtype=torch.complex64), "b.mask": torch.ones(2, dtype=torch.bool),
               "f8.weight": torch.randn(3).to(torch.float8_e4m3fn),
               "u16.count": torch.zeros(2, dtype=torch.uint16),
               "h.weight": torch.randn(2, 2).half().t()}
    torch.save(tensors, src)
    report, dst = run(src, {"rules": [{"action": "freeze", "names": ["f8", "h"]}]}, tmp_path)
    assert {p["name"] for p in report["parameters"]} == {"c.weight", "f8.weight", "h.weight"}
    assert {b["name"] for b in report["buffers"]} == {"b.mask", "u16.count"}
    assert_state_dict_output(src, dst, report, torch.load(dst, weights_only=True, mmap=True))


def test_quantized_state_dict_is_not_supported_not_unsafe(tmp_path: Path) -> None:
    from layerfreeze.errors import UnsafePickleError

    quantized = torch.ao.quantization.quantize_dynamic(build("seq3"), {nn.Linear}, dtype=torch.qint8)
    src = tmp_path / "q.pt"
    torch.save(quantized.state_dict(), src)
    with pytest.raises(FormatError) as err:
        freeze_file(src, {})
    assert not isinstance(err.value, UnsafePickleError)
    assert "not supported" in str(err.value)


def test_training_side_files_uploaded_by_mistake(tmp_path: Path) -> None:
    """The files a trainer writes next to the model: each a clear FormatError, the optimizer one named."""
    import random

    import numpy as np

    model = build("seq3")
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    files = {
        "optimizer.pt": opt.state_dict(),
        "scheduler.pt": torch.optim.lr_scheduler.StepLR(opt, 1).state_dict(),
        "rng_state.pth": {"python": random.getstate(), "numpy": np.random.get_state(),
                          "cpu": torch.random.get_rng_state()},
    }
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(FormatError) as err:
            freeze_file(tmp_path / name, {})
        assert "no state dict or module" in str(err.value)
        if name == "optimizer.pt":
            assert "optimizer" in str(err.value)
