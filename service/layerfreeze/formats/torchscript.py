"""Recovering the module tree of a TorchScript archive from its data.pkl and its class code.

Objects in data.pkl are typed ``__torch__.<qualified name>`` (traced ones with ``___torch_mangle_N``).
Which attributes are parameters and buffers is declared in the class source under ``code/``
(``__parameters__ = ["weight", "bias", ]``). The code is TorchScript, which is Python syntax: we parse
each file with ``ast.parse`` (as data; nothing is compiled or run) and take every ``__parameters__`` /
``__buffers__`` assignment in a class body, whatever its indentation or comments, merging repeated ones
as torch.jit does. Code in any other form (the names used anywhere else, computed values, a file that
does not parse) is refused as ambiguous rather than guessed.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from layerfreeze.core.model import Inventory, ModuleInfo, TensorInfo
from layerfreeze.errors import AmbiguousCheckpoint, FormatError, LimitExceeded
from layerfreeze.formats.pickle.nodes import Flag, Obj, TensorNode
from layerfreeze.formats.torch_objects import (
    Recovered,
    StorageBytes,
    check_extent,
    check_flags,
    check_name_count,
)
from layerfreeze.limits import ReadLimits

_MANGLE = re.compile(r"^___torch_mangle_\d+$")


@dataclass(frozen=True, slots=True)
class ClassDecl:
    parameters: tuple[str, ...]
    buffers: tuple[str, ...]


def normalize_type(qualname: str) -> str:
    """``__torch__.torch.nn.modules.linear.___torch_mangle_0.Linear`` -> ``torch.nn...linear.Linear``."""
    parts = qualname.split(".")
    if parts and parts[0] == "__torch__":
        parts = parts[1:]
    return ".".join(p for p in parts if not _MANGLE.match(p))


def parse_class_decls(source: str) -> dict[str, ClassDecl]:
    """Class name -> declared parameters and buffers, for every module class in one code file."""
    try:
        tree = ast.parse(source, mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise _unclear(f"its code does not parse ({type(exc).__name__})") from exc
    lines = [stmt.lineno for stmt in ast.walk(tree) if isinstance(stmt, ast.stmt)]
    if len(lines) != len(set(lines)):  # ``a; b`` or ``if x: y``: torch's printer never writes it
        raise _unclear("two statements share a line")
    decls: dict[str, ClassDecl] = {}
    found = 0
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        if node.name in decls:
            raise _unclear(f"class {node.name} is defined twice in one file")
        lists: dict[str, list[str]] = {}
        for stmt in node.body:
            target, value = _assignment(stmt)
            if target not in _DECLS:
                continue
            names = _string_list(value)
            if names is None:
                raise _unclear(f"class {node.name} declares {target} as something not a list of names")
            found += 1
            merged = lists.setdefault(target, [])
            merged.extend(n for n in names if n not in merged)
        if "__parameters__" in lists:
            params, buffers = tuple(lists["__parameters__"]), tuple(lists.get("__buffers__", ()))
            if set(params) & set(buffers):
                raise _unclear(f"class {node.name} declares {sorted(set(params) & set(buffers))} as both "
                               "parameters and buffers")
            decls[node.name] = ClassDecl(params, buffers)
    # Every mention of the two names must be one of the declarations read above (not a string, a
    # nested block, an augmented assignment or an expression torch might evaluate differently).
    if sum(source.count(name) for name in _DECLS) != found:
        raise _unclear("__parameters__ / __buffers__ appear outside plain class-body declarations")
    return decls


_DECLS = ("__parameters__", "__buffers__")


def _assignment(stmt: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        return stmt.targets[0].id, stmt.value
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
        return stmt.target.id, stmt.value
    return None, None


def _string_list(value: ast.expr | None) -> list[str] | None:
    if not isinstance(value, ast.List):
        return None
    names = [e.value for e in value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return names if len(names) == len(value.elts) else None


def _unclear(what: str) -> AmbiguousCheckpoint:
    return AmbiguousCheckpoint(f"TorchScript code is not in the form torch.jit.save writes: {what}; "
                               "refused as ambiguous", ambiguity="torchscript-code")


class CodeIndex:
    """Finds the declaration of an ``__torch__`` class in ``code/``; files are read on first use."""

    def __init__(self, read_code: Callable[[str], str | None]) -> None:
        self._read = read_code
        self._files: dict[str, dict[str, ClassDecl]] = {}

    def decl(self, obj: Obj) -> ClassDecl | None:
        module = obj.cls.module
        if not module.startswith("__torch__"):
            return None
        if module not in self._files:
            source = self._read("code/" + module.replace(".", "/") + ".py")
            self._files[module] = parse_class_decls(source) if source is not None else {}
        return self._files[module].get(obj.cls.name)


def recover_torchscript(root: Any, code: CodeIndex, *, storage_bytes: StorageBytes,
                        storage_prefix: str, limits: ReadLimits) -> Recovered:
    if not isinstance(root, Obj) or code.decl(root) is None:
        raise FormatError("TorchScript archive holds no module object in data.pkl")
    modules = _named_modules(root, code, limits)
    infos: list[ModuleInfo] = []
    tensors: list[TensorInfo] = []
    flags: dict[str, list[Flag]] = {}
    names = 0
    aliases: list[list[str]] = []  # further names of tensors[i]
    for kind in ("parameter", "buffer"):
        seen: dict[int, int] = {}
        for path, _obj, decl, attrs in modules:
            declared = decl.parameters if kind == "parameter" else decl.buffers
            for attr, value in attrs.items():
                if attr not in declared or value is None:
                    continue
                names += 1
                check_name_count(names, limits)
                if not isinstance(value, TensorNode):
                    raise FormatError(f"TorchScript {kind} {attr!r} of {path or '<root>'} is not a tensor")
                name = limits.check_name(f"{path}.{attr}" if path else attr)
                check_extent(name, value, storage_bytes)
                check_flags(name, value)
                if id(value) in seen:
                    aliases[seen[id(value)]].append(name)
                    continue  # the same node: its flag sites are already listed
                seen[id(value)] = len(tensors)
                aliases.append([])
                tensors.append(TensorInfo(name, kind, value.shape, value.dtype,
                                          value.flag.value, (), f"{storage_prefix}:{value.storage.key}"))
                if kind == "parameter":
                    flags[name] = value.sites
    for path, obj, _decl, attrs in modules:
        children = tuple(a for a, v in attrs.items() if isinstance(v, Obj) and code.decl(v) is not None)
        infos.append(ModuleInfo(path, normalize_type(obj.type_name), children))
    tensors = [dataclasses.replace(t, aliases=tuple(more)) if more else t
               for t, more in zip(tensors, aliases, strict=True)]
    inventory = Inventory(format="torchscript", tensors=tuple(tensors), modules=tuple(infos),
                          types_known=True, children_exact=True)
    return Recovered(inventory, flags)


def _named_modules(root: Obj, code: CodeIndex, limits: ReadLimits
                   ) -> list[tuple[str, Obj, ClassDecl, dict[str, Any]]]:
    out: list[tuple[str, Obj, ClassDecl, dict[str, Any]]] = []
    seen: set[int] = set()
    todo: list[tuple[str, Obj]] = [("", root)]
    while todo:
        path, obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        decl = code.decl(obj)
        attrs = obj.state if isinstance(obj.state, dict) else None
        if decl is None or attrs is None or not all(isinstance(k, str) for k in attrs):
            raise FormatError(f"TorchScript module {path or '<root>'} has no readable attributes")
        out.append((path, obj, decl, attrs))
        if path.count(".") >= limits.max_pickle_depth:
            raise LimitExceeded("module tree nests too deep", limit="max_pickle_depth",
                                maximum=limits.max_pickle_depth)
        kids = [(limits.check_name(f"{path}.{a}" if path else a), v) for a, v in attrs.items()
                if isinstance(v, Obj) and code.decl(v) is not None]
        todo.extend(reversed(kids))
    return out
