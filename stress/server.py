"""The suites' live service: the kit's ``Service`` with two workers and warnings-only logs by default.

    with Service(data_dir, {"LAYERFREEZE_MAX_UPLOAD_BYTES": "1048576"}) as svc:
        httpx.get(svc.url + "/healthz")
"""

from __future__ import annotations

from pathlib import Path

from testing.procs import descendants, rss_mib
from testing.service import Service as _Service
from testing.service import free_port

__all__ = ["SUITE_DEFAULTS", "Service", "descendants", "free_port", "rss_mib"]

SUITE_DEFAULTS = {"LAYERFREEZE_WORKERS": "2", "LAYERFREEZE_LOG_LEVEL": "WARNING"}


class Service(_Service):
    def __init__(self, data_dir: Path, settings: dict[str, str] | None = None, **kwargs: object) -> None:
        super().__init__(data_dir, {**SUITE_DEFAULTS, **(settings or {})}, **kwargs)  # type: ignore[arg-type]
