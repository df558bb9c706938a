"""TorchScript archives users have: scripted and traced models with submodules, a scripted transformer,
parameters already frozen before scripting. Checked against ``torch.jit.load`` of the output (the test's
own file)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from realistic._check import flags, frozen, run, same_bytes


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.LayerNorm(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(Block(), Block(), nn.Linear(4, 2))


def scripted() -> Any:
    return torch.jit.script(_net())


def traced() -> Any:
    return torch.jit.trace(_net(), torch.randn(1, 4))


def scripted_transformer() -> Any:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    return torch.jit.script(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False))


def partly_frozen() -> Any:
    net = _net()
    net[0].requires_grad_(False)
    return torch.jit.script(net)


CASES: list[tuple[str, Callable[[], Any], list[dict[str, Any]]]] = [
    ("scripted", scripted,
     [{"action": "freeze", "types": ["Block"]}, {"action": "unfreeze", "names": ["1.b.2"]}]),
    ("traced", traced, [{"action": "freeze", "types": ["LayerNorm"]}, {"action": "freeze", "names": ["2"]}]),
    ("transformer", scripted_transformer, [{"action": "freeze", "until": "layers.0"}]),
    ("transformer_types", scripted_transformer, [{"action": "freeze", "types": ["MultiheadAttention"]}]),
    ("partly_frozen", partly_frozen, [{"action": "unfreeze", "names": ["0.a"]}]),
]


@pytest.mark.parametrize(("name", "make", "rules"), CASES, ids=[c[0] for c in CASES])
def test_torchscript(tmp_path: Path, name: str, make: Callable[[], Any], rules: list[dict[str, Any]]) -> None:
    module = make()
    src = tmp_path / f"{name}.pt"
    torch.jit.save(module, str(src))
    report, dst = run(src, {"rules": rules}, tmp_path)
    assert report["format"] == "torchscript"
    original = torch.jit.load(str(src))
    assert [p["name"] for p in report["parameters"]] == [n for n, _ in original.named_parameters()]
    assert {p["name"]: p["was"] for p in report["parameters"]} == \
        {n: p.requires_grad for n, p in original.named_parameters()}
    out = torch.jit.load(str(dst))
    assert {n: p.requires_grad for n, p in out.named_parameters()} == flags(report)
    for (k, a), (k2, b) in zip(original.state_dict().items(), out.state_dict().items(), strict=True):
        assert k == k2 and same_bytes(a, b), k
    x = torch.randn(2, 3, 8) if "transformer" in name else torch.randn(2, 4)
    with torch.no_grad():  # eval, no grad: both take the same kernels (the transformer fast path)
        assert torch.equal(original.eval()(x), out.eval()(x))


def test_scripted_types_match_isinstance(tmp_path: Path) -> None:
    net = _net()
    src = tmp_path / "s.pt"
    torch.jit.save(torch.jit.script(net), str(src))
    report, _ = run(src, {"rules": [{"action": "freeze", "types": ["torch.nn.LayerNorm"]}]}, tmp_path)
    want = {n for m, mod in net.named_modules() if isinstance(mod, nn.LayerNorm)
            for n, _ in mod.named_parameters(prefix=m)}
    assert frozen(report) == want
