"""Module trees for files that only name tensors: derived from dotted names (and a state dict's
``_metadata``, which lists every module, parameter-less ones included, in ``named_modules()`` order)."""

from __future__ import annotations

from collections.abc import Iterable

from layerfreeze.core.model import ModuleInfo


def parent_of(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def modules_from_paths(paths: Iterable[str]) -> tuple[ModuleInfo, ...]:
    """ModuleInfos (no types) for ``paths`` in the given order, root first, every ancestor included."""
    order: dict[str, list[str]] = {"": []}
    for path in paths:
        _add(order, path)
    return tuple(ModuleInfo(path, None, tuple(children)) for path, children in order.items())


def _add(order: dict[str, list[str]], path: str) -> None:
    missing: list[str] = []
    while path not in order:  # walk up to the nearest known ancestor (iteratively: names can be deep)
        missing.append(path)
        path = parent_of(path)
    for path in reversed(missing):
        order[path] = []
        order[parent_of(path)].append(path.rsplit(".", 1)[-1])


def modules_from_names(
    tensor_names: Iterable[str], module_paths: Iterable[str] | None = None
) -> tuple[tuple[ModuleInfo, ...], bool]:
    """The module tree of a weight-only file and whether its children are exact.

    ``module_paths`` (a state dict's ``_metadata`` keys) make the tree exact; without them the modules
    are the prefixes of the tensor names, and parameter-less children are unknown.
    """
    paths: list[str] = []
    exact = module_paths is not None
    if module_paths is not None:
        paths.extend(p for p in module_paths if isinstance(p, str))
    known = set(paths)
    for name in tensor_names:
        module = parent_of(name)
        if module not in known:
            exact = False  # a module the metadata does not list: the recorded tree is incomplete
            known.add(module)
            paths.append(module)
    return modules_from_paths(paths), exact
