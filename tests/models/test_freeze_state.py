"""A freeze survives a round trip: every torch archive output records its freeze state in
``.data/layerfreeze.json``, which torch's loaders ignore and our reader reads, so inspecting an output
shows the report's states, even for a plain state dict frozen completely (whose bytes say nothing)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from fixtures.models import build, save
from layerfreeze.freeze import freeze_file

SPECS = [{"rules": [{"action": "freeze", "regex": [".*"]}]},
         {"rules": [{"action": "freeze", "regex": [".*"]}, {"action": "unfreeze", "params": ["bias"]}]},
         {}]


def _load(path: Path, fmt: str) -> dict[str, bool]:
    if fmt == "torchscript":
        return {n: p.requires_grad for n, p in torch.jit.load(str(path)).named_parameters()}
    obj = torch.load(path, weights_only=fmt != "module", mmap=True)
    if fmt == "module":
        return {n: p.requires_grad for n, p in obj.named_parameters()}
    sd = obj["state_dict"] if fmt == "checkpoint" else obj
    return {n: t.requires_grad for n, t in sd.items()}


@pytest.mark.parametrize("fmt", ["state_dict", "checkpoint", "module", "torchscript", "safetensors"])
@pytest.mark.parametrize("model", ["seq3", "cnn"])
def test_inspect_of_every_output_shows_the_report_states(tmp_path: Path, model: str, fmt: str) -> None:
    src = save(build(model), tmp_path / f"in-{fmt}.pt", fmt)
    for i, spec in enumerate(SPECS):
        out = tmp_path / f"out{i}.pt"
        report = freeze_file(src, spec, out)
        inspected = freeze_file(out, "{}", None, digest=False)
        assert [(p.name, p.requires_grad) for p in inspected.parameters] == [
            (p.name, p.requires_grad) for p in report.parameters]
        if fmt == "safetensors":
            continue
        assert any(n.endswith("/.data/layerfreeze.json") for n in zipfile.ZipFile(out).namelist())
        loaded = _load(out, fmt)  # torch's loaders read the output (weights_only, mmap; jit.load)
        assert set(loaded) >= {p.name for p in report.parameters}
        # Freezing an output again replaces the member: one member, the new states.
        again = freeze_file(out, {"rules": [{"action": "unfreeze", "regex": [".*"]}]}, tmp_path / "again.pt")
        names = zipfile.ZipFile(tmp_path / "again.pt").namelist()
        assert sum(n.endswith("layerfreeze.json") for n in names) == 1
        assert all(p.requires_grad == (p.dtype.startswith(("float", "bfloat", "complex")))
                   for p in again.parameters)
        assert zipfile.ZipFile(tmp_path / "again.pt").testzip() is None


def test_a_fully_frozen_plain_state_dict_is_shown_frozen(tmp_path: Path) -> None:
    src = save(build("seq3"), tmp_path / "sd.pt", "state_dict")
    out = tmp_path / "frozen.pt"
    freeze_file(src, {"rules": [{"action": "freeze", "regex": [".*"]}]}, out)
    assert all(not t.requires_grad for t in torch.load(out, weights_only=True, mmap=True).values())
    inspected = freeze_file(out, "{}", None, digest=False)
    assert inspected.summary.frozen == inspected.summary.parameters == 4
    assert freeze_file(src, "{}", None, digest=False).summary.frozen == 0  # the input: all trainable
