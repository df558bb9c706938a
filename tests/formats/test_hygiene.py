"""The readers never load torch and never contain a call that could execute an upload."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

FORMATS = Path(__file__).resolve().parents[2] / "service" / "layerfreeze" / "formats"


def test_opening_a_file_does_not_import_torch(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"__metadata__":{}}'[:16])
    code = ("import sys; from pathlib import Path; from layerfreeze.formats.detect import open_archive\n"
            "try:\n    open_archive(Path(sys.argv[1]))\nexcept Exception:\n    pass\n"
            "import layerfreeze.formats.torchzip, layerfreeze.formats.legacy\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'numpy'))))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], env=subprocess_env, capture_output=True,
                         text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def test_no_loader_calls_in_the_readers() -> None:
    forbidden = {"pickle.load", "pickle.loads", "pickle.Unpickler", "torch.load", "torch.jit.load",
                 "jit.load", "torch.export.load", "eval", "exec", "__import__", "importlib.import_module",
                 "marshal.loads", "compile"}
    for path in FORMATS.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                assert _dotted(node.func) not in forbidden, f"{path.name}:{node.lineno}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n == "torch" or n.startswith("torch.") for n in names), path.name
