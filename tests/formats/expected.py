"""What torch itself says about a live model, in the shape of an Inventory, for comparison."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Expected:
    parameters: list[str]  # primary names, definition order
    buffers: list[str]
    aliases: dict[str, list[str]] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)  # module path -> qualified class name
    children: dict[str, list[str]] = field(default_factory=dict)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _qualified(module: nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def of_module(model: nn.Module) -> Expected:
    """named_parameters() / named_buffers() / named_modules() of a live module."""
    exp = Expected([], [])
    first_by_id: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first_by_id:
            exp.aliases.setdefault(first_by_id[id(p)], []).append(name)
            continue
        first_by_id[id(p)] = name
        exp.parameters.append(name)
    first_by_id.clear()
    for name, b in model.named_buffers(remove_duplicate=False):
        if id(b) in first_by_id:
            exp.aliases.setdefault(first_by_id[id(b)], []).append(name)
            continue
        first_by_id[id(b)] = name
        exp.buffers.append(name)
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        exp.shapes[name] = tuple(t.shape)
        exp.dtypes[name] = dtype_name(t.dtype)
    for path, module in model.named_modules():
        exp.types[path] = _qualified(module)
        exp.children[path] = [n for n, _ in module.named_children()]
    return exp


def of_state_dict(model: nn.Module) -> Expected:
    """The keys ``model.state_dict()`` saves, tied entries folded into their first name."""
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    exp = Expected([], [])
    first_by_id: dict[int, str] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in first_by_id:
            exp.aliases.setdefault(first_by_id[id(t)], []).append(name)
            continue
        first_by_id[id(t)] = name
        (exp.parameters if name in params else exp.buffers).append(name)
        exp.shapes[name] = tuple(t.shape)
        exp.dtypes[name] = dtype_name(t.dtype)
    for path, module in model.named_modules():
        exp.children[path] = [n for n, _ in module.named_children()]
    return exp
