"""Downloads behind nginx: a whole stored file sent by nginx (X-Accel-Redirect, sendfile) against the
same file streamed by the service through nginx, and by the service alone.

    python bench/proxy_downloads.py [--size-mib 1024] [--repeat 3]

One model directory (a small safetensors file and a large ``vocab.txt`` that no freeze changes) is
uploaded to two services, one with ``accel_redirect`` set and one without, each behind its own nginx
made from deploy/nginx/layerfreeze.conf.template; a job freezes it; then ``curl`` fetches the output's
``vocab.txt`` into /dev/null, ``repeat`` times each way (the best run is kept). Printed per way: MB/s and
the CPU seconds per GiB that the service process and nginx spent on it (from /proc: user + system), so
that what the proxy takes off the API replicas is seen beside the speed. Needs nginx and curl.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test kit (testing/), also when run as a file

from testing import child_env  # noqa: E402
from testing.files import MiB, write_safetensors  # noqa: E402
from testing.nginx import Nginx  # noqa: E402
from testing.service import Service  # noqa: E402

ACCEL = "/_layerfreeze/data/"
SPEC = {"rules": [{"action": "freeze", "names": ["layers.0"]}]}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes and their threads, from /proc."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def nginx_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [master, *map(int, children)]


def make_directory(root: Path, size: int) -> Path:
    directory = root / "model"
    directory.mkdir()
    write_safetensors(directory / "model.safetensors", 4 * MiB, tensor_bytes=MiB)
    (directory / "config.json").write_text('{"model_type": "bert"}\n')
    line = b"".join(b"token%07d\n" % i for i in range(MiB // 13 + 1))[:MiB]
    with open(directory / "vocab.txt", "wb") as f:
        for _ in range(size // MiB):
            f.write(line)
    return directory


def upload_and_freeze(url: str, directory: Path) -> str:
    with httpx.Client(base_url=url, timeout=600) as client:
        handles = [open(f, "rb") for f in sorted(directory.iterdir())]  # noqa: SIM115
        try:
            r = client.post("/v1/models", files=[("file", (Path(h.name).name, h, "application/octet-stream"))
                                                 for h in handles])
        finally:
            for h in handles:
                h.close()
        r.raise_for_status()
        r = client.post("/v1/jobs?wait=60", json={"model": r.json()["id"], "spec": SPEC})
        r.raise_for_status()
        job = r.json()
        assert job["status"] == "succeeded", job
        return str(job["id"])


def fetch(url: str) -> tuple[float, int]:
    """Seconds and bytes of one download by curl into /dev/null."""
    out = subprocess.run(["curl", "--silent", "--fail", "--output", "/dev/null", "--write-out",
                          "%{time_total} %{size_download}", url], capture_output=True, text=True,
                         timeout=600, check=True).stdout.split()
    return float(out[0]), int(out[1])


def measure(url: str, api_pid: int, proxy: Nginx | None, repeat: int) -> tuple[float, float, float]:
    """Best MB/s; the service's and nginx's CPU seconds per GiB over all runs."""
    proxy_pids = nginx_pids(proxy.proc.pid) if proxy is not None and proxy.proc is not None else []
    api0, ngx0 = cpu_seconds([api_pid]), cpu_seconds(proxy_pids)
    best, total = 0.0, 0
    for _ in range(repeat):
        seconds, size = fetch(url)
        best = max(best, size / seconds / 1e6)
        total += size
    gib = total / 1024**3
    return best, (cpu_seconds([api_pid]) - api0) / gib, (cpu_seconds(proxy_pids) - ngx0) / gib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="layerfreeze-proxy-bench-") as tmp:
        directory = make_directory(Path(tmp), args.size_mib * MiB)
        for accel in (ACCEL, ""):
            data = Path(tmp) / ("accel" if accel else "stream")
            with Service(data / "data", {"workers": "1", "accel_redirect": accel}, env=child_env(),
                         log=data / "server.log") as svc, \
                    Nginx(f"127.0.0.1:{svc.port}", svc.data_dir, ACCEL) as proxy:
                assert svc.proc is not None
                started = time.monotonic()
                job = upload_and_freeze(proxy.url, directory)
                print(f"uploaded and frozen through nginx in {time.monotonic() - started:.1f} s",
                      file=sys.stderr)
                path = f"/v1/jobs/{job}/files/vocab.txt"
                if accel:
                    rows.append(("nginx sendfile (X-Accel-Redirect)",
                                 *measure(proxy.url + path, svc.proc.pid, proxy, args.repeat)))
                else:
                    rows.append(("the service streams, through nginx",
                                 *measure(proxy.url + path, svc.proc.pid, proxy, args.repeat)))
                    rows.append(("the service streams, no proxy",
                                 *measure(svc.url + path, svc.proc.pid, None, args.repeat)))
    print(f"\nA {args.size_mib} MiB stored file, best of {args.repeat} downloads by curl on loopback:\n")
    print("| way | MB/s | service CPU s/GiB | nginx CPU s/GiB |")
    print("| --- | --- | --- | --- |")
    for name, speed, api_cpu, ngx_cpu in rows:
        print(f"| {name} | {speed:,.0f} | {api_cpu:.2f} | {ngx_cpu:.2f} |")


if __name__ == "__main__":
    main()
