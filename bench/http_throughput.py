"""HTTP benchmark of the layerfreeze service, against the loopback ceiling of this machine.

    python bench/http_throughput.py [--size-mib 1024] [--jobs 200] [--clients 8] [--json out.json]

From one run:
1. the raw loopback ceiling: one process ``sendfile``s the test file over a TCP socket to another that
   discards it; and, since an accepted upload is on disk (fsynced) before the 202, the disk's own
   ceiling: the same bytes copied to a file on the same file system and fsynced;
2. upload throughput: the same bytes as the ``model`` part of ``POST /v1/jobs`` (the service parses the
   multipart stream, hashes and writes it, fsyncs it and answers 202);
3. download throughput: ``GET /v1/jobs/{id}/artifact`` of that job's output;
4. small jobs: one client alone, then ``clients`` concurrent clients, each submitting a small checkpoint
   with ``?wait=`` and then fetching its report; round-trip p50/p95 and jobs/s.

The bulk transfers use a bare socket client (``sendfile`` up, ``recv_into`` down) so the figures measure
the service, not an HTTP client library. Targets: upload and download >= 60% of the ceiling; small-job
p50 <= 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test kit (testing/), also when run as a file

from testing.files import MiB, write_safetensors  # noqa: E402
from testing.service import Service, wait_for  # noqa: E402

# -- test files ------------------------------------------------------------------------------------


def write_small(path: Path) -> None:
    try:
        import torch
        from torch import nn
    except ImportError:
        write_safetensors(path, 64 * 1024)
        return
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    torch.save(model.state_dict(), path)


# -- raw loopback ceiling --------------------------------------------------------------------------


def _sink(port_q: multiprocessing.Queue, total: int) -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port_q.put(srv.getsockname()[1])
        conn, _ = srv.accept()
        buf = bytearray(4 * MiB)
        view = memoryview(buf)
        got = 0
        with conn:
            while got < total:
                n = conn.recv_into(view)
                if not n:
                    break
                got += n
            conn.sendall(b"k")


def loopback_ceiling(path: Path) -> float:
    size = path.stat().st_size
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_sink, args=(q, size))
    proc.start()
    port = q.get(timeout=30)
    with socket.create_connection(("127.0.0.1", port)) as s, open(path, "rb") as f:
        t0 = time.perf_counter()
        s.sendfile(f)
        s.recv(1)
        elapsed = time.perf_counter() - t0
    proc.join(timeout=30)
    return size / elapsed


def disk_ceiling(path: Path, directory: Path) -> float:
    """Copy ``path`` into ``directory`` (the service's file system) and fsync it: the durable-write bound."""
    directory.mkdir(parents=True, exist_ok=True)
    dst = directory / "disk-ceiling.tmp"
    buf = memoryview(bytearray(4 * MiB))
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as src, open(dst, "wb", buffering=0) as out:
        while n := src.readinto(buf):
            out.write(buf[:n])
        os.fsync(out.fileno())
    elapsed = time.perf_counter() - t0
    dst.unlink()
    return path.stat().st_size / elapsed


# -- bare HTTP over a socket for the bulk transfers -----------------------------------------------


def _read_response(s: socket.socket, discard_body: bool) -> tuple[int, dict[str, str], bytes, int]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response headers")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    got = len(rest)
    body = rest if not discard_body else b""
    view = memoryview(bytearray(4 * MiB))
    while got < length:
        if discard_body:
            n = s.recv_into(view)
        else:
            chunk = s.recv(min(4 * MiB, length - got))
            body += chunk
            n = len(chunk)
        if not n:
            raise ConnectionError("connection closed mid-body")
        got += n
    return status, headers, body, got


def upload(port: int, path: Path, spec: str = "{}") -> tuple[float, dict]:
    boundary = "----layerfreezebench"
    pre = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n{spec}\r\n"
           f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"; filename=\"{path.name}\"\r\n"
           "Content-Type: application/octet-stream\r\n\r\n").encode()
    post = f"\r\n--{boundary}--\r\n".encode()
    length = len(pre) + path.stat().st_size + len(post)
    head = (f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {length}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port)) as s, open(path, "rb") as f:
        t0 = time.perf_counter()
        s.sendall(head + pre)
        s.sendfile(f)
        s.sendall(post)
        status, _h, body, _n = _read_response(s, discard_body=False)
        elapsed = time.perf_counter() - t0
    if status != 202:
        raise RuntimeError(f"upload answered {status}: {body[:500]!r}")
    return elapsed, json.loads(body)


def download(port: int, url: str) -> tuple[float, int]:
    with socket.create_connection(("127.0.0.1", port)) as s:
        t0 = time.perf_counter()
        s.sendall(f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        status, _h, _b, got = _read_response(s, discard_body=True)
        elapsed = time.perf_counter() - t0
    if status != 200:
        raise RuntimeError(f"download answered {status}")
    return elapsed, got


# -- small jobs -------------------------------------------------------------------------------------


async def small_jobs(base: str, path: Path, jobs: int, clients: int) -> tuple[list[float], float]:
    data = path.read_bytes()
    spec = json.dumps({"rules": [{"action": "freeze", "names": ["0"]}]})
    latencies: list[float] = []
    counter = iter(range(jobs))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            for _ in counter:
                t0 = time.perf_counter()
                r = await c.post("/v1/jobs", params={"wait": 30}, data={"spec": spec},
                                 files={"model": (path.name, data)})
                if r.status_code != 200:
                    raise RuntimeError(f"small job answered {r.status_code}: {r.text[:300]}")
                rep = await c.get(r.json()["links"]["report"])
                rep.raise_for_status()
                latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, time.perf_counter() - t0


# -- driver -----------------------------------------------------------------------------------------


def wait_done(base: str, job_id: str, timeout: float = 600) -> dict:
    with httpx.Client(base_url=base, timeout=30) as client:
        return wait_for(client, job_id, timeout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024, help="bulk file size (default 1024)")
    ap.add_argument("--jobs", type=int, default=200, help="small jobs to run (default 200)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent small-job clients (default 8)")
    ap.add_argument("--workers", type=int, default=2, help="service worker processes (default 2)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="lf-bench-") as tmp_s:
        tmp = Path(tmp_s)
        big, small = tmp / "big.safetensors", tmp / "small.pt"
        write_safetensors(big, args.size_mib * MiB)
        write_small(small)
        size = big.stat().st_size

        ceiling = max(loopback_ceiling(big) for _ in range(2))
        disk = disk_ceiling(big, tmp / "disk")
        settings = {"workers": str(args.workers), "queue_max": "1000",
                    "log_level": os.environ.get("BENCH_LOG_LEVEL", "WARNING")}
        with Service(tmp / "data", settings, port=int(os.environ.get("BENCH_PORT", "0")) or None) as server:
            port, base = server.port, server.url
            up_t, job = upload(port, big)
            job = wait_done(base, job["id"])
            if job["status"] != "succeeded":
                raise RuntimeError(f"bulk job failed: {job['error']}")
            down_t, got = download(port, job["links"]["artifact"])
            solo, _ = asyncio.run(small_jobs(base, small, max(10, args.jobs // 4), 1))
            latencies, wall = asyncio.run(small_jobs(base, small, args.jobs, args.clients))

    lat = sorted(latencies)
    solo.sort()
    results = {
        "size_bytes": size,
        "loopback_MBps": round(ceiling / 1e6, 1),
        "upload_MBps": round(size / up_t / 1e6, 1),
        "upload_ratio": round(size / up_t / ceiling, 3),
        "disk_write_fsync_MBps": round(disk / 1e6, 1),
        "upload_ratio_to_disk": round(size / up_t / disk, 3),
        "download_MBps": round(got / down_t / 1e6, 1),
        "download_ratio": round(got / down_t / ceiling, 3),
        "small_1client_p50_ms": round(statistics.median(solo) * 1000, 2),
        "small_1client_p95_ms": round(solo[max(0, int(len(solo) * 0.95) - 1)] * 1000, 2),
        "small_jobs": len(lat),
        "small_clients": args.clients,
        "small_p50_ms": round(statistics.median(lat) * 1000, 2),
        "small_p95_ms": round(lat[max(0, int(len(lat) * 0.95) - 1)] * 1000, 2),
        "small_jobs_per_s": round(len(lat) / wall, 1),
    }
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
