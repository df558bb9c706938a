"""The layers import only downwards: the core knows no formats, web or torch; the workers and storage know no
HTTP layer; the error tree and its problem table need no framework. Checked on the source (every import
statement, function-local ones included) and on a real interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "service" / "layerfreeze"
FRAMEWORKS = ("torch", "fastapi", "starlette", "uvicorn", "multipart", "httpx", "prometheus_client")

# package folder or module -> the layerfreeze modules it may import (prefixes)
ALLOWED = {
    "core": ("layerfreeze.core", "layerfreeze.errors", "layerfreeze.version"),
    "formats": ("layerfreeze.core", "layerfreeze.formats", "layerfreeze.errors", "layerfreeze.limits"),
    "errors.py": (),
    "problems.py": ("layerfreeze.errors",),
    "limits.py": ("layerfreeze.errors",),
    "version.py": (),
}
NEVER_API = ("worker", "storage", "core", "formats", "freeze.py", "problems.py", "settings.py")


def imports_of(path: Path) -> list[str]:
    """Every module an import statement in ``path`` names (``from a import b`` names ``a`` and ``a.b``)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def modules_under(part: str) -> list[Path]:
    target = PACKAGE / part
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


def ours(name: str) -> bool:
    return name == "layerfreeze" or name.startswith("layerfreeze.")


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_lower_layers_import_only_what_lies_below(part: str) -> None:
    allowed = ALLOWED[part]
    for path in modules_under(part):
        for name in imports_of(path):
            top = name.split(".")[0]
            assert top not in FRAMEWORKS, f"{path.relative_to(PACKAGE)} imports {name}"
            # ``from layerfreeze import errors`` names the root and ``layerfreeze.errors``: judge the latter
            if ours(name) and name != "layerfreeze":
                assert name.startswith(allowed), f"{path.relative_to(PACKAGE)} imports {name}"


def test_core_never_imports_the_package_root() -> None:
    for path in modules_under("core"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "layerfreeze":
                pytest.fail(f"core/{path.name} imports from the package root: {ast.unparse(node)}")


@pytest.mark.parametrize("part", NEVER_API)
def test_only_the_edges_import_the_http_layer(part: str) -> None:
    for path in modules_under(part):
        for name in imports_of(path):
            assert not name.startswith("layerfreeze.api"), f"{path.relative_to(PACKAGE)} imports {name}"
            assert name.split(".")[0] not in ("fastapi", "starlette", "uvicorn"), \
                f"{path.relative_to(PACKAGE)} imports {name}"


def test_a_worker_process_loads_no_framework() -> None:
    """What a worker imports to run a job (the freeze use case, the runner, the problem table)."""
    code = (
        "import sys, layerfreeze.freeze, layerfreeze.worker.runner, layerfreeze.problems, "
        "layerfreeze.formats.detect, layerfreeze.core.selection\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r} "
        "or m.startswith('layerfreeze.api'))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(PACKAGE.parent)})
    assert out.stdout.strip() == "", f"a worker imported {out.stdout.strip()}"
