"""Generic checks of one freeze run against what torch itself says about the files."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from layerfreeze.freeze import freeze_file


def tensors_of(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor reachable through dicts / lists / tuples, with a path (for byte comparisons)."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from tensors_of(v, f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors_of(v, f"{prefix}/{i}")


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype, strides and bytes (0-dim and empty tensors included)."""
    a, b = a.detach(), b.detach()
    if a.shape != b.shape or a.dtype != b.dtype or a.stride() != b.stride():
        return False
    if a.numel() == 0:
        return True
    flat_a, flat_b = a.reshape(-1).contiguous(), b.reshape(-1).contiguous()
    return bool(torch.equal(flat_a.view(torch.uint8), flat_b.view(torch.uint8)))


def run(src: Path, spec: Any, out_dir: Path, name: str = "out") -> tuple[dict[str, Any], Path]:
    dst = out_dir / f"{name}{src.suffix}"
    report = freeze_file(src, spec, dst)
    return report.model_dump(mode="json"), dst


def flags(report: Mapping[str, Any]) -> dict[str, bool]:
    return {p["name"]: p["requires_grad"] for p in report["parameters"]}


def frozen(report: Mapping[str, Any]) -> set[str]:
    return {p["name"] for p in report["parameters"] if not p["requires_grad"]}


def load(path: Path, *, mmap: bool = True, weights_only: bool = True) -> Any:
    """What a user does: ``weights_only=True`` (mmap where the file is a zip), with numpy scalars
    allowed as some training loops store them."""
    import numpy as np

    allowed = [np.core.multiarray.scalar, np.dtype, type(np.dtype("float64")), type(np.dtype("int64"))]
    with open(path, "rb") as f:
        is_zip = f.read(2) == b"PK"
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, weights_only=weights_only, mmap=mmap and is_zip)


def assert_state_dict_output(src: Path, dst: Path, report: Mapping[str, Any], state: Mapping[str, Any],
                             *, weights_only: bool = True) -> None:
    """``state`` is the (wrapped) state dict inside the loaded output: its tensors' flags equal the
    report's, the report's names are exactly its parameter keys, and every tensor anywhere in the file
    is byte-identical to the input's."""
    want = flags(report)
    buffers = {b["name"] for b in report["buffers"]}
    aliases = {a for p in report["parameters"] for a in p.get("aliases") or ()}
    assert set(want) | buffers | aliases == set(state), "report names differ from the state dict keys"
    assert {k: bool(state[k].requires_grad) for k in want} == want
    before = dict(tensors_of(load(src, mmap=False, weights_only=weights_only)))
    after = dict(tensors_of(load(dst, weights_only=weights_only)))
    assert before.keys() == after.keys()
    for k in before:
        assert same_bytes(before[k], after[k]), k
