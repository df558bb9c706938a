"""Crash, full-disk and corrupt-database faults against a live service (see stress/faults.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adversarial._support import require
from stress import faults

pytestmark = [pytest.mark.server, pytest.mark.heavy]


def test_faults(tmp_path: Path) -> None:
    require("layerfreeze.server")
    results = faults.run(tmp_path)
    for r in results:
        print(f"{'ok ' if r.ok else 'BAD'} {r.case:34s} {r.seconds:6.1f}s  {r.detail[:160]}")
    assert len(results) == 7
    bad = [r for r in results if not r.ok]
    assert not bad, bad
