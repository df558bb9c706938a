"""Frozen means frozen: restore each output the way a user would, build SGD (momentum, weight decay) and
AdamW over *all* parameters, take steps: every frozen parameter stays bit-identical, trainable ones move."""

from __future__ import annotations

import pytest
import torch
from fixtures.models import FORMATS, save
from fixtures.training import ALL_MODELS, example, load_module, make, train_steps
from layerfreeze.freeze import freeze_file
from layerfreeze_client._apply import apply
from safetensors.torch import load_model


def spec_for(model: torch.nn.Module) -> dict:
    last = [name for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))][-1]
    return {"strict": False, "rules": [
        {"action": "freeze", "names": ["**"]},
        {"action": "unfreeze", "names": [last]},
        {"action": "unfreeze", "params": ["bias"]},
    ]}


def restore(fmt: str, out, name: str):
    if fmt == "module":
        return load_module(out)
    if fmt == "torchscript":
        return torch.jit.load(str(out))
    fresh = make(name, seed=1)
    assert fresh is not None
    if fmt == "safetensors":
        load_model(fresh, str(out))
    else:
        loaded = torch.load(out, weights_only=True, mmap=fmt != "legacy")
        fresh.load_state_dict(loaded["state_dict"] if fmt == "checkpoint" else loaded)
    assert all(p.requires_grad for p in fresh.parameters())  # load_state_dict never carries the flags
    apply(fresh, out)
    return fresh


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.heavy) if n in ("bert", "gpt2") else n for n in ALL_MODELS])
def test_frozen_parameters_are_bit_identical_after_optimizer_steps(tmp_path, name, fmt):
    model = make(name)
    if model is None:
        pytest.skip("transformers not installed")
    x = example(name)
    src = save(model, tmp_path / f"in.{fmt}", fmt, x)
    out = tmp_path / f"out.{fmt}"
    report = freeze_file(src, spec_for(model), out)
    expected = {}
    for p in report.parameters:
        for n in (p.name, *p.aliases):
            expected[n] = p.requires_grad

    restored = restore(fmt, out, name)
    every_name = {n: p.requires_grad for n, p in restored.named_parameters(remove_duplicate=False)}
    assert {n: expected[n] for n in every_name if n in expected} == {
        n: v for n, v in every_name.items() if n in expected}
    flags = {n: p.requires_grad for n, p in restored.named_parameters()}
    assert not all(flags.values()) and any(flags.values())

    moved = 0
    for n, (before, got_grad) in train_steps(restored, x).items():
        after = dict(restored.named_parameters())[n].detach()
        if not flags[n]:
            assert not got_grad and torch.equal(before, after), f"frozen {n} changed"
        elif got_grad:
            assert not torch.equal(before, after), f"trainable {n} did not move"
            moved += 1
    assert moved > 0
