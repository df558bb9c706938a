"""Start-up refusals: a second service on a data directory in use, a port in use. Real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from svc_helpers import checkpoint, submit, wait_for

from testing.service import Service

pytestmark = pytest.mark.server


def start_and_fail(env: dict[str, str], module: str = "layerfreeze.server",
                   args: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    return out


def test_a_second_service_on_the_same_data_dir_refuses_and_changes_nothing(
        make_server, tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    first = make_server(workers="1")
    src = checkpoint(tmp_path)
    with first.client() as c:
        (worker,) = first.worker_pids()
        os.kill(worker, signal.SIGSTOP)  # the job it is handed stays running
        running = submit(c, src, {}).json()
        wait_for(c, running["id"], until=("running",))
        queued = submit(c, src, {"rules": [{"action": "freeze", "names": ["0"]}]}).json()

    # same directory (and database, when not the directory's file), another port
    shared = {k: v for k, v in first.settings.items() if k == "LAYERFREEZE_DATABASE_URL"}
    second = Service(first.data_dir, {"workers": "1", **shared}, env=subprocess_env)
    for module, args in (("layerfreeze.server", ()), ("layerfreeze.cli.main", ("serve",))):
        out = start_and_fail(second.env, module, args)
        err = out.stderr
        assert out.returncode == 12, module  # the same code from either entry point
        assert f"the data directory {first.data_dir.resolve()} is in use" in err
        assert first.proc is not None and f"pid {first.proc.pid}" in err
        assert f"127.0.0.1:{first.port}" in err and "LAYERFREEZE_DATA_DIR" in err

    with first.client() as c:  # the first service's jobs are as they were, and it still serves
        assert c.get(f"/v1/jobs/{running['id']}").json()["status"] == "running"
        assert c.get(f"/v1/jobs/{queued['id']}").json()["status"] == "queued"
        assert c.get("/readyz").status_code == 200

    first.stop(signal.SIGKILL)  # the lock goes with its holder, however it ends
    second.start()
    with second.client() as c:
        assert "interrupted by restart" in c.get(f"/v1/jobs/{running['id']}").json()["error"]["detail"]
        assert wait_for(c, queued["id"])["status"] == "succeeded"
    second.stop()


def test_a_port_in_use_is_a_clear_error_naming_the_setting(tmp_path: Path,
                                                            subprocess_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {**subprocess_env, "LAYERFREEZE_HOST": "127.0.0.1", "LAYERFREEZE_PORT": str(port),
               "LAYERFREEZE_DATA_DIR": str(tmp_path / "data"), "LAYERFREEZE_WORKERS": "1"}
        for module, args in (("layerfreeze.server", ()), ("layerfreeze.cli.main", ("serve",))):
            out = start_and_fail(env, module, args)
            err = out.stderr
            assert out.returncode == 12, module
            assert f"127.0.0.1:{port} is already in use" in err and "LAYERFREEZE_PORT" in err, err
    assert not (tmp_path / "data" / "jobs").exists()  # refused before the service touched its directory
