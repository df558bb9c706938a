"""apply() and the service find the model in a checkpoint dict by one rule: the same ordered key list."""

from __future__ import annotations

from pathlib import Path

from layerfreeze.formats.torch_objects import MODEL_KEYS
from layerfreeze.freeze import freeze_file
from layerfreeze_client import _apply, apply

from conformance import hostile


def test_client_and_service_share_the_key_list() -> None:
    assert _apply.MODEL_KEYS == MODEL_KEYS


def test_apply_takes_the_dict_the_service_froze(tmp_path: Path) -> None:
    path, model = hostile.two_model_dicts(tmp_path)
    out = tmp_path / "out.pt"
    report = freeze_file(path, {"rules": [{"action": "freeze", "names": ["0.**"]}]}, out)
    assert report.prefix == "model_state"
    expected = {p.name: p.requires_grad for p in report.parameters}
    assert expected == {"0.weight": False, "0.bias": False, "2.weight": True, "2.bias": True}
    applied = apply(model, out)
    assert dict.fromkeys(applied.frozen, False) | dict.fromkeys(applied.trainable, True) == expected
    assert {n: p.requires_grad for n, p in model.named_parameters()} == expected
