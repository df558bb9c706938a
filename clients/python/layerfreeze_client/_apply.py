"""Apply a freeze state to a live model in one call.

    from layerfreeze_client import apply
    apply(model, "model.frozen.pt")           # the service's output checkpoint (any format)
    apply(model, "report.json")               # or its report (path, dict, or a report object)
    apply(model, {"encoder.weight": False})   # or a plain {name: requires_grad} mapping

torch is imported only when ``apply`` is called. Output checkpoints are read the way a user reads them
anyway: ``torch.load(weights_only=True, mmap=True)`` (a pickled whole module needs the same
``torch.serialization.safe_globals`` allowlist the original needed), ``torch.jit.load`` for TorchScript
archives, and only the JSON header for safetensors.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["AppliedState", "CheckpointReadError", "ModelMismatchError", "apply"]

# Where the model sits in a checkpoint dict, most specific first: the service's own list and rule
# (layerfreeze.formats.torch_objects.MODEL_KEYS; the client cannot import the service, so a test asserts
# the two are identical). Keys from this list are tried in this order, then the dict's other keys in
# their own order; the first that holds a state dict (or a module) is the model.
MODEL_KEYS = (
    "state_dict", "model_state_dict", "model_state", "model", "module", "net", "network", "ema",
    "model_ema", "state_dict_ema", "ema_state_dict", "params", "weights", "generator", "student", "teacher",
)


class ModelMismatchError(ValueError):
    """The names in the freeze state do not match the model's parameters."""

    def __init__(self, missing: Iterable[str], unexpected: Iterable[str]) -> None:
        self.missing = tuple(missing)
        self.unexpected = tuple(unexpected)
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} model parameters have no state: {_few(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} names are not parameters of the model: "
                         f"{_few(self.unexpected)}")
        super().__init__("the freeze state does not match the model: " + "; ".join(parts)
                         + " (pass prefix=... if the names carry a wrapper prefix, or strict=False)")


class CheckpointReadError(ValueError):
    """The file is not something ``apply`` can take a freeze state from."""


@dataclass(frozen=True)
class AppliedState:
    """What ``apply`` did: parameter names (every name, tied ones included) by their new state."""

    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    missing: tuple[str, ...] = ()  # model parameters left as they were (strict=False only)
    unexpected: tuple[str, ...] = ()  # names in the state that the model does not have (strict=False only)


def apply(
    model: Any, checkpoint_or_report: Any, *, strict: bool = True, prefix: str | None = None
) -> AppliedState:
    """Set ``requires_grad`` on every parameter of ``model`` from a checkpoint, a report or a mapping.

    ``prefix`` is stripped from the state's names (e.g. ``"model."`` for a Lightning checkpoint applied
    to the inner model); by default a single common leading segment is stripped when, and only when,
    no name matches as it is, or added when the live model is the wrapped one (``module.``,
    ``_orig_mod.``) and the state came from the inner model. Raises ModelMismatchError (a ValueError)
    when names do not match and ``strict`` is set, CheckpointReadError when the source cannot be read.
    """
    states = _states_from(checkpoint_or_report)
    params: dict[str, Any] = dict(model.named_parameters(remove_duplicate=False))
    buffers = {name for name, _ in model.named_buffers(remove_duplicate=False)}
    states = _strip_prefix(states, params, prefix)

    by_tensor: dict[int, list[str]] = {}
    for name, p in params.items():
        by_tensor.setdefault(id(p), []).append(name)
    missing: list[str] = []
    decided: dict[int, bool] = {}
    for key, names in by_tensor.items():
        known = {states[n] for n in names if n in states}
        if len(known) > 1:
            raise CheckpointReadError(f"the state gives tied names {names} different states")
        if known:
            decided[key] = known.pop()
        else:
            missing.extend(names)
    unexpected = [n for n in states if n not in params and n not in buffers]
    if strict and (missing or unexpected):
        raise ModelMismatchError(missing, unexpected)

    trainable: list[str] = []
    frozen: list[str] = []
    for key, value in decided.items():
        p = params[by_tensor[key][0]]
        value = value and (p.is_floating_point() or p.is_complex())
        p.requires_grad_(value)
        (trainable if value else frozen).extend(by_tensor[key])
    return AppliedState(tuple(trainable), tuple(frozen), tuple(missing), tuple(unexpected))


def _few(names: tuple[str, ...], n: int = 5) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def _strip_prefix(states: dict[str, bool], params: Mapping[str, Any], prefix: str | None) -> dict[str, bool]:
    if prefix:
        return {(n[len(prefix):] if n.startswith(prefix) else n): v for n, v in states.items()}
    if prefix is None and states and not any(n in params for n in states):
        heads = {n.split(".", 1)[0] for n in states}
        if len(heads) == 1 and all("." in n for n in states):
            stripped = {n.split(".", 1)[1]: v for n, v in states.items()}
            if any(n in params for n in stripped):
                return stripped
        # the other way round: the live model is wrapped (DataParallel's ``module.``, torch.compile's
        # ``_orig_mod.``) while the checkpoint was saved from the inner model
        model_heads = {n.split(".", 1)[0] for n in params}
        if len(model_heads) == 1 and all("." in n for n in params):
            head = model_heads.pop()
            prefixed = {f"{head}.{n}": v for n, v in states.items()}
            if any(n in params for n in prefixed):
                return prefixed
    return states


# --- where the states come from ---------------------------------------------------------------------

def _states_from(source: Any) -> dict[str, bool]:
    if isinstance(source, (str, os.PathLike)):
        return _states_from_file(Path(source))
    if isinstance(source, Mapping):
        if "parameters" in source and isinstance(source["parameters"], list):
            return _states_from_report(source)
        if all(isinstance(v, bool) for v in source.values()):
            return {str(k): v for k, v in source.items()}
        raise CheckpointReadError("a mapping must be a report or {parameter name: bool}")
    if hasattr(source, "model_dump"):
        return _states_from_report(source.model_dump(mode="json"))
    raw = getattr(source, "raw", None)
    if isinstance(raw, Mapping) and "parameters" in raw:
        return _states_from_report(raw)
    if hasattr(source, "parameters") and not callable(source.parameters):
        return _states_from_report({"parameters": [_as_dict(p) for p in source.parameters]})
    raise CheckpointReadError(f"cannot take a freeze state from a {type(source).__name__}")


def _as_dict(entry: Any) -> Mapping[str, Any]:
    if isinstance(entry, Mapping):
        return entry
    aliases = getattr(entry, "aliases", ())
    return {"name": entry.name, "requires_grad": entry.requires_grad, "aliases": aliases}


def _states_from_report(report: Mapping[str, Any]) -> dict[str, bool]:
    states: dict[str, bool] = {}
    for entry in report["parameters"]:
        value = bool(entry["requires_grad"])
        for name in (entry["name"], *(entry.get("aliases") or ())):
            states[str(name)] = value
    return states


def _states_from_file(path: Path) -> dict[str, bool]:
    if path.is_dir():  # a model directory: its index records the freeze state of every shard
        found = (sorted(path.glob("*.safetensors.index.json")) + sorted(path.glob("*.bin.index.json"))
                 + [f for f in (path / "model.safetensors", path / "pytorch_model.bin") if f.is_file()])
        if not found:
            raise CheckpointReadError(f"{path}: a directory without an index (*.safetensors.index.json, "
                                      "*.bin.index.json), model.safetensors or pytorch_model.bin")
        path = found[0]
    with open(path, "rb") as f:
        head = f.read(16)
        size = os.fstat(f.fileno()).st_size
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 8 + n <= size and head[8:9] == b"{":
            return _states_from_safetensors(path, n)
    if head.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(path) as zf:
            scripted = any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())
        return _states_from_torchscript(path) if scripted else _states_from_torch(path)
    if head[:1] == b"\x80":
        return _states_from_torch(path)
    if head.lstrip()[:1] == b"{":
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if isinstance(doc, dict) and "weight_map" in doc:
            return _states_from_index(path, doc)
        return _states_from_report(doc)
    raise CheckpointReadError(f"{path}: not a checkpoint, safetensors file or report")


def _states_from_index(path: Path, doc: Mapping[str, Any]) -> dict[str, bool]:
    meta = (doc.get("metadata") or {}).get("layerfreeze")
    if not isinstance(meta, dict):
        raise CheckpointReadError(f"{path}: this index carries no layerfreeze freeze state")
    return _states_from_record(path, meta)


def _states_from_safetensors(path: Path, header_len: int) -> dict[str, bool]:
    with open(path, "rb") as f:
        f.seek(8)
        header = json.loads(f.read(header_len))
    raw = (header.get("__metadata__") or {}).get("layerfreeze")
    if raw is None:
        raise CheckpointReadError(f"{path}: this safetensors file carries no layerfreeze freeze state")
    return _states_from_record(path, json.loads(raw))


def _states_from_record(path: Path, meta: Mapping[str, Any]) -> dict[str, bool]:
    if meta.get("format_version") != 1:
        version = meta.get("format_version")
        raise CheckpointReadError(f"{path}: unknown layerfreeze metadata version {version}")
    states = dict.fromkeys(meta.get("frozen", []), False)
    states.update(dict.fromkeys(meta.get("trainable", []), True))
    return states


def _states_from_torch(path: Path) -> dict[str, bool]:
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=not _is_legacy(path))
    except pickle.UnpicklingError as exc:
        lines = str(exc).splitlines()  # torch's first line is generic; the global it refused is further on
        reason = next((ln.strip() for ln in lines if "Unsupported global" in ln), lines[0] if lines else "")
        raise CheckpointReadError(
            f"{path}: torch.load(weights_only=True) refused it ({reason}). A pickled "
            "whole module needs its classes allowlisted: call apply() inside "
            "`with torch.serialization.safe_globals([...]):` (torch.serialization."
            "get_unsafe_globals_in_checkpoint lists them), or pass the job's report instead"
        ) from exc
    found = _find_model(obj, torch.Tensor, torch.nn.Module)
    if found is None:
        raise CheckpointReadError(f"{path}: no state dict of tensors found in the checkpoint")
    if isinstance(found, torch.nn.Module):
        return {n: p.requires_grad for n, p in found.named_parameters(remove_duplicate=False)}
    states = {n: t.requires_grad for n, t in found.items()}
    if states and not any(states.values()):
        # model.state_dict() records every tensor as not requiring grad: this may be the original
        warnings.warn(
            f"{path}: every tensor in this state dict is frozen. That is what a layerfreeze output that "
            "freezes everything looks like, but also any state dict saved by model.state_dict(); make sure "
            "this is the frozen output, not the original", UserWarning, stacklevel=3)
    return states


def _is_legacy(path: Path) -> bool:
    with open(path, "rb") as f:
        return not f.read(4).startswith(b"PK\x03\x04")


def _as_state_dict(value: Any, tensor_type: type) -> dict[str, Any] | None:
    """The tensors of ``value`` if it is a state dict (names to tensors; ``*_extra_state`` entries may
    hold anything), else None: the service's ``as_state_dict``."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        return None
    tensors = {}
    for key, item in value.items():
        if isinstance(item, tensor_type):
            tensors[key] = item
        elif not key.endswith("_extra_state"):
            return None
    if tensors or "_metadata" in getattr(value, "__dict__", {}):
        return tensors
    return None


def _find_model(obj: Any, tensor_type: type, module_type: type) -> Any:
    """The state dict or module the service froze in ``obj``, found by the service's own rule."""
    if isinstance(obj, module_type):
        return obj
    sd = _as_state_dict(obj, tensor_type)
    if sd is not None:
        return sd
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(k, str) for k in obj):
        return None
    for key in [k for k in MODEL_KEYS if k in obj] + [k for k in obj if k not in MODEL_KEYS]:
        sd = _as_state_dict(obj[key], tensor_type)
        if sd is not None and (key in MODEL_KEYS or sd):
            return sd
        if isinstance(obj[key], module_type):
            return obj[key]
    return None


def _states_from_torchscript(path: Path) -> dict[str, bool]:
    import torch

    scripted = torch.jit.load(str(path), map_location="cpu")  # the user's own file, as they would load it
    return {n: p.requires_grad for n, p in scripted.named_parameters()}
