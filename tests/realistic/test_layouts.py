"""Checkpoint layouts real training code writes, read through ``freeze_file`` and checked against torch."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixtures.models import build
from torch import nn

from realistic._check import assert_state_dict_output, frozen, load, run


def _trained_cnn() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = build("cnn")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    return model, opt


def lightning() -> dict[str, Any]:
    """What ``Trainer.save_checkpoint`` writes: ``model.``-prefixed state dict and the training state."""
    model, opt = _trained_cnn()
    return {
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 3, "completed": 3}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
            "best_model_score": torch.tensor(0.25), "best_model_path": "/ckpt/epoch=3.ckpt"}},
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [{"last_epoch": 3, "_step_count": 4, "base_lrs": [1e-3], "_last_lr": [1e-3]}],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": np.float64(1e-3), "layers": (1, 2), "name": "cnn", "betas": [0.9, 0.999],
                             "seed": np.int64(7)},
    }


def training_loop() -> dict[str, Any]:
    model, opt = _trained_cnn()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 5, "best_acc1": 0.5}


def with_ema() -> dict[str, Any]:
    model, _ = _trained_cnn()
    ema = {k: v.clone() for k, v in model.state_dict().items()}
    return {"model_ema": ema, "model": model.state_dict(), "epoch": 5}  # EMA first: 'model' still wins


def keep_vars() -> dict[str, Any]:
    model = build("cnn")
    model[0].requires_grad_(False)
    return model.state_dict(keep_vars=True)


def views() -> dict[str, Any]:
    torch.manual_seed(0)
    qkv = torch.randn(12, 4)
    q, k, v = qkv.split(4)
    return {"attn.q.weight": q, "attn.k.weight": k, "attn.v.weight": v, "attn.qkv_t.weight": qkv.t(),
            "attn.col.weight": qkv[:, 1], "attn.qkv.weight": qkv}


def odd_shapes() -> dict[str, Any]:
    return {"empty.weight": torch.empty(0, 4), "scalar.weight": torch.tensor(3.0),
            "vec.weight": torch.randn(2), "ids.index": torch.arange(4)}


def odd_names() -> dict[str, Any]:
    long = "segment" * 40
    return {f"{long}.{long}.{long}.weight": torch.randn(2), "ünï.çødé.层.weight": torch.randn(2),
            "with space.weight": torch.randn(2), "a.b-c.weight": torch.randn(2)}


# name, object, spec names, where the model sits in the loaded output, torch.save kwargs
LAYOUTS: list[tuple[str, Callable[[], Any], list[str], Callable[[Any], Any], dict[str, Any]]] = [
    ("lightning", lightning, ["model.0", "model.1"], lambda o: o["state_dict"], {}),
    ("training_loop", training_loop, ["0"], lambda o: o["model"], {}),
    ("ema", with_ema, ["3"], lambda o: o["model"], {}),
    ("dataparallel", lambda: nn.DataParallel(build("seq3")).state_dict(), ["module.0"], lambda o: o, {}),
    ("compiled", lambda: torch.compile(build("seq3")).state_dict(), ["_orig_mod.2"], lambda o: o, {}),
    ("keep_vars", keep_vars, ["3"], lambda o: o, {}),
    ("float16", lambda: build("seq3").half().state_dict(), ["0"], lambda o: o, {}),
    ("bfloat16", lambda: build("seq3").bfloat16().state_dict(), ["0"], lambda o: o, {}),
    ("float64", lambda: build("seq3").double().state_dict(), ["0"], lambda o: o, {}),
    ("views", views, ["attn.q", "attn.col"], lambda o: o, {}),
    ("odd_shapes", odd_shapes, ["empty", "scalar"], lambda o: o, {}),
    ("odd_names", odd_names, ["ünï", "with space"], lambda o: o, {}),
    ("many", lambda: nn.Sequential(*[nn.Linear(2, 2) for _ in range(600)]).state_dict(), ["1??"], lambda o: o,
     {}),
    ("legacy", lambda: build("cnn").state_dict(), ["0"], lambda o: o,
     {"_use_new_zipfile_serialization": False}),
    ("legacy_lightning", lightning, ["model.0"], lambda o: o["state_dict"],
     {"_use_new_zipfile_serialization": False}),
]


@pytest.mark.parametrize(("name", "make", "patterns", "where", "save_kwargs"), LAYOUTS,
                         ids=[row[0] for row in LAYOUTS])
def test_layout_round_trip(tmp_path: Path, name: str, make: Callable[[], Any], patterns: list[str],
                           where: Callable[[Any], Any], save_kwargs: dict[str, Any]) -> None:
    src = tmp_path / f"{name}.ckpt"
    torch.save(make(), src, **save_kwargs)
    report, dst = run(src, {"rules": [{"action": "freeze", "names": patterns}]}, tmp_path)
    state = where(load(dst))
    assert_state_dict_output(src, dst, report, state)
    # the classic loop over the state dict keys, segment by segment, plus what was frozen already
    def selected(key: str) -> bool:
        segments = key.split(".")
        return any(fnmatch.fnmatchcase(".".join(segments[:p.count(".") + 1]), p) for p in patterns)

    was_frozen = {p["name"] for p in report["parameters"] if not p["was"]}
    assert frozen(report) == {p["name"] for p in report["parameters"] if selected(p["name"])} | was_frozen
    assert report["summary"]["frozen"] > len(was_frozen)


def test_lightning_keeps_its_training_state(tmp_path: Path) -> None:
    src = tmp_path / "epoch=3.ckpt"
    torch.save(lightning(), src)
    report, dst = run(src, {"rules": [{"action": "freeze", "until": "model.3"}]}, tmp_path)
    assert report["format"] == "torch.checkpoint"
    assert frozen(report) == {"model.0.weight", "model.0.bias", "model.1.weight", "model.1.bias",
                              "model.3.weight", "model.3.bias"}
    before, after = load(src, mmap=False), load(dst)
    assert after["hyper_parameters"] == before["hyper_parameters"]
    assert after["loops"] == before["loops"] and after["lr_schedulers"] == before["lr_schedulers"]
    assert after["optimizer_states"][0]["param_groups"] == before["optimizer_states"][0]["param_groups"]
    # BatchNorm statistics are buffers, never counted as parameters
    assert "model.1.running_mean" in {b["name"] for b in report["buffers"]}
    assert report["summary"]["parameters"] == sum(1 for k in before["state_dict"] if "running" not in k
                                                  and "num_batches" not in k)


@pytest.mark.parametrize("protocol", [4, 5])
@pytest.mark.parametrize("whole_module", [False, True])
def test_high_pickle_protocols(tmp_path: Path, protocol: int, whole_module: bool) -> None:
    """torch's own weights_only loader refuses protocol 4/5 FRAME opcodes, so the check loads with
    weights_only=False (our own test file); the service reads them as data."""
    model = build("seq3")
    src = tmp_path / "p.pt"
    torch.save(model if whole_module else model.state_dict(), src, pickle_protocol=protocol)
    report, dst = run(src, {"rules": [{"action": "freeze", "names": ["0"]}]}, tmp_path)
    out = torch.load(dst, weights_only=False)
    got = ({n: p.requires_grad for n, p in out.named_parameters()} if whole_module
           else {k: v.requires_grad for k, v in out.items()})
    assert got == {"0.weight": False, "0.bias": False, "2.weight": True, "2.bias": True}
    assert report["format"] == ("torch.module" if whole_module else "torch.state_dict")


def test_shared_storage_views_keep_their_layout(tmp_path: Path) -> None:
    src = tmp_path / "views.pt"
    torch.save(views(), src)
    report, dst = run(src, {"rules": [{"action": "freeze", "names": ["attn.k"]}]}, tmp_path)
    out = load(dst)
    assert out["attn.k.weight"].storage_offset() == 4 * 4
    assert out["attn.col.weight"].stride() == (4,)
    storage = out["attn.qkv.weight"].untyped_storage().data_ptr()
    assert out["attn.q.weight"].untyped_storage().data_ptr() == storage
    assert {p["name"]: p["requires_grad"] for p in report["parameters"]}["attn.k.weight"] is False
    assert any("share" in w["message"] for w in report["warnings"])


@pytest.mark.parametrize("wrap", ["dataparallel", "compile"])
def test_apply_to_a_wrapped_live_model(tmp_path: Path, wrap: str) -> None:
    """Checkpoint saved from the bare model, state applied after wrapping it for training."""
    from layerfreeze_client import apply

    src = tmp_path / "sd.pt"
    torch.save(build("seq3").state_dict(), src)
    report, dst = run(src, {"rules": [{"action": "freeze", "names": ["0"]}]}, tmp_path)
    model = nn.DataParallel(build("seq3")) if wrap == "dataparallel" else torch.compile(build("seq3"))
    head = "module" if wrap == "dataparallel" else "_orig_mod"
    for source in (dst, report):
        state = apply(model, source)
        assert set(state.frozen) == {f"{head}.0.weight", f"{head}.0.bias"}
        assert {n for n, p in model.named_parameters() if not p.requires_grad} == set(state.frozen)


@pytest.mark.parametrize("name", ["user", "cnn", "transformer", "lstm"])
def test_legacy_whole_module(tmp_path: Path, name: str) -> None:
    """The non-zip format records each module class with its source code as a persistent id."""
    model = build(name)
    src = tmp_path / "legacy.pt"
    torch.save(model, src, _use_new_zipfile_serialization=False)
    first = next(iter(dict(model.named_children())))
    report, dst = run(src, {"rules": [{"action": "freeze", "until": first}]}, tmp_path)
    assert report["format"] == "torch.module"
    assert [p["name"] for p in report["parameters"]] == [n for n, _ in model.named_parameters()]
    out = torch.load(dst, weights_only=False)  # the test's own file
    assert {n: p.requires_grad for n, p in out.named_parameters()} == \
        {p["name"]: p["requires_grad"] for p in report["parameters"]}
    assert frozen(report) == {n for n, _ in model.get_submodule(first).named_parameters(prefix=first)} | {
        n for n, _ in model.named_parameters(recurse=False)}
    for a, b in zip(model.state_dict().values(), out.state_dict().values(), strict=True):
        assert torch.equal(a, b)
