from __future__ import annotations

import sys
from pathlib import Path

import pytest

from testing import ROOT, child_env


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def subprocess_env() -> dict[str, str]:
    """Environment for child processes (servers, CLIs) that must import this checkout's code."""
    return child_env({"LAYERFREEZE_TEST_PYTHON": sys.executable})
