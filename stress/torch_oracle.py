"""torch's own reading of checkpoints, in a subprocess (a mutant may crash or hang torch).

    python -m stress.torch_oracle      # JSON lines in: {"path", "mode": "load"|"jit", "allow": [...]}
                                       # JSON lines out: {"ok": true, "tensors": {name: [dtype, shape,
                                       #   requires_grad, kind]}} or {"ok": false, "error": "..."}

``load`` is ``torch.load(path, map_location="cpu", weights_only=True)`` with only ``allow`` (qualified
class names of the unmutated base, e.g. its nn.Module classes) added to the safe globals, then the model
is found in the result by ``apply()``'s own rule; ``jit`` is ``torch.jit.load`` and is used only for
TorchScript that our own tests generated. kind is "parameter", "buffer" or "tensor" (a state dict, where
torch makes no difference).
"""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from typing import Any


def _resolve(qualname: str) -> Any:
    module, _, name = qualname.rpartition(".")
    obj: Any = importlib.import_module(module)
    return getattr(obj, name)


def _dtype(t: Any) -> str:
    return str(t.dtype).removeprefix("torch.")


def read(path: str, mode: str, allow: list[str]) -> dict[str, Any]:
    import torch
    from layerfreeze_client._apply import _find_model

    tensors: dict[str, list[Any]] = {}

    def module_view(m: Any) -> None:
        for name, p in m.named_parameters(remove_duplicate=False):
            tensors[name] = [_dtype(p), list(p.shape), bool(p.requires_grad), "parameter"]
        for name, b in m.named_buffers(remove_duplicate=False):
            tensors[name] = [_dtype(b), list(b.shape), bool(b.requires_grad), "buffer"]

    if mode == "jit":
        module_view(torch.jit.load(path, map_location="cpu"))
        return {"ok": True, "tensors": tensors}
    with torch.serialization.safe_globals([_resolve(q) for q in allow]):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    found = _find_model(obj, torch.Tensor, torch.nn.Module)
    if found is None:
        return {"ok": False, "error": "no model in what torch.load returned"}
    if isinstance(found, torch.nn.Module):
        module_view(found)
    else:
        for name, t in found.items():
            tensors[name] = [_dtype(t), list(t.shape), bool(t.requires_grad), "tensor"]
    return {"ok": True, "tensors": tensors}


def main() -> int:
    warnings.simplefilter("ignore")
    import torch  # noqa: F401  (imported once, before the first job)

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        try:
            result = read(job["path"], job["mode"], job.get("allow", []))
        except Exception as exc:  # torch's refusal, whatever its type
            result = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
