"""What torch itself says about a live ``nn.Module``: the ``Inventory`` a perfect reader would build from
its saved file, and the same facts as plain lists and maps (``Expected``) for comparisons.

``kind`` says which file it stands for:
- ``module``: a whole pickled module: flags recorded, module types known, every child known;
- ``state_dict``: weights only (``state_dict()``'s keys), no flags, no types; children known (a state
  dict's ``_metadata``);
- ``safetensors``: weights only, no flags, no types, tensors sorted by name, modules derived from those
  names only.
A tensor reachable under several names (tied weights) is one entry: its first name, the others aliases.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from layerfreeze.core.model import Inventory, ModuleInfo, TensorInfo
from torch import nn

FORMAT_OF = {"module": "torch.module", "state_dict": "torch.state_dict", "safetensors": "safetensors"}


def qualified_type(module: nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def requires_grad(model: nn.Module) -> dict[str, bool]:
    """Every parameter name (tied ones under each of their names) -> its ``requires_grad``."""
    return {n: p.requires_grad for n, p in model.named_parameters(remove_duplicate=False)}


def _folded(named: list[tuple[str, torch.Tensor]]) -> dict[int, tuple[torch.Tensor, list[str]]]:
    """Tensor identity -> (tensor, its names in order); dicts keep first-seen order."""
    out: dict[int, tuple[torch.Tensor, list[str]]] = {}
    for name, t in named:
        out.setdefault(id(t), (t, []))[1].append(name)
    return out


def live_inventory(model: nn.Module, kind: str = "module") -> Inventory:
    recorded = kind == "module"
    saved = model.state_dict(keep_vars=True)
    params = _folded(list(model.named_parameters(remove_duplicate=False)))
    buffers = _folded([(n, b) for n, b in model.named_buffers(remove_duplicate=False)
                       if recorded or n in saved])  # a state dict leaves out non-persistent buffers
    tensors = [
        TensorInfo(name=names[0], kind="parameter", shape=tuple(p.shape), dtype=dtype_name(p.dtype),
                   requires_grad=p.requires_grad if recorded else None, aliases=tuple(names[1:]),
                   storage=str(p.untyped_storage().data_ptr()))
        for p, names in params.values()
    ]
    tensors += [
        TensorInfo(name=names[0], kind="buffer", shape=tuple(b.shape), dtype=dtype_name(b.dtype),
                   requires_grad=False if recorded else None, aliases=tuple(names[1:]))
        for b, names in buffers.values()
    ]
    if kind == "safetensors":  # the file keeps tensors sorted by name, not in definition order
        tensors.sort(key=lambda t: t.name)
        modules = modules_from_names([t.name for t in tensors])
        return Inventory(format=FORMAT_OF[kind], tensors=tuple(tensors), modules=modules,
                         types_known=False, children_exact=False)
    modules = tuple(
        ModuleInfo(path=path, type=qualified_type(m) if recorded else None,
                   children=tuple(n for n, _ in m.named_children()))
        for path, m in model.named_modules()
    )
    return Inventory(format=FORMAT_OF[kind], tensors=tuple(tensors), modules=modules,
                     types_known=recorded, children_exact=True)


def modules_from_names(names: list[str]) -> tuple[ModuleInfo, ...]:
    children: dict[str, list[str]] = {"": []}
    for name in names:
        parts = name.split(".")
        for depth in range(len(parts) - 1):
            parent = ".".join(parts[:depth])
            path = ".".join(parts[: depth + 1])
            if path not in children:
                children[path] = []
                children[parent].append(parts[depth])
    return tuple(ModuleInfo(path=p, type=None, children=tuple(c)) for p, c in children.items())


@dataclass
class Expected:
    """An inventory's facts as plain lists and maps, easy to compare piece by piece."""

    parameters: list[str]  # primary names, definition order
    buffers: list[str]
    aliases: dict[str, list[str]] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)  # module path -> qualified class name
    children: dict[str, list[str]] = field(default_factory=dict)


def expected(inv: Inventory) -> Expected:
    return Expected(
        parameters=[t.name for t in inv.tensors if t.kind == "parameter"],
        buffers=[t.name for t in inv.tensors if t.kind == "buffer"],
        aliases={t.name: list(t.aliases) for t in inv.tensors if t.aliases},
        shapes={t.name: t.shape for t in inv.tensors},
        dtypes={t.name: t.dtype for t in inv.tensors},
        types={m.path: m.type for m in inv.modules if m.type is not None},
        children={m.path: list(m.children) for m in inv.modules},
    )


def of_module(model: nn.Module) -> Expected:
    """named_parameters() / named_buffers() / named_modules() of a live module."""
    return expected(live_inventory(model, "module"))


def of_state_dict(model: nn.Module) -> Expected:
    """The keys ``model.state_dict()`` saves, tied entries folded into their first name."""
    return expected(live_inventory(model, "state_dict"))
