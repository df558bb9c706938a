"""Attack, fault and load suites for layerfreeze: ``python -m stress`` runs them and prints one table.

Modules: corpus (hostile files), fuzz (property fuzzing), api_fuzz (schemathesis), abuse (raw HTTP),
faults (kill -9, full disk, corrupt database), load (concurrent clients), server (a live service).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ensure_paths() -> None:
    """Make this checkout's service code, test fixtures and test kit importable when run as
    ``python -m stress``."""
    for p in (str(ROOT), *(str(ROOT / sub) for sub in ("service", "clients/python", "tests"))):
        if p not in sys.path:
            sys.path.insert(0, p)
