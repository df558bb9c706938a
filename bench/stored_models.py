"""Stored models: freeze-job time whatever the model's size, disk per job, delta bytes, local CLI cost.

    python bench/stored_models.py [--jobs 15] [--big]     # --big adds an 8 GiB model (about a minute more)

Starts a real service (one worker, temporary data directory), uploads a 1 GiB torch state dict and a
1 GiB safetensors file (and with --big an 8 GiB safetensors file, sparse on the client side), then for
each runs --jobs freeze jobs on the stored model, each with another spec, and prints side by side:
the service-side job time (started_at -> finished_at, p50 and max) and the client's POST ?wait latency
(which includes the background digest of the output, one read of the model: "wait+dig");
the disk bytes each job added to the data directory; the bytes of the patch a delta client downloads
against the full artifact; and the old path (a full copy with both digests, what every job cost before)
on the same file. Then the local CLI: `layerfreeze freeze` and `inspect` (with and without --digest)
against one sha256 pass of the same file, each a fresh process, start-up included.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
LAYER = 4096  # float32 [4096, 4096] = 64 MiB


def torch_state_dict(path: Path, gib: int) -> Path:
    import torch

    layers = gib * 16
    sd = {}
    for i in range(layers):
        sd[f"layers.{i}.weight"] = torch.zeros(LAYER, LAYER)
        sd[f"layers.{i}.bias"] = torch.zeros(LAYER)
    torch.save(sd, path)
    return path


def sparse_safetensors(path: Path, gib: int) -> Path:
    """A valid safetensors file whose data region is a hole: written in milliseconds, read as zeros.
    Always 16 layers (the same header and report as the 1 GiB torch file): only the bytes grow."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    rows = LAYER * gib
    for i in range(16):
        for leaf, shape in (("weight", [rows, LAYER]), ("bias", [rows])):
            n = 4 * shape[0] * (shape[1] if len(shape) > 1 else 1)
            header[f"layers.{i}.{leaf}"] = {"dtype": "F32", "shape": shape,
                                            "data_offsets": [offset, offset + n]}
            offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def service(root: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "LAYERFREEZE_HOST": "127.0.0.1", "LAYERFREEZE_PORT": str(port),
           "LAYERFREEZE_DATA_DIR": str(root / "data"), "LAYERFREEZE_WORKERS": "1",
           "LAYERFREEZE_MAX_UPLOAD_BYTES": str(16 << 30), "LAYERFREEZE_JOB_TIMEOUT_S": "600",
           "LAYERFREEZE_LOG_LEVEL": "WARNING",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "service"), os.environ.get("PYTHONPATH", "")])}
    with open(root / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "layerfreeze.server"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((root / "server.log").read_text()[-2000:])
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def _ts(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def disk_bytes(root: Path, skip: str = "blobs") -> int:
    total = 0
    for p in root.rglob("*"):
        if p.is_file() and skip not in p.relative_to(root).parts:
            total += p.stat().st_blocks * 512
    return total


def bench_model(c: httpx.Client, data: Path, src: Path, label: str, jobs: int) -> dict[str, object]:
    t0 = time.perf_counter()
    with open(src, "rb") as f:
        model = c.post("/v1/models", files={"file": (src.name, f)}, timeout=1200)
    model.raise_for_status()
    upload_s = time.perf_counter() - t0
    mid = model.json()["id"]
    layers = model.json()["summary"]["parameters"] // 2
    service_ms, client_ms = [], []
    before = disk_bytes(data)
    last = None
    for k in range(jobs):
        first = "|".join(map(str, range(k % layers + 1)))
        spec = {"rules": [{"action": "freeze", "regex": [rf"layers\.({first})\..*"]}]}
        started = time.perf_counter()
        r = c.post("/v1/jobs", params={"wait": 60}, json={"model": mid, "spec": spec}, timeout=120)
        client_ms.append((time.perf_counter() - started) * 1000)
        job = r.json()
        assert job["status"] == "succeeded", job
        service_ms.append((_ts(job["finished_at"]) - _ts(job["started_at"])) * 1000)
        last = job
    assert last is not None
    per_job = (disk_bytes(data) - before) / jobs
    patch = c.get(last["links"]["patch"], timeout=600).content
    digest_started = time.perf_counter()
    while c.get(last["links"]["self"]).json()["output"]["sha256"] is None:
        time.sleep(0.05)
    digest_s = time.perf_counter() - digest_started
    # The old path on the same stored file: a full copy with both digests (what every job did before).
    blob = data / "blobs" / model.json()["sha256"][:2] / model.json()["sha256"]
    with tempfile.TemporaryDirectory(dir=data) as tmp:
        code = ("import sys,time; from pathlib import Path; from layerfreeze.freeze import freeze_file\n"
                "t=time.perf_counter(); freeze_file(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))\n"
                "print(time.perf_counter()-t)")
        spec = json.dumps({"rules": [{"action": "freeze", "regex": [r"layers\.0\..*"]}]})
        env = {**os.environ, "PYTHONPATH": str(ROOT / "service")}
        copy_s = float(subprocess.run([sys.executable, "-c", code, str(blob), spec, f"{tmp}/out"], env=env,
                                      capture_output=True, text=True, check=True).stdout)
    size = src.stat().st_size
    return {"label": label, "bytes": size, "upload_s": upload_s,
            "job_p50_ms": statistics.median(service_ms), "job_max_ms": max(service_ms),
            "post_wait_p50_ms": statistics.median(client_ms), "disk_per_job": per_job,
            "patch_bytes": len(patch), "artifact_bytes": last["output"]["bytes"],
            "digest_after_s": digest_s, "old_copy_s": copy_s}


def _run(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT / "service")})
    return time.perf_counter() - started


def bench_cli(src: Path, out: Path) -> dict[str, float]:
    py = sys.executable
    spec = json.dumps({"rules": [{"action": "freeze", "regex": [r"layers\.0\..*"]}]})
    cli = [py, "-m", "layerfreeze.cli.main"]
    sha = [py, "-c", "import hashlib,sys\nh=hashlib.sha256()\nf=open(sys.argv[1],'rb',buffering=0)\n"
           "while b:=f.read(1<<22): h.update(b)\nprint(h.hexdigest())", str(src)]
    runs = {"sha256": [], "freeze": [], "freeze_digest": [], "inspect": [], "inspect_digest": []}
    for _ in range(3):  # interleaved, so each sees the same cache and load; the medians are compared
        runs["sha256"].append(_run(sha))
        freeze = [*cli, "freeze", str(src), "--spec-json", spec, "-o", str(out), "-q"]
        runs["freeze"].append(_run(freeze))
        runs["freeze_digest"].append(_run([*freeze, "--digest"]))
        runs["inspect"].append(_run([*cli, "inspect", str(src), "-q"]))
        runs["inspect_digest"].append(_run([*cli, "inspect", str(src), "-q", "--digest"]))
    return {k: statistics.median(v) for k, v in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=15)
    parser.add_argument("--big", action="store_true", help="also an 8 GiB model")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lf-stored-bench-"))
    try:
        models = [("torch 1 GiB", torch_state_dict(root / "sd1.pt", 1)),
                  ("safetensors 1 GiB", sparse_safetensors(root / "st1.safetensors", 1))]
        if args.big:
            models.append(("safetensors 8 GiB", sparse_safetensors(root / "st8.safetensors", 8)))
        rows = []
        with service(root) as url, httpx.Client(base_url=url) as c:
            for label, src in models:
                rows.append(bench_model(c, root / "data", src, label, args.jobs))
        print(f"\nfreeze jobs on stored models ({args.jobs} jobs each, one worker, service-side times)")
        print(f"{'model':20s} {'job p50':>9s} {'job max':>9s} {'wait+dig':>9s} {'disk/job':>10s} "
              f"{'patch':>9s} {'artifact':>12s} {'digest':>8s} {'old copy':>9s} {'old/new':>8s}")
        for r in rows:
            print(f"{r['label']:20s} {r['job_p50_ms']:7.1f}ms {r['job_max_ms']:7.1f}ms "
                  f"{r['post_wait_p50_ms']:7.1f}ms "
                  f"{r['disk_per_job'] / 1024:8.1f}KB {r['patch_bytes'] / 1024:7.1f}KB "
                  f"{r['artifact_bytes'] / MIB:10.0f}MiB {r['digest_after_s']:7.2f}s {r['old_copy_s']:8.2f}s "
                  f"{r['old_copy_s'] * 1000 / r['job_p50_ms']:7.0f}x")
        base = rows[0]["job_p50_ms"]
        for r in rows[1:]:
            print(f"  {r['label']} job p50 / torch 1 GiB job p50: {r['job_p50_ms'] / base:.2f}")
        if args.big:
            print(f"  8 GiB / 1 GiB safetensors job p50: {rows[2]['job_p50_ms'] / rows[1]['job_p50_ms']:.2f}")
        cli = bench_cli(root / "sd1.pt", root / "cli-out.pt")
        print("\nlocal CLI on the 1 GiB torch file (fresh process each, start-up included; median of 3)")
        for name, seconds in cli.items():
            print(f"  {name:16s} {seconds:6.2f}s  {seconds / cli['sha256']:5.2f}x one sha256 pass")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
