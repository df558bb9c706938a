"""Collect every nn.Module class torch.nn exposes, with its direct nn.Module bases, from the real torch."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from torch import nn


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def torch_nn_classes() -> dict[str, type]:
    classes: dict[str, type] = {}

    def add(obj: object) -> None:
        if inspect.isclass(obj) and issubclass(obj, nn.Module):
            classes[qualified(obj)] = obj

    for name in dir(nn):
        add(getattr(nn, name))
    for info in pkgutil.iter_modules(nn.modules.__path__):
        module = importlib.import_module(f"torch.nn.modules.{info.name}")
        for value in vars(module).values():
            add(value)
    return classes


def direct_bases(cls: type) -> tuple[str, ...]:
    return tuple(qualified(b) for b in cls.__bases__ if issubclass(b, nn.Module))


if __name__ == "__main__":  # prints the table for core/torch_classes.py
    for name, cls in sorted(torch_nn_classes().items()):
        print(f"    {name!r}: {direct_bases(cls)!r},")
