"""The distributed mode against the embedded mode, on this machine, from one run.

    python bench/distributed.py [--jobs 40] [--clients 8] [--size-gib 1] [--skip-large]

1. Small jobs (a 3-layer state dict, multipart with ``?wait=``): throughput and p50/p95 latency with 1, 2
   and 4 worker processes, in the embedded mode (``LAYERFREEZE_WORKERS=N``) and the distributed mode
   (2 API replicas, N ``layerfreeze worker`` processes of one freeze process each, Redis, PostgreSQL).
2. A model of --size-gib: upload (``POST /v1/models``), a freeze job on the stored model (``?wait=``) and
   the download of its artifact, in both modes, side by side.

Everything runs as real processes on 127.0.0.1 (testing.service, testing.distributed, testing.redis,
testing.postgres) and is stopped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test kit (testing/), also when run as a file

import httpx  # noqa: E402

from testing import child_env  # noqa: E402
from testing.distributed import distributed_service  # noqa: E402
from testing.postgres import PostgresCluster  # noqa: E402
from testing.service import Service  # noqa: E402

SMALL_SPEC = json.dumps({"rules": [{"action": "freeze", "names": ["0"]}]})


def small_model() -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
               .state_dict(), buf)
    return buf.getvalue()


@contextlib.contextmanager
def service(mode: str, root: Path, pg: PostgresCluster, workers: int, **settings: Any) -> Iterator[Any]:
    env = child_env()  # INFO logs: testing.distributed sees a worker ready in them
    if mode == "embedded":
        with Service(root / "data", {"workers": str(workers), **settings}, env=env,
                     log=root / "server.log") as svc:
            yield svc
        return
    url = pg.create_database("bench")
    try:
        with distributed_service(root, url, env, replicas=2, worker_hosts=workers, workers="1",
                                 **settings) as cluster:
            yield cluster
    finally:
        pg.drop_database(url)


def small_jobs(url: str, model: bytes, jobs: int, clients: int) -> dict[str, float]:
    def one(_: int) -> float:
        with httpx.Client(base_url=url, timeout=120) as c:  # a connection each: the proxy spreads them
            t = time.perf_counter()
            r = c.post("/v1/jobs", params={"wait": 60}, data={"spec": SMALL_SPEC},
                       files={"model": ("small.pt", model)})
            if r.status_code != 200 or r.json()["status"] != "succeeded":
                raise RuntimeError(f"job not done: {r.status_code} {r.text[:300]}")
            return time.perf_counter() - t

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(clients)))  # warm-up: imports, connections, the first reads
        started = time.perf_counter()
        latencies = sorted(pool.map(one, range(jobs)))
        elapsed = time.perf_counter() - started
    return {"jobs_per_s": jobs / elapsed, "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]}


def build_large(path: Path, size_gib: float) -> None:
    import torch

    layers = max(1, round(size_gib * 1024 / 64))  # 4096 x 4096 float32 = 64 MiB each
    torch.save({f"layer{i}.weight": torch.zeros(4096, 4096) for i in range(layers)}, path)


def large_job(url: str, path: Path) -> dict[str, float]:
    spec = {"rules": [{"action": "freeze", "regex": ["layer[0-4]\\..*"]}]}
    with httpx.Client(base_url=url, timeout=600) as c:
        t = time.perf_counter()
        with open(path, "rb") as f:
            r = c.post("/v1/models", files={"file": (path.name, f)})
        upload = time.perf_counter() - t
        if r.status_code not in (200, 201):
            raise RuntimeError(f"upload failed: {r.status_code} {r.text[:300]}")
        t = time.perf_counter()
        r = c.post("/v1/jobs", params={"wait": 60}, json={"model": r.json()["id"], "spec": spec})
        job = time.perf_counter() - t
        body = r.json()
        if body.get("status") != "succeeded":
            raise RuntimeError(f"job not done: {r.status_code} {r.text[:300]}")
        t = time.perf_counter()
        digest = hashlib.sha256()
        with c.stream("GET", body["links"]["artifact"]) as resp:
            for chunk in resp.iter_bytes(1 << 20):
                digest.update(chunk)
        download = time.perf_counter() - t
        if digest.hexdigest() != c.get(f"/v1/jobs/{body['id']}").json()["output"]["sha256"]:
            raise RuntimeError("the artifact does not match its digest")
    gib = path.stat().st_size / 1024**3
    return {"upload_s": upload, "job_s": job, "download_s": download, "download_gib_s": gib / download}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()
    model = small_model()
    print(f"machine: {os.cpu_count()} cores; {args.jobs} small jobs from {args.clients} clients after a "
          "warm-up; distributed = 2 API replicas + N workers (1 freeze process each), Redis, PostgreSQL")
    with tempfile.TemporaryDirectory(prefix="lf-bench-dist-") as tmp, PostgresCluster() as pg:
        root = Path(tmp)
        print(f"\n{'mode':<12} {'workers':>7} {'jobs/s':>8} {'p50 ms':>8} {'p95 ms':>8}")
        for workers in (1, 2, 4):
            for mode in ("embedded", "distributed"):
                with service(mode, root / f"{mode}{workers}", pg, workers) as svc:
                    r = small_jobs(svc.url, model, args.jobs, args.clients)
                print(f"{mode:<12} {workers:>7} {r['jobs_per_s']:>8.1f} {r['p50_ms']:>8.0f} "
                      f"{r['p95_ms']:>8.0f}", flush=True)
        if args.skip_large:
            return
        big = root / "large.pt"
        build_large(big, args.size_gib)
        size = big.stat().st_size / 1024**3
        print(f"\n{size:.2f} GiB model: upload, freeze job on the stored model (?wait=), download")
        print(f"{'mode':<12} {'upload s':>9} {'job s':>7} {'download s':>11} {'GiB/s':>6}")
        for mode in ("embedded", "distributed"):
            with service(mode, root / f"large-{mode}", pg, 2, job_timeout_s="300") as svc:
                r = large_job(svc.url, big)
            print(f"{mode:<12} {r['upload_s']:>9.2f} {r['job_s']:>7.2f} {r['download_s']:>11.2f} "
                  f"{r['download_gib_s']:>6.2f}", flush=True)
    print("""
What this machine can show: the distributed mode's cost per job (a broker round trip, database polls of
?wait=, PostgreSQL instead of SQLite) and that it adds no copy of the bytes (the large rows). What it
cannot show is scaling: every process shares the same 2 cores, so 4 workers cannot beat 2, and the
distributed rows also run Redis, PostgreSQL, a proxy and twice the API processes on those cores. On
separate hosts, throughput grows with worker hosts until the database or the shared volume saturates.""")


if __name__ == "__main__":
    main()
