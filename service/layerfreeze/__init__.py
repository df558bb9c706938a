"""layerfreeze: freeze PyTorch checkpoints by rule, without ever executing them.

    from layerfreeze import freeze_file
    report = freeze_file("model.pt", {"rules": [{"action": "freeze", "names": ["encoder"]}]}, "out.pt")

The names below are imported on first use, so ``import layerfreeze.errors`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from layerfreeze.version import __version__

__all__ = ["FreezeSpec", "Report", "__version__", "freeze_file", "parse_spec", "spec_sha256"]

_LAZY = {
    "FreezeSpec": "layerfreeze.core.spec",
    "Report": "layerfreeze.core.report",
    "freeze_file": "layerfreeze.freeze",
    "parse_spec": "layerfreeze.core.spec",
    "spec_sha256": "layerfreeze.core.spec",
}

if TYPE_CHECKING:
    from layerfreeze.core.report import Report
    from layerfreeze.core.spec import FreezeSpec, parse_spec, spec_sha256
    from layerfreeze.freeze import freeze_file


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'layerfreeze' has no attribute {name!r}")
