"""The client package installs and runs without torch, FastAPI or the service's code.

Offline: the declared requirements are resolved against the distributions already installed here (the
resolver's view when they are satisfied), checked to pull in nothing heavy, and exactly those distributions
plus the package are placed in a fresh virtual environment, where the package must import and its CLI run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

FORBIDDEN = {"torch", "fastapi", "starlette", "uvicorn", "pydantic", "pydantic-settings", "layerfreeze",
             "numpy", "safetensors", "transformers", "prometheus-client"}


def declared(repo_root: Path) -> list[Requirement]:
    data = tomllib.loads((repo_root / "clients/python/pyproject.toml").read_text())
    return [Requirement(r) for r in data["project"]["dependencies"]]


def resolve(requirements: list[Requirement]) -> dict[str, metadata.Distribution]:
    """The installed distributions that satisfy ``requirements``, transitively (no extras)."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(requirements)
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in found:
            continue
        dist = metadata.distribution(req.name)
        assert req.specifier.contains(dist.version, prereleases=True), f"{req} not met by {dist.version}"
        found[name] = dist
        todo += [Requirement(r) for r in dist.requires or []]
    return found


def test_declared_requirements_pull_in_nothing_heavy(repo_root: Path) -> None:
    closure = resolve(declared(repo_root))
    assert {"httpx", "tqdm"} <= set(closure)
    assert not set(closure) & FORBIDDEN, set(closure) & FORBIDDEN


@pytest.mark.timeout(120)
def test_fresh_venv_imports_and_runs_without_torch(repo_root: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = Path(subprocess.run([str(python), "-c", where], check=True, capture_output=True,
                                  text=True).stdout.strip())
    here = Path(sysconfig.get_path("purelib")).resolve()
    for dist in resolve(declared(repo_root)).values():  # what `pip install` would have put there
        for file in dist.files or []:
            src = Path(dist.locate_file(file)).resolve()
            if here in src.parents and src.is_file() and "__pycache__" not in src.parts:
                dst = purelib / src.relative_to(here)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    shutil.copytree(repo_root / "clients/python/layerfreeze_client", purelib / "layerfreeze_client",
                    ignore=shutil.ignore_patterns("__pycache__"))
    check = (
        "import importlib.util, sys\n"
        "import layerfreeze_client as lc\n"
        "from layerfreeze_client import Client, AsyncClient, Spec\n"
        "assert importlib.util.find_spec('torch') is None, 'torch is visible'\n"
        "heavy = {'torch', 'fastapi', 'starlette', 'pydantic', 'layerfreeze'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "print(Spec().freeze(names=['0']).to_json())\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([str(python), "-I", "-c", check], capture_output=True, text=True, timeout=60,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert '"names": ["0"]' in out.stdout
    cli = subprocess.run([str(python), "-I", "-m", "layerfreeze_client", "--help"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert cli.returncode == 0 and "freeze" in cli.stdout, cli.stderr
