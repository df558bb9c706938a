"""The test kit shared by ``tests/``, ``stress/`` and ``bench/``: machinery that must exist once.

- ``testing.service``: a real ``python -m layerfreeze.server`` process on 127.0.0.1 (``Service``,
  ``running_service``, ``free_port``);
- ``testing.redis``: a real ``redis-server`` on 127.0.0.1 (``RedisServer``, ``require_redis``);
- ``testing.distributed``: the distributed mode as real processes: API replicas behind a round-robin
  proxy and ``layerfreeze worker`` processes over one data directory, Redis and PostgreSQL (``Cluster``,
  ``distributed_service``);
- ``testing.procs``: ``/proc`` walkers (descendants, pool workers, RSS, peak RSS);
- ``testing.hostile``: builders of hostile files (the pickle assembler ``Asm``, code-running payloads,
  torch-layout and forged zips, safetensors headers);
- ``testing.oracle``: what torch itself says about a live ``nn.Module`` (the inventory a perfect reader
  would build from its saved file).

Importable with the repository root on ``sys.path``: pytest adds it (``pythonpath`` in pyproject.toml),
``python -m stress`` and ``python -m bench.<script>`` run from the root have it.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# what a child process needs on its path to import this checkout's code, the test fixtures and this kit
CHILD_PATHS = (ROOT / "service", ROOT / "clients" / "python", ROOT / "tests", ROOT)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with this checkout first on ``PYTHONPATH``, plus ``extra``."""
    env = dict(os.environ)
    paths = [str(p) for p in CHILD_PATHS]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env
