"""A torchvision-style ResNet: the freezes detection and fine-tuning code does (freeze the stem and the
first stages, BatchNorm layers, the classifier head only), in every torch layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from layerfreeze.freeze import freeze_file
from layerfreeze_client import apply
from safetensors.torch import save_model
from torch import nn

from realistic._check import flags, frozen, run
from realistic._resnet import resnet


def _params_of(model: nn.Module, modules: list[str]) -> set[str]:
    return {n for m in modules for n, _ in model.get_submodule(m).named_parameters(prefix=m)}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("resnet")
    model = resnet()
    out = {"module": tmp / "r.pt", "state_dict": tmp / "rsd.pt", "plain_dict": tmp / "plain.pt",
           "safetensors": tmp / "r.safetensors"}
    torch.save(model, out["module"])
    torch.save(model.state_dict(), out["state_dict"])  # keeps _metadata: every module, in order
    torch.save(dict(model.state_dict()), out["plain_dict"])  # a plain dict: parameter-less ones unseen
    save_model(model, str(out["safetensors"]))
    return out


@pytest.mark.parametrize("layout", ["module", "state_dict", "plain_dict"])
def test_freeze_at_stage_two(files: dict[str, Path], layout: str) -> None:
    """detectron2 FREEZE_AT=3 / mmdet frozen_stages=2: the stem and layer1..layer2."""
    model = resnet()
    report = freeze_file(files[layout], {"rules": [{"action": "freeze", "until": "layer2"}]})
    assert frozen(report.model_dump(mode="json")) == _params_of(model, ["conv1", "bn1", "layer1", "layer2"])
    warnings = " ".join(w.message for w in report.warnings)
    assert "running statistics" in warnings  # BatchNorm inside a frozen region


@pytest.mark.parametrize("layout", ["module", "state_dict"])
def test_children_as_torch_lists_them(files: dict[str, Path], layout: str) -> None:
    model = resnet()
    names = [n for n, _ in model.named_children()]
    report = freeze_file(files[layout], {"rules": [{"action": "freeze", "children": {"of": "", "stop": 5}}]})
    assert frozen(report.model_dump(mode="json")) == _params_of(model, names[:5])
    assert report.rules[0].children_counted == names


def test_children_of_a_plain_dict_say_what_was_counted(files: dict[str, Path]) -> None:
    """Without the state dict's module records, ReLU / pooling children are invisible: the count is
    reported and warned about, never silently different from torch's."""
    first_five = {"rules": [{"action": "freeze", "children": {"of": "", "stop": 5}}]}
    report = freeze_file(files["plain_dict"], first_five)
    counted = report.rules[0].children_counted
    assert counted == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert any("counted" in w.message for w in report.warnings)


def test_safetensors_named_children_are_refused_numbered_ones_work(files: dict[str, Path]) -> None:
    from layerfreeze.errors import SpecError

    with pytest.raises(SpecError):
        freeze_file(files["safetensors"], {"rules": [{"action": "freeze", "until": "layer2"}]})
    report = freeze_file(files["safetensors"],
                         {"rules": [{"action": "freeze", "children": {"of": "layer2", "indices": [0]}}]})
    assert frozen(report.model_dump(mode="json")) == _params_of(resnet(), ["layer2.0"])


def test_head_only_fine_tuning_step(files: dict[str, Path], tmp_path: Path) -> None:
    """Freeze everything but fc, restore a fresh model from the output, train in train() mode with
    BatchNorm layers put in eval as the report advises: backbone weights and statistics stay put."""
    spec = {"rules": [{"action": "freeze", "names": ["**"]}, {"action": "unfreeze", "names": ["fc"]}]}
    report, dst = run(files["module"], spec, tmp_path)
    assert {n for n, v in flags(report).items() if v} == {"fc.weight", "fc.bias"}
    model = resnet(seed=3)
    apply(model, report)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 3, 32, 32)).square().mean().backward()
        opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}
    out = torch.load(dst, weights_only=False)  # the test's own whole-module file
    assert {n for n, p in out.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}
