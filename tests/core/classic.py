"""The classic freezing loops people write by hand, as references for what the spec must select."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from testing.oracle import requires_grad


def states(model: nn.Module) -> dict[str, bool]:
    return requires_grad(model)


def freeze_modules(model: nn.Module, paths: Iterable[str]) -> dict[str, bool]:
    for path in paths:
        model.get_submodule(path).requires_grad_(False)
    return states(model)


def freeze_types(model: nn.Module, cls: type) -> dict[str, bool]:
    for module in model.modules():
        if isinstance(module, cls):
            for p in module.parameters():
                p.requires_grad = False
    return states(model)


def freeze_children(model: nn.Module, of: str, picked: slice | list[int]) -> dict[str, bool]:
    children = list(model.get_submodule(of).children())
    chosen = children[picked] if isinstance(picked, slice) else [children[i] for i in picked]
    for child in chosen:
        for p in child.parameters():
            p.requires_grad = False
    return states(model)


def freeze_until(model: nn.Module, path: str) -> dict[str, bool]:
    named = list(model.named_parameters(remove_duplicate=False))
    last = max(i for i, (n, _) in enumerate(named) if n.startswith(path + ".") or n == path)
    for _, p in named[: last + 1]:
        p.requires_grad = False
    return states(model)
