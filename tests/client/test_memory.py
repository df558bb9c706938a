from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.heavy
@pytest.mark.server
def test_client_memory_stays_flat_on_a_large_round_trip(
    repo_root: Path, subprocess_env: dict[str, str]
) -> None:
    """bench/client_memory.py on 256 MiB (the benchmark itself runs 1 GiB): the client stays under 100 MiB."""
    out = subprocess.run([sys.executable, str(repo_root / "bench" / "client_memory.py"), "--size-mib", "256"],
                         env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["file_mib"] == 256 and result["frozen"] == 1
    assert result["client_peak_rss_mib"] < result["limit_mib"]
