"""A few realistic files through the real service process and the Python client: a Lightning checkpoint,
a ``save_pretrained`` safetensors file, a whole BERT module, and files the service must refuse with a
problem (never a 5xx), after which it still serves what it stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fixtures.models import build, tiny_bert
from fixtures.server import running_service
from layerfreeze_client import Client, apply
from layerfreeze_client._errors import APIError
from safetensors import safe_open

from realistic.test_layouts import lightning


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, subprocess_env: dict[str, str]) -> Iterator[str]:
    with running_service(tmp_path_factory.mktemp("realistic-service"), subprocess_env, workers="1") as url:
        yield url


def test_lightning_checkpoint(base_url: str, tmp_path: Path) -> None:
    src = tmp_path / "epoch=3-step=120.ckpt"
    torch.save(lightning(), src)
    spec = {"rules": [{"action": "freeze", "until": "model.4"}]}
    with Client(base_url) as client:
        result = client.freeze(src, spec, tmp_path / "out.ckpt", progress=False, timeout=60)
    assert result.report.format == "torch.checkpoint"
    model = build("cnn", seed=1)
    state = apply(model, result.report, prefix="model.")
    assert set(state.frozen) == {f"{i}.{leaf}" for i in (0, 1, 3, 4) for leaf in ("weight", "bias")}
    import numpy as np

    with torch.serialization.safe_globals([np.core.multiarray.scalar, np.dtype, type(np.dtype("float64")),
                                           type(np.dtype("int64"))]):
        out = torch.load(result.output, weights_only=True, mmap=True)
    assert {k for k, v in out["state_dict"].items() if v.is_floating_point() and not v.requires_grad
            and "running" not in k} == {f"model.{n}" for n in state.frozen}


def test_save_pretrained_safetensors_and_training(base_url: str, tmp_path: Path) -> None:
    bert = tiny_bert()
    if bert is None:
        pytest.skip("transformers not installed")
    bert.save_pretrained(tmp_path / "hf", safe_serialization=True)
    src = tmp_path / "hf" / "model.safetensors"
    spec = {"rules": [{"action": "freeze", "names": ["embeddings", "encoder.layer.0"]}]}
    with Client(base_url) as client:
        result = client.freeze(src, spec, tmp_path / "frozen.safetensors", progress=False, timeout=60)
    with safe_open(result.output, "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt"  # transformers' own key is kept
    assert set(json.loads(meta["layerfreeze"])["frozen"]) == {
        p.name for p in result.report.parameters if not p.requires_grad}
    fresh = tiny_bert()
    assert fresh is not None
    apply(fresh, result.output)
    before = {n: p.detach().clone() for n, p in fresh.named_parameters()}
    opt = torch.optim.AdamW(fresh.parameters(), lr=0.05, weight_decay=0.1)
    fresh.train()
    for _ in range(2):
        opt.zero_grad()
        (fresh(torch.randint(0, 64, (2, 8))).last_hidden_state ** 2).mean().backward()
        opt.step()
    for n, p in fresh.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, before[n]), n
    moved = {n for n, p in fresh.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(n.startswith("encoder.layer.1.") for n in moved)  # the pooler gets no gradient


def test_refusals_are_problems_and_the_service_keeps_serving(base_url: str, tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save(build("seq3").state_dict(), good)
    with Client(base_url) as client:
        kept = client.freeze(good, {"rules": [{"action": "freeze", "names": ["0"]}]}, tmp_path / "kept.pt",
                             progress=False, timeout=60)
        cases = {
            "no_model.pt": {"epoch": 3, "lr": 0.1},
            "empty.pt": {},
            "tensor.pt": torch.randn(3),
        }
        for name, obj in cases.items():
            path = tmp_path / name
            torch.save(obj, path)
            with pytest.raises(APIError) as err:
                client.freeze(path, {}, tmp_path / f"out-{name}", progress=False, timeout=60)
            assert 400 <= err.value.status < 500, (name, err.value.status)
            assert err.value.detail
        typo = tmp_path / "bert.pt"
        bert = tiny_bert()
        if bert is not None:
            torch.save(bert, typo)
            with pytest.raises(APIError) as err:
                client.freeze(typo, {"rules": [{"action": "freeze", "names": ["encoder.layers.0"]}]},
                              tmp_path / "x.pt", progress=False, timeout=60)
            assert err.value.status == 422
            assert err.value.errors and "encoder.layer.0" in err.value.errors[0].suggestions
        again = client.download(kept.job, tmp_path / "again.pt", sha256=kept.report.output.sha256,
                                progress=False)
    assert again.read_bytes() == kept.output.read_bytes()
