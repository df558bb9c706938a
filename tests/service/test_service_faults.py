"""Workers that die or overrun, restarts, concurrency: each failure stays with its own job."""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from svc_helpers import checkpoint, load_flags, report_flags, submit, wait_for

from testing.procs import gone

pytestmark = pytest.mark.server


def _stopped_worker(server) -> int:
    """Freeze the only worker (SIGSTOP): the next job it is handed hangs deterministically."""
    (pid,) = server.worker_pids()
    os.kill(pid, signal.SIGSTOP)
    return pid


def test_killed_worker_fails_only_its_job_and_is_replaced(make_server, tmp_path: Path) -> None:
    server = make_server(workers="1")
    src = checkpoint(tmp_path, "seq3")
    with server.client() as c:
        pid = _stopped_worker(server)
        job = submit(c, src, {}).json()
        wait_for(c, job["id"], until=("running",))
        os.kill(pid, signal.SIGKILL)
        failed = wait_for(c, job["id"])
        assert failed["status"] == "failed"
        assert "worker killed by signal 9" in failed["error"]["detail"]
        assert c.get(f"/v1/jobs/{job['id']}/report").status_code == 409

        nxt = submit(c, src, {"rules": [{"action": "freeze", "names": ["2"]}]}, wait=30)
        assert nxt.status_code == 200, nxt.text
        assert nxt.json()["status"] == "succeeded"
        (new_pid,) = server.worker_pids()
        assert new_pid != pid
        limits = Path(f"/proc/{new_pid}/limits").read_text()
        assert re.search(r"Max address space\s+4294967296\s", limits), limits
        metrics = c.get("/metrics").text
        assert 'layerfreeze_worker_restarts_total{reason="died"} 1.0' in metrics


def test_time_limit_fails_the_job_with_the_reason(make_server, tmp_path: Path) -> None:
    server = make_server(workers="1", job_timeout_s="1")
    src = checkpoint(tmp_path, "seq3")
    with server.client() as c:
        pid = _stopped_worker(server)
        t0 = time.monotonic()
        r = submit(c, src, {}, wait=20)
        assert 1 <= time.monotonic() - t0 < 15
        assert r.status_code == 422
        body = r.json()
        assert body["detail"] == "time limit 1 s exceeded"
        assert body["job"]["status"] == "failed"
        assert gone(pid)
        # the API answered all along, and the replacement worker takes the next job
        assert c.get("/healthz").status_code == 200
        assert submit(c, src, {}, wait=30).json()["status"] == "succeeded"


def test_api_answers_while_workers_are_busy(make_server, tmp_path: Path) -> None:
    server = make_server(workers="1", queue_max="1")
    src = checkpoint(tmp_path, "seq3")
    with server.client() as c:
        pid = _stopped_worker(server)
        job = submit(c, src, {}).json()
        wait_for(c, job["id"], until=("running",))
        t0 = time.monotonic()
        assert c.get("/healthz").status_code == 200
        queued = submit(c, src, {}).json()
        assert queued["status"] == "queued"
        assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"
        full = submit(c, src, {})
        assert full.status_code == 429 and int(full.headers["retry-after"]) >= 1
        assert full.headers["content-type"] == "application/problem+json"
        assert time.monotonic() - t0 < 2
        assert c.delete(f"/v1/jobs/{job['id']}").status_code == 409
        os.kill(pid, signal.SIGCONT)
        assert wait_for(c, queued["id"])["status"] == "succeeded"


def test_restart_keeps_finished_jobs_and_requeues_queued_ones(make_server, tmp_path: Path) -> None:
    server = make_server(workers="1")
    src = checkpoint(tmp_path, "seq3")
    with server.client() as c:
        done = submit(c, src, {"rules": [{"action": "freeze", "names": ["0"]}]}, wait=30).json()
        art = c.get(done["links"]["artifact"]).content
        _stopped_worker(server)
        running = submit(c, src, {}).json()
        wait_for(c, running["id"], until=("running",))
        queued = submit(c, src, {"rules": [{"action": "freeze", "names": ["2"]}]}).json()
    server.restart(signal.SIGKILL)  # a crash: no graceful shutdown
    with server.client() as c:
        again = c.get(done["links"]["artifact"])
        assert again.status_code == 200 and again.content == art
        assert c.get(done["links"]["report"]).status_code == 200
        interrupted = c.get(f"/v1/jobs/{running['id']}").json()
        assert interrupted["status"] == "failed"
        assert "interrupted by restart" in interrupted["error"]["detail"]
        requeued = wait_for(c, queued["id"])
        assert requeued["status"] == "succeeded"
        flags = load_flags(c.get(requeued["links"]["artifact"]).content)
        assert flags["2.weight"] is False and flags["0.weight"] is True


def test_sixteen_jobs_at_once_all_succeed_correctly(server, tmp_path: Path) -> None:
    src = checkpoint(tmp_path, "seq12")
    layers = [*range(12), 0, 5, 10, 11]

    def one(i: int) -> tuple[int, dict, bytes]:
        with server.client() as c:
            r = submit(c, src, {"rules": [{"action": "freeze", "names": [str(i)]}]}, wait=60)
            assert r.status_code == 200, r.text
            job = r.json()
            report = c.get(job["links"]["report"]).json()
            return i, report, c.get(job["links"]["artifact"]).content

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, layers))
    assert len(results) == 16
    for i, report, art in results:
        flags = report_flags(report)
        frozen = sorted(n for n, rg in flags.items() if not rg)
        assert frozen == [f"{i}.bias", f"{i}.weight"]
        assert load_flags(art) == flags


def test_retention_removes_old_jobs_and_their_files(make_server, tmp_path: Path) -> None:
    """Waits for the outcome (record and files gone, bounded), never for a time: first without retention,
    so the files are seen before any cleanup could run, then restarted with a one-second retention."""
    server = make_server(workers="1", retention_s="0", cleanup_interval_s="0.2")
    src = checkpoint(tmp_path, "seq3")
    with server.client() as c:
        job = submit(c, src, {}, wait=30).json()
        assert job["status"] == "succeeded"
    job_dir = server.data_dir / "jobs" / job["id"]
    assert sorted(p.name for p in job_dir.iterdir()) == ["patch.json", "report.json"]
    server.env["LAYERFREEZE_RETENTION_S"] = "1"
    server.restart()
    with server.client() as c:
        deadline = time.monotonic() + 120  # generous: a loaded machine only makes it slower
        while c.get(f"/v1/jobs/{job['id']}").status_code != 404 or job_dir.exists():
            assert time.monotonic() < deadline, "retention did not remove the job and its files"
            time.sleep(0.1)


def test_idle_worker_that_dies_is_replaced_without_a_job(make_server) -> None:
    server = make_server(workers="2")
    with server.client() as c:
        for pid in server.worker_pids():
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        time.sleep(0.2)
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "workers not replaced"
            time.sleep(0.1)
        assert len(server.worker_pids()) == 2
        assert 'layerfreeze_worker_restarts_total{reason="died_idle"} 2.0' in c.get("/metrics").text


def test_upload_damaged_on_disk_before_its_job_runs_fails_the_job(make_server, tmp_path: Path) -> None:
    server = make_server(workers="1")
    src = checkpoint(tmp_path, "seq3", "safetensors")
    with server.client() as c:
        pid = _stopped_worker(server)
        job = submit(c, src, {}).json()
        wait_for(c, job["id"], until=("running",))
        sha = job["input"]["sha256"]
        stored = server.data_dir / "blobs" / sha[:2] / sha  # uploads are stored by content
        data = bytearray(stored.read_bytes())
        data[-3] ^= 0xFF  # inside the last tensor's bytes: still a valid file, no longer the upload
        stored.chmod(0o644)
        stored.write_bytes(bytes(data))
        os.kill(pid, signal.SIGCONT)
        failed = wait_for(c, job["id"])
        assert failed["status"] == "failed"
        assert failed["error"]["type"].endswith("/input-changed")
        job_dir = server.data_dir / "jobs" / job["id"]
        assert not job_dir.exists() or list(job_dir.iterdir()) == []  # no report, no artifact
        assert c.get("/v1/models").json()["items"] == []  # a damaged upload never becomes a model
