from __future__ import annotations

import subprocess
import sys

import layerfreeze


def test_public_names_are_sorted_and_resolve():
    assert layerfreeze.__all__ == sorted(layerfreeze.__all__)
    for name in layerfreeze.__all__:
        assert getattr(layerfreeze, name) is not None
    assert layerfreeze.freeze_file.__module__ == "layerfreeze.freeze"


def test_core_imports_neither_torch_nor_a_web_framework(subprocess_env):
    code = ("import sys, layerfreeze.freeze, layerfreeze.core.report, layerfreeze.cli.main; "
            "bad = [m for m in ('torch', 'fastapi', 'starlette', 'numpy') if m in sys.modules]; "
            "assert not bad, bad; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
