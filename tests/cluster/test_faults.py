"""The distributed mode under faults, through real processes: a job moves between replicas, a worker host
is lost mid-job, the broker restarts mid-run, an API replica dies mid-upload."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
import torch

from cluster.conftest import SLOW_SPEC, checkpoint, load_flags, submit
from testing.service import wait_for

pytestmark = pytest.mark.server
FREEZE_0 = {"rules": [{"action": "freeze", "names": ["0"]}]}


def _worker_running(cluster, job_id: str, timeout: float = 60) -> int:
    """The index of the worker that logged starting ``job_id``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i, worker in enumerate(cluster.workers):
            if job_id in worker.log_tail(20_000) and "job started" in worker.log_tail(20_000):
                return i
        time.sleep(0.05)
    raise TimeoutError(f"no worker started job {job_id}:\n{cluster.logs()}")


def test_job_submitted_on_one_replica_is_waited_on_listed_and_downloaded_on_another(
        make_cluster, tmp_path: Path) -> None:
    cluster = make_cluster(workers="1")
    a, b = cluster.apis
    src = checkpoint(tmp_path, "seq3")
    with httpx.Client(base_url=a.url, timeout=60) as ca, httpx.Client(base_url=b.url, timeout=60) as cb:
        job = submit(ca, src, FREEZE_0).json()
        done = wait_for(cb, job["id"])  # B reads what a worker on another process recorded
        assert done["status"] == "succeeded", done.get("error")
        art = cb.get(done["links"]["artifact"])
        assert art.status_code == 200
        assert hashlib.sha256(art.content).hexdigest() == done["output"]["sha256"]
        assert load_flags(art.content) == {"0.weight": False, "0.bias": False, "2.weight": True,
                                           "2.bias": True}
        # ?wait= on B for a job B submitted: answered when the worker's outcome reaches the database.
        waited = submit(cb, src, FREEZE_0, wait=30)
        assert waited.status_code == 200 and waited.json()["status"] == "succeeded"
        # Every replica lists both and counts them (gauges from the database).
        for c in (ca, cb):
            ids = [j["id"] for j in c.get("/v1/jobs").json()["items"]]
            assert ids[:2] == [waited.json()["id"], job["id"]]
            metrics = c.get("/metrics").text
            assert 'layerfreeze_jobs{status="succeeded"} 2.0' in metrics, metrics
            assert c.get("/readyz").status_code == 200


@pytest.mark.heavy
@pytest.mark.parametrize("attempts", [2, 1])
def test_worker_killed_mid_job_is_retried_or_failed_with_a_reason(
        make_cluster, slow_checkpoint: Path, attempts: int) -> None:
    # A lost worker's message comes back after the visibility timeout (20 s here); its job, left
    # running, is started again by the other worker, or failed with the reason when out of attempts.
    cluster = make_cluster(workers="1", job_timeout_s="15", broker_visibility_timeout_s="20",
                           job_attempts=str(attempts))
    with cluster.client() as c:
        job = submit(c, slow_checkpoint, SLOW_SPEC).json()
        lost = _worker_running(cluster, job["id"])
        assert wait_for(c, job["id"], until=("running",), timeout=5)["status"] == "running"
        cluster.workers[lost].kill()
        done = wait_for(c, job["id"], timeout=90)
    survivor = cluster.workers[1 - lost].log_tail(50_000)
    if attempts == 2:
        assert done["status"] == "succeeded", done.get("error")
        assert "attempt 2 starts" in survivor
        with cluster.client() as c:
            art = c.get(done["links"]["artifact"])
        assert hashlib.sha256(art.content).hexdigest() == done["output"]["sha256"]
    else:
        assert done["status"] == "failed", done
        assert done["error"]["type"].endswith("/worker-lost")
        assert "lost 1 time" in done["error"]["detail"]


@pytest.mark.heavy
def test_broker_restarted_mid_run_loses_no_job(make_cluster, tmp_path: Path, slow_checkpoint: Path) -> None:
    # Redis runs without persistence: a restart empties it. Jobs whose messages went with it (two
    # running, two waiting), and jobs submitted while it was down, are published again from the database.
    cluster = make_cluster(workers="1", job_timeout_s="15", broker_visibility_timeout_s="20")
    assert cluster.redis is not None
    src = checkpoint(tmp_path, "seq3")
    ids: list[str] = []
    with cluster.client() as c:
        slow = [submit(c, slow_checkpoint, SLOW_SPEC).json()["id"] for _ in range(4)]
        wait_for(c, slow[0], until=("running",), timeout=30)
        cluster.redis.stop()
        for _ in range(3):  # accepted while the broker is down
            r = submit(c, src, FREEZE_0)
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        time.sleep(1)
        cluster.redis.start()
        for _ in range(2):
            ids.append(submit(c, src, FREEZE_0).json()["id"])
        jobs = [wait_for(c, job_id, timeout=120) for job_id in ids]
        slow_jobs = [wait_for(c, job_id, timeout=120) for job_id in slow]
    assert [j["status"] for j in jobs + slow_jobs] == ["succeeded"] * (len(ids) + 4), cluster.logs()
    assert len({j["output"]["sha256"] for j in jobs}) == 1


def _multipart_head(boundary: str, filename: str) -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()


@pytest.mark.heavy
def test_replica_killed_mid_upload_leaves_no_model(make_cluster, tmp_path: Path) -> None:
    cluster = make_cluster(workers="1")
    a, b = cluster.apis
    src = tmp_path / "wide.pt"
    torch.save(torch.nn.Linear(2048, 4096).state_dict(), src)  # 32 MiB
    data = src.read_bytes()
    boundary = "lfboundary"
    head, tail = _multipart_head(boundary, src.name), f"\r\n--{boundary}--\r\n".encode()
    with socket.create_connection(("127.0.0.1", a.port)) as s:
        s.sendall((f"POST /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                   f"Content-Length: {len(head) + len(data) + len(tail)}\r\n\r\n").encode())
        s.sendall(head + data[: len(data) // 2])
        deadline = time.monotonic() + 10  # until the replica has written part of it to its temp file
        while time.monotonic() < deadline and not [p for p in (cluster.data_dir / "tmp").rglob("*.part")
                                                   if p.stat().st_size > 0]:
            time.sleep(0.05)
        a.kill()
    with httpx.Client(base_url=b.url, timeout=60) as cb:
        assert cb.get("/v1/models").json()["items"] == []
    assert list((cluster.data_dir / "models").iterdir()) == []
    assert [p for p in (cluster.data_dir / "blobs").rglob("*") if p.is_file()] == []
    a.start()  # back on the same host: it removes what its dead predecessor left in tmp/
    assert [p for p in (cluster.data_dir / "tmp").rglob("*") if p.is_file()] == []
    with httpx.Client(base_url=a.url, timeout=60) as ca:  # and takes the same upload whole
        r = ca.post("/v1/models", files={"file": (src.name, data)})
        assert r.status_code == 201, r.text
        assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
        assert json.loads(ca.get(f"/v1/models/{r.json()['id']}").text)["id"] == r.json()["id"]


@pytest.mark.heavy
def test_time_limit_and_a_killed_freeze_process_fail_the_job_as_in_the_embedded_mode(
        make_cluster, tmp_path: Path, slow_checkpoint: Path) -> None:
    cluster = make_cluster(workers="1", job_timeout_s="1")
    src = checkpoint(tmp_path, "seq3")
    with cluster.client() as c:
        overdue = wait_for(c, submit(c, slow_checkpoint, SLOW_SPEC).json()["id"], timeout=60)
        assert overdue["status"] == "failed" and overdue["error"]["type"].endswith("/job-time-limit")
        job = submit(c, slow_checkpoint, SLOW_SPEC).json()
        worker = cluster.workers[_worker_running(cluster, job["id"])]
        os.kill(worker.freeze_pids()[0], signal.SIGKILL)  # the freeze process, not the worker
        killed = wait_for(c, job["id"], timeout=60)
        assert killed["status"] == "failed" and killed["error"]["type"].endswith("/worker-lost")
        assert "signal 9" in killed["error"]["detail"]
        # Both workers replaced their freeze process and take jobs again.
        for _ in range(4):
            assert submit(c, src, FREEZE_0, wait=30).json()["status"] == "succeeded"
