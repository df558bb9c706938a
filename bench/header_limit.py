"""What the request-head limits cost: the same service under three HTTP protocol choices, side by side.

    python bench/header_limit.py [--size-mib 256] [--rounds 6]

1. ``httptools``: uvicorn's httptools protocol as it is (no head size limit, no head timeout);
2. ``guarded``: the same protocol wrapped by ``layerfreeze.transport`` (what ``layerfreeze serve`` runs:
   head size 431, head timeout, connection cap);
3. ``h11``: uvicorn's h11 protocol with ``h11_max_incomplete_event_size`` (its own head limit, answered
   with a 400).

For each: upload and download throughput of a ``--size-mib`` file (rounds interleaved across the three
servers in rotating order, median kept, so a noisy machine hurts each alike), small-request rate
(``GET /healthz`` on one keep-alive connection), and how long refusing a 16 MiB header takes. Ratios are
against ``httptools``. Uploads are fsynced before the answer, so the disk bounds them.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_throughput import MiB, download, upload, wait_done, write_safetensors  # noqa: E402

CHOICES = ("httptools", "guarded", "h11")
HEAD_LIMIT = 128 * 1024

_SERVER = """
import sys, uvicorn
from layerfreeze.api.app import create_app
from layerfreeze.settings import get_settings
from layerfreeze.transport import guarded_protocol
choice, port = sys.argv[1], int(sys.argv[2])
settings = get_settings(port=port)
http = {"httptools": "httptools", "h11": "h11",
        "guarded": guarded_protocol(settings.transport_limits())}[choice]
uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, loop="uvloop", http=http,
               log_config=None, access_log=False, h11_max_incomplete_event_size=HEAD_LIMIT)).run()
""".replace("HEAD_LIMIT", str(HEAD_LIMIT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(choice: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "service"), "LAYERFREEZE_DATA_DIR": str(data_dir),
           "LAYERFREEZE_LOG_LEVEL": "WARNING", "LAYERFREEZE_WORKERS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, choice, str(port)], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{choice} server did not become ready")


def small_requests(port: int, seconds: float = 2.0) -> float:
    """``GET /healthz`` per second on one keep-alive connection."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            c.get("/healthz").raise_for_status()
            n += 1
    return n / (time.perf_counter() - t0)


def refuse_big_header(port: int, mib: int = 16) -> tuple[str, float]:
    piece = b"a" * MiB
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            for _ in range(mib):
                s.sendall(piece)
            s.sendall(b"\r\n\r\n")
        except OSError:
            pass
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
    return (data[9:12].decode() if data.startswith(b"HTTP/1.1") else "closed"), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    samples: dict[str, dict[str, list[float]]] = {c: {"upload_MBps": [], "download_MBps": [],
                                                      "healthz_per_s": []} for c in CHOICES}
    results: dict[str, dict[str, float | str]] = {c: {} for c in CHOICES}
    with tempfile.TemporaryDirectory(prefix="lf-bench-head-") as tmp_s:
        tmp = Path(tmp_s)
        big = tmp / "big.safetensors"
        write_safetensors(big, args.size_mib * MiB)
        size = big.stat().st_size
        servers = {c: start(c, tmp / c) for c in CHOICES}
        try:
            for round_no in range(args.rounds):
                # rotate the order: a transfer slows the next one (disk writeback), so each goes first alike
                order = CHOICES[round_no % 3:] + CHOICES[:round_no % 3]
                for choice in order:
                    port = servers[choice][1]
                    up_t, job = upload(port, big)
                    job = wait_done(f"http://127.0.0.1:{port}", job["id"])
                    down_t, got = download(port, job["links"]["artifact"])
                    httpx.delete(f"http://127.0.0.1:{port}/v1/jobs/{job['id']}", timeout=60)
                    samples[choice]["upload_MBps"].append(size / up_t / 1e6)
                    samples[choice]["download_MBps"].append(got / down_t / 1e6)
                    samples[choice]["healthz_per_s"].append(small_requests(port, 1.0))
            for choice, (_proc, port) in servers.items():
                for key, values in samples[choice].items():
                    results[choice][key] = round(statistics.median(values), 1)
                status, seconds = refuse_big_header(port)
                results[choice]["16MiB_header"] = f"{status} in {seconds:.2f}s"
        finally:
            for proc, _port in servers.values():
                proc.terminate()
                proc.wait(30)
    base = results["httptools"]
    for choice in CHOICES[1:]:
        for key in ("upload_MBps", "download_MBps", "healthz_per_s"):
            results[choice][key.split("_")[0] + "_ratio"] = round(float(results[choice][key]) /
                                                                   float(base[key]), 3)
    keys = list(dict.fromkeys(k for r in results.values() for k in r))
    print(f"{'':14s}" + "".join(f"{c:>18s}" for c in CHOICES))
    for key in keys:
        print(f"{key:14s}" + "".join(f"{results[c].get(key, '')!s:>18s}" for c in CHOICES))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
