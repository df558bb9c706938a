"""``layerfreeze worker`` and ``serve`` in the distributed mode: refused without what they need, stopped
cleanly by SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import subprocess

import pytest

from testing.distributed import WORKER_COMMAND
from testing.procs import gone
from testing.service import free_port

CLI = WORKER_COMMAND[:-1]  # python -c "...main()", then the command


@pytest.mark.parametrize(("command", "settings", "named"), [
    ("worker", {}, "LAYERFREEZE_QUEUE=celery"),
    ("worker", {"LAYERFREEZE_QUEUE": "celery"}, "LAYERFREEZE_BROKER_URL"),
    ("worker", {"LAYERFREEZE_QUEUE": "celery", "LAYERFREEZE_BROKER_URL": "redis://127.0.0.1:1/0"},
     "LAYERFREEZE_DATABASE_URL"),
    ("serve", {"LAYERFREEZE_QUEUE": "celery", "LAYERFREEZE_BROKER_URL": "redis://127.0.0.1:1/0"},
     "LAYERFREEZE_DATABASE_URL"),
    ("serve", {"LAYERFREEZE_QUEUE": "celery", "LAYERFREEZE_BROKER_URL": "redis://127.0.0.1:1/0",
               "LAYERFREEZE_DATABASE_URL": "postgresql://u:p@127.0.0.1:1/db",
               "LAYERFREEZE_JOB_TIMEOUT_S": "100", "LAYERFREEZE_BROKER_VISIBILITY_TIMEOUT_S": "50"},
     "broker_visibility_timeout_s"),
])
def test_distributed_mode_refuses_to_start_without_what_it_needs(
        subprocess_env: dict[str, str], tmp_path, command: str, settings: dict[str, str], named: str) -> None:
    env = {**subprocess_env, **settings, "LAYERFREEZE_DATA_DIR": str(tmp_path / "data"),
           "LAYERFREEZE_PORT": str(free_port())}
    r = subprocess.run([*CLI, command], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 78, r.stderr
    assert named in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "data").exists()  # refused before touching anything


@pytest.mark.server
def test_worker_stops_cleanly_on_sigterm(make_cluster) -> None:
    cluster = make_cluster(workers="2")
    worker = cluster.workers[0]
    freeze = worker.freeze_pids()
    assert len(freeze) == 2
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(30) == 0, worker.log_tail()
    assert all(gone(pid) for pid in freeze)  # it ended its freeze processes itself
    # Celery's log records and Python's warnings are JSON lines too (only Celery's printed shutdown
    # notice is plain text), never in Celery's own "[date: LEVEL/Process] message" format.
    records = [json.loads(line) for line in worker.log.read_text().splitlines() if line.startswith("{")]
    assert any(r["logger"].startswith("celery") for r in records), worker.log_tail()
    assert not re.search(r"^\[\d{4}-\d\d-\d\d ", worker.log.read_text(), re.M), worker.log_tail()
    worker.stop()
    with cluster.client() as c:  # the cluster goes on with the other worker
        assert c.get("/readyz").status_code == 200
