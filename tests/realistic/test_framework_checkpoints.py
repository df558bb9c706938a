"""Checkpoint dicts as other training frameworks write them (timm, YOLO, fairseq, detectron2) and the
Python values they carry next to the model."""

from __future__ import annotations

import argparse
import collections
from pathlib import Path
from typing import Any

import pytest
import torch
from fixtures.models import build

from realistic._check import assert_state_dict_output, frozen, run

FREEZE_0 = {"rules": [{"action": "freeze", "names": ["0"]}]}


def _sd() -> dict[str, torch.Tensor]:
    return build("cnn").state_dict()


def timm_like() -> dict[str, Any]:
    model = build("cnn")
    return {"epoch": 5, "arch": "resnet", "state_dict": model.state_dict(), "version": 2, "metric": 0.5,
            "optimizer": torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9).state_dict(),
            "args": argparse.Namespace(model="resnet", lr=0.1, epochs=10)}


def fairseq_like() -> dict[str, Any]:
    return {"args": None, "cfg": {"model": {"_name": "transformer"}}, "model": _sd(),
            "optimizer_history": [{"criterion_name": "ce", "optimizer_name": "adam",
                                   "lr_scheduler_state": {"best": 1.0}, "num_updates": 10}],
            "extra_state": {"epoch": 2}, "last_optimizer_state": None}


def detectron2_like() -> dict[str, Any]:
    return {"model": _sd(), "__author__": "Model Zoo", "iteration": 100, "matching_heuristics": True}


def python_values() -> dict[str, Any]:
    """Values protocol 2 writes through __builtin__ calls (frozenset, bytearray, complex) and others."""
    return {"state_dict": _sd(), "meta": {
        "set": {1, 2}, "frozenset": frozenset({3, "a"}), "bytes": b"abc", "bytearray": bytearray(b"x" * 300),
        "complex": complex(1, 2), "tuple": (1, None, True), "ordered": collections.OrderedDict(a=1),
        "big": 2**80, "neg": -5, "unicode": "ünï"}}


@pytest.mark.parametrize(("make", "where"), [
    (fairseq_like, "model"), (detectron2_like, "model"), (python_values, "state_dict"),
], ids=["fairseq", "detectron2", "python_values"])
def test_framework_checkpoint(tmp_path: Path, make: Any, where: str) -> None:
    src = tmp_path / "ckpt.pt"
    obj = make()
    torch.save(obj, src)
    report, dst = run(src, FREEZE_0, tmp_path)
    assert report["format"] == "torch.checkpoint"
    assert frozen(report) == {"0.weight", "0.bias"}
    out = torch.load(dst, weights_only=False)  # the test's own file (frozenset is not in torch's allowlist)
    assert {k: v.requires_grad for k, v in out[where].items() if k in frozen(report)} == \
        dict.fromkeys(frozen(report), False)
    assert {k: v for k, v in out.items() if k != where} == {k: v for k, v in obj.items() if k != where}


def test_timm_checkpoint_with_an_argparse_namespace(tmp_path: Path) -> None:
    """A class built by NEWOBJ and filled by BUILD (argparse.Namespace) is an opaque record, never run."""
    src = tmp_path / "model_best.pth.tar"
    torch.save(timm_like(), src)
    report, dst = run(src, FREEZE_0, tmp_path)
    with torch.serialization.safe_globals([argparse.Namespace]):
        state = torch.load(dst, weights_only=True, mmap=True)["state_dict"]
        assert_state_dict_output(src, dst, report, state)
        assert torch.load(dst, weights_only=True)["args"] == timm_like()["args"]


def test_yolo_like_whole_module_in_a_dict(tmp_path: Path) -> None:
    """YOLO saves the whole half-precision module under 'model' with None for what it does not keep."""
    model = build("cnn").half()
    src = tmp_path / "best.pt"
    torch.save({"epoch": -1, "best_fitness": None, "model": model, "ema": None, "updates": None,
                "optimizer": None, "date": "2024-01-01T00:00:00"}, src)
    report, dst = run(src, {"rules": [{"action": "freeze", "until": "4"}]}, tmp_path)
    assert report["format"] == "torch.checkpoint"
    assert {p["dtype"] for p in report["parameters"]} == {"float16"}
    out = torch.load(dst, weights_only=False)
    assert {n for n, p in out["model"].named_parameters() if not p.requires_grad} == frozen(report) == \
        {f"{i}.{leaf}" for i in (0, 1, 3, 4) for leaf in ("weight", "bias")}
    assert out["ema"] is None and out["date"] == "2024-01-01T00:00:00"
