"""Faults against a live service: kill -9 of a worker and of the server during an upload, a job and a
download; a full disk (a size-limited tmpfs data dir); a corrupted SQLite file at start-up.

After each: every job that had finished is still served with the same sha256 (the ledger), nothing
half-written is served, and the service comes back by itself or says clearly why it cannot.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from stress.server import Service
from testing.service import wait_for


@dataclass(slots=True)
class Result:
    case: str
    ok: bool
    seconds: float
    detail: str


def state_dict_bytes(mib: int, seed: int = 0) -> bytes:
    import torch

    torch.manual_seed(seed)
    n = mib * (1 << 20) // 4
    sd = {
        "big.weight": torch.rand(n // 1024, 1024),
        "head.weight": torch.rand(4, 4),
        "head.bias": torch.rand(4),
    }
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


class Ledger:
    """What the service has finished, as seen by a client at the time: job id -> artifact sha256."""

    def __init__(self) -> None:
        self.done: dict[str, str] = {}

    def submit(self, c: httpx.Client, data: bytes, spec: str = "{}", wait: int = 60) -> httpx.Response:
        """Submit and wait, retrying 429/503 after Retry-After as the contract asks clients to (bounded)."""
        for _ in range(10):
            r = c.post(
                "/v1/jobs", params={"wait": wait}, data={"spec": spec}, files={"model": ("m.pt", data)}
            )
            if r.status_code not in (429, 503) or "retry-after" not in r.headers:
                break
            time.sleep(min(float(r.headers["retry-after"]), 5.0))
        if r.status_code == 200 and r.json()["status"] == "succeeded":
            job = r.json()
            self.done[job["id"]] = hashlib.sha256(c.get(job["links"]["artifact"]).content).hexdigest()
        return r

    def verify(self, c: httpx.Client) -> list[str]:
        """Every finished job: still succeeded, same artifact bytes, ETag matching its content."""
        problems = []
        for job_id, sha in self.done.items():
            job = c.get(f"/v1/jobs/{job_id}")
            if job.status_code != 200 or job.json()["status"] != "succeeded":
                problems.append(f"{job_id}: {job.status_code} {job.text[:100]}")
                continue
            art = c.get(f"/v1/jobs/{job_id}/artifact")
            got = hashlib.sha256(art.content).hexdigest()
            if got != sha or art.headers.get("etag", "").strip('"') != sha:
                problems.append(
                    f"{job_id}: artifact sha {got[:12]} / etag {art.headers.get('etag')} != {sha[:12]}"
                )
        return problems


def _served_consistently(c: httpx.Client) -> list[str]:
    """Nothing half-written is served: every job the API calls succeeded serves bytes matching its ETag;
    every other job serves no artifact."""
    problems = []
    for job in c.get("/v1/jobs", params={"limit": 100}).json()["items"]:
        art = c.get(f"/v1/jobs/{job['id']}/artifact")
        if job["status"] == "succeeded" and not job["dry_run"]:
            if art.status_code != 200 or hashlib.sha256(art.content).hexdigest() != art.headers.get(
                "etag", ""
            ).strip('"'):
                problems.append(f"{job['id']}: artifact {art.status_code} does not match its ETag")
        elif art.status_code == 200:
            problems.append(f"{job['id']}: {job['status']} job serves an artifact")
    return problems


def _check(name: str, t0: float, problems: list[str], detail: str) -> Result:
    return Result(name, not problems, time.perf_counter() - t0, "; ".join(problems) or detail)


def kill_worker_mid_job(svc: Service, ledger: Ledger, big: bytes, small: bytes) -> Result:
    t0 = time.perf_counter()
    with httpx.Client(base_url=svc.url, timeout=120) as c:
        job = c.post("/v1/jobs", files={"model": ("big.pt", big)}, data={"spec": "{}"}).json()
        wait_for(c, job["id"], until={"running", "succeeded", "failed"})
        victims = svc.worker_pids()
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        final = wait_for(c, job["id"], until={"succeeded", "failed"})
        problems = [] if victims else ["no worker process found"]
        if final["status"] == "failed" and not (final.get("error") or {}).get("detail"):
            problems.append("the killed job failed without a reason")
        after = ledger.submit(c, small)
        if after.status_code != 200:
            problems.append(f"next job after the kill: {after.status_code}")
        problems += ledger.verify(c) + _served_consistently(c)
        reason = (final.get("error") or {}).get("detail", "")
    return _check("kill -9 worker mid-job", t0, problems, f"job {final['status']}: {reason[:80]}")


def kill_idle_workers(svc: Service, ledger: Ledger, small: bytes) -> Result:
    """Workers that die while idle are replaced without waiting for a job: /readyz is back by itself."""
    t0 = time.perf_counter()
    with httpx.Client(base_url=svc.url, timeout=60) as c:
        ledger.submit(c, small)  # every slot has had work; now they idle
        for pid in svc.worker_pids():
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        deadline = time.monotonic() + 30
        status = c.get("/readyz").status_code
        while status != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            status = c.get("/readyz").status_code
        problems = (
            [] if status == 200 else [f"/readyz still {status} 30 s after idle workers died (no job sent)"]
        )
        waited = time.perf_counter() - t0
        after = ledger.submit(c, small)
        if after.status_code != 200:
            problems.append(f"a job after idle workers died: {after.status_code} {after.text[:90]}")
    return _check("kill -9 idle workers: ready again", t0, problems, f"ready after {waited:.1f}s")


def kill_worker_mid_upload_and_download(svc: Service, ledger: Ledger, big: bytes, small: bytes) -> Result:
    """Workers are not involved in transfers: killing them then must not disturb either."""
    t0 = time.perf_counter()
    problems: list[str] = []
    with httpx.Client(base_url=svc.url, timeout=120) as c:
        big_id = next((j for j in ledger.done), None)
        with c.stream("GET", f"/v1/jobs/{big_id}/artifact") as r:
            got = hashlib.sha256()
            for i, chunk in enumerate(r.iter_bytes(1 << 16)):
                if i == 2:
                    for pid in svc.worker_pids():
                        os.kill(pid, signal.SIGKILL)
                got.update(chunk)
        if got.hexdigest() != ledger.done[big_id]:
            problems.append("download corrupted when workers died")
        after = ledger.submit(c, big)
        if after.status_code != 200:
            problems.append(f"upload after worker kill: {after.status_code} {after.text[:120]}")
        problems += ledger.verify(c)
    return _check("kill -9 workers mid-download", t0, problems, "download intact, next upload fine")


def kill_server(svc: Service, ledger: Ledger, big: bytes, small: bytes, during: str) -> Result:
    t0 = time.perf_counter()
    problems: list[str] = []
    detail = ""
    with httpx.Client(base_url=svc.url, timeout=120) as c:
        if during == "upload":
            body_len = len(big) + 1000
            s = socket.create_connection(("127.0.0.1", svc.port))
            head = (
                f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b0\r\n"
                f'Content-Length: {body_len}\r\n\r\n--b0\r\nContent-Disposition: form-data; name="model"; '
                f'filename="half.pt"\r\n\r\n'
            ).encode()
            s.sendall(head + big[: len(big) // 2])
            time.sleep(0.3)
            svc.kill()
            s.close()
        elif during == "job":
            job = c.post("/v1/jobs", files={"model": ("big.pt", big)}, data={"spec": "{}"}).json()
            wait_for(c, job["id"], until={"running", "succeeded", "failed"})
            svc.kill()
        elif during == "download":
            some = next(iter(ledger.done))
            with contextlib.suppress(httpx.HTTPError), c.stream("GET", f"/v1/jobs/{some}/artifact") as r:
                for i, _chunk in enumerate(r.iter_bytes(1 << 16)):
                    if i == 2:
                        svc.kill()
    left_tmp = [p.name for p in (svc.data_dir / "tmp").iterdir()] if (svc.data_dir / "tmp").exists() else []
    svc.start()  # same data dir, same port: a restart
    with httpx.Client(base_url=svc.url, timeout=120) as c:
        jobs = c.get("/v1/jobs", params={"limit": 100}).json()["items"]
        stuck = [j["id"] for j in jobs if j["status"] in ("running",)]
        if during == "job":
            state = c.get(f"/v1/jobs/{job['id']}").json()
            detail = (
                f"interrupted job -> {state['status']} {(state.get('error') or {}).get('detail', '')[:60]}"
            )
            if state["status"] == "queued":  # re-run is allowed: it must then finish correctly
                state = wait_for(c, job["id"], until={"succeeded", "failed"})
            if state["status"] == "running":
                problems.append("interrupted job still 'running' after restart")
        if during == "upload":
            if any(j["input"]["filename"] == "half.pt" for j in jobs):
                problems.append("a half upload became a job")
            now_tmp = list((svc.data_dir / "tmp").iterdir())
            detail = f"tmp files at crash: {len(left_tmp)}, after restart: {len(now_tmp)}"
            if now_tmp:
                problems.append("partial upload left in tmp after restart")
        if during == "download":
            detail = "artifacts unchanged after restart"
        problems += [f"job {j} still running after restart" for j in stuck if during != "job"]
        if ledger.submit(c, small).status_code != 200:
            problems.append("no job succeeds after restart")
        problems += ledger.verify(c) + _served_consistently(c)
    return _check(f"kill -9 server mid-{during}", t0, problems, detail)


def full_disk(root: Path, small: bytes) -> Result:
    """A 48 MiB tmpfs as data dir: uploads and outputs that do not fit fail cleanly, nothing finished is
    lost, and once space is freed the service works again by itself."""
    t0 = time.perf_counter()
    mnt = root / "tmpfs"
    mnt.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        == 0
    )
    if not mounted:
        return Result("full disk (tmpfs)", True, 0.0, "SKIPPED: cannot mount a tmpfs here")
    problems: list[str] = []
    detail = ""
    svc = Service(mnt / "data", log=root / "fulldisk.log")
    try:
        svc.start()
        ledger = Ledger()
        big = state_dict_bytes(18, seed=3)
        statuses = []
        with httpx.Client(base_url=svc.url, timeout=120) as c:
            ledger.submit(c, small)
            for _ in range(3):  # 18 MiB in + 18 MiB out per job: the second cannot fit
                try:
                    r = ledger.submit(c, big)
                except httpx.HTTPError as exc:  # a closed connection is a clean answer too
                    statuses.append(f"closed ({type(exc).__name__})")
                    continue
                body = r.json() if r.headers.get("content-type", "").endswith("json") else {}
                statuses.append(f"{r.status_code}:{body.get('status') or body.get('title', '')}")
                if r.status_code >= 500 and r.status_code not in (503, 507):
                    problems.append(f"{r.status_code} on a full disk: {body.get('detail', r.text)[:100]}")
            detail = "answers: " + ", ".join(statuses)
            if c.get("/healthz").status_code != 200:
                problems.append("service down on a full disk")
            stray = list((svc.data_dir / "tmp").iterdir())
            if stray:
                problems.append(f"{len(stray)} partial file(s) left in tmp on a full disk")
            problems += ledger.verify(c) + _served_consistently(c)
            # free space: delete every failed job and the big successes, then it must work again
            for job in c.get("/v1/jobs", params={"limit": 100}).json()["items"]:
                if job["input"]["bytes"] > 1 << 20:
                    c.delete(f"/v1/jobs/{job['id']}")
                    ledger.done.pop(job["id"], None)
            deadline = time.monotonic() + 20
            while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.5)
            r = ledger.submit(c, big)
            if r.status_code != 200:
                problems.append(f"after freeing space: {r.status_code} {r.text[:100]}")
            problems += ledger.verify(c)
    finally:
        svc.stop()
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    return _check("full disk (48 MiB tmpfs)", t0, problems, detail)


def corrupt_database(root: Path, small: bytes) -> Result:
    """Garbage over the SQLite file between runs: start-up must either recover or exit saying why; the
    artifacts on disk are untouched."""
    t0 = time.perf_counter()
    svc = Service(root / "corrupt" / "data", {"database_url": ""}, log=root / "corrupt.log")  # the file
    problems: list[str] = []
    svc.start()
    ledger = Ledger()
    with httpx.Client(base_url=svc.url, timeout=60) as c:
        for _ in range(3):
            ledger.submit(c, small)
    svc.stop()
    files = {
        p: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (svc.data_dir / "jobs").rglob("*")
        if p.is_file()
    }
    db = svc.data_dir / "jobs.sqlite3"
    raw = bytearray(db.read_bytes())
    raw[100:4096] = os.urandom(min(3996, max(len(raw) - 100, 0)))  # header kept, schema page destroyed
    db.write_bytes(bytes(raw))
    for side in ("jobs.sqlite3-wal", "jobs.sqlite3-shm"):
        (svc.data_dir / side).unlink(missing_ok=True)
    try:
        svc.start(timeout=30)
        with httpx.Client(base_url=svc.url, timeout=60) as c:
            r = ledger.submit(c, small)
            detail = (
                f"started; new job {r.status_code}; finished jobs still served: {len(ledger.verify(c)) == 0}"
            )
            if r.status_code != 200:
                problems.append(f"started but a job fails: {r.status_code}")
    except (RuntimeError, TimeoutError):
        log = svc.log_tail(20000)
        said = re.findall(r"(?:Store|Database)Error: ([^\\\n]{0,160})", log)
        detail = "refused to start, saying: " + (said[-1] if said else log.strip()[-160:])
        if not any(w in log.lower() for w in ("sqlite", "database", "corrupt", "malformed")):
            problems.append("exited without saying the database is the problem")
    finally:
        svc.stop()
    changed = [
        str(p)
        for p, sha in files.items()
        if not p.exists() or hashlib.sha256(p.read_bytes()).hexdigest() != sha
    ]
    if changed:
        problems.append(f"job files changed or lost: {changed[:3]}")
    return _check("corrupted SQLite at start-up", t0, problems, detail)


SCENARIOS = (
    "worker mid-job",
    "workers mid-download",
    "idle workers",
    "server mid-upload",
    "server mid-job",
    "server mid-download",
    "full disk",
    "corrupt database",
)


def run(root: Path) -> dict[str, Result]:
    """Every scenario, in order, on one service (restarted as needed) and two dedicated ones."""
    small = state_dict_bytes(1)
    big = state_dict_bytes(256, seed=1)
    results: dict[str, Result] = {}
    svc = Service(root / "main" / "data", log=root / "main.log")
    svc.start()
    ledger = Ledger()
    try:
        with httpx.Client(base_url=svc.url, timeout=120) as c:
            for data in (small, big, small):
                ledger.submit(c, data)
        results["worker mid-job"] = kill_worker_mid_job(svc, ledger, big, small)
        results["workers mid-download"] = kill_worker_mid_upload_and_download(svc, ledger, big, small)
        for during in ("upload", "job", "download"):
            results[f"server mid-{during}"] = kill_server(svc, ledger, big, small, during)
        results["idle workers"] = kill_idle_workers(svc, ledger, small)
    finally:
        svc.stop()
    results["full disk"] = full_disk(root, small)
    results["corrupt database"] = corrupt_database(root, small)
    return results
