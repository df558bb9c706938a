"""A sharded model directory through the service: upload, freeze, delta download, beside `cp -r`.

    python bench/multifile.py [--size-gib 4] [--shards 8] [--full]

Builds a safetensors model directory of about --size-gib in --shards shards (written file by file, a
1 MiB random block at a time, never held in memory) with its index and config.json, then, in one run:
`cp -r` of the (warm) directory, and the same followed by `sync` (the client fsyncs what it writes);
a real service (one worker, temporary data directory); and the client in its own process:
`upload_directory` (one resumable upload per file, then one request making them a model), a freeze job
on the stored model (its time in the worker, and the client's wait, which includes hashing the changed
output files), and the delta download (the patch, then every output file rebuilt from the local
file and checked against its sha256). With --full also every file downloaded in full, then
the delta download once more (the order of the two shows how much the page cache decides).
Prints each step's wall time and its ratio to `cp -r`, the peak RSS (VmHWM) of the client process, of
the service's main process and of its worker, and the bytes of the patch. Every file is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "service"), str(ROOT / "clients" / "python"), str(ROOT / "bench")]

from multifile_local import build  # noqa: E402

from testing.procs import _status_kib, descendants  # noqa: E402
from testing.service import Service  # noqa: E402

CLIENT = """
import json, sys, time
sys.path[:0] = {paths!r}
from layerfreeze_client import Client
from testing.procs import peak_rss_mib
spec = {{"rules": [{{"action": "freeze", "names": ["layers.0", "layers.1"]}}]}}
out = {{}}
with Client({url!r}, timeout=600) as client:
    t = time.perf_counter()
    model = client.upload_directory({src!r})
    out["upload"] = time.perf_counter() - t
    t = time.perf_counter()
    job = client.wait(client.submit_stored(model["id"], spec, wait=60), 600)
    out["freeze"] = time.perf_counter() - t  # with ?wait, the service also hashes the changed files
    from datetime import datetime
    out["job"] = (datetime.fromisoformat(job.finished_at) - datetime.fromisoformat(job.started_at)
                  ).total_seconds()
    t = time.perf_counter()
    patch = client.patch(job)
    out["patch_bytes"] = len(json.dumps(patch))
    from pathlib import Path
    from layerfreeze_client._directory import directory_files, publish_dir, staging_dir
    target = Path({dst!r})
    staging = staging_dir(target)
    client._rebuild_directory(job, directory_files({src!r}), staging, False)
    publish_dir(staging, target)
    out["delta"] = time.perf_counter() - t
    if {full!r}:
        import shutil
        shutil.rmtree(target)
        report = client.report(job)
        full = Path({dst!r} + "-full")
        full.mkdir()
        t = time.perf_counter()
        for f in report.files.files:
            client.download(job, full / f.path, file=f.path, sha256=f.sha256)
        out["full"] = time.perf_counter() - t
        shutil.rmtree(full)
        t = time.perf_counter()  # the delta again, after the full download: how much order matters
        staging = staging_dir(target)
        client._rebuild_directory(job, directory_files({src!r}), staging, False)
        publish_dir(staging, target)
        out["delta2"] = time.perf_counter() - t
    out["changed"] = sum(f.changed for f in client.report(job).files.files)
out["rss"] = peak_rss_mib()
print(json.dumps(out))
"""


def peak_mib(pid: int) -> float:
    return (_status_kib(pid, "VmHWM") or 0) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=4)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--full", action="store_true", help="also download every file in full")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lf-bench-multifile-service-"))
    try:
        src = tmp / "model"
        src.mkdir()
        build(src, int(args.size_gib * (1 << 30)), args.shards)
        total = sum(f.stat().st_size for f in src.iterdir())
        subprocess.run(["cat", *map(str, src.iterdir())], check=True, stdout=subprocess.DEVNULL)  # warm
        subprocess.run(["sync"], check=True)
        t = time.perf_counter()
        subprocess.run(["cp", "-r", str(src), str(tmp / "copy")], check=True)
        cp = time.perf_counter() - t
        subprocess.run(["sync"], check=True)
        cp_sync = time.perf_counter() - t  # written to disk, as the client's files are (fsync each)
        shutil.rmtree(tmp / "copy")
        settings = {"workers": "1", "max_upload_bytes": str(2 * total), "job_timeout_s": "600"}
        with Service(tmp / "data", settings, log=tmp / "server.log") as service:
            code = CLIENT.format(paths=[str(ROOT), str(ROOT / "service"), str(ROOT / "clients" / "python")],
                                 url=service.url, src=str(src), dst=str(tmp / "out"), full=args.full)
            res = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                            text=True).stdout)
            server_rss = peak_mib(service.pid)
            worker_rss = max((peak_mib(p) for p in descendants(service.pid)), default=0.0)
        print(f"model: {total / (1 << 30):.2f} GiB in {args.shards} shards (+ index, config.json)")
        print(f"cp -r:                     {cp:7.2f} s")
        print(f"cp -r; sync:               {cp_sync:7.2f} s")
        rows = [("upload (resumable)", "upload"), ("freeze job (in the worker)", "job"),
                ("freeze, waited + digests", "freeze"), ("delta download", "delta")]
        if args.full:
            rows += [("full download", "full"), ("delta download, again", "delta2")]
        for label, key in rows:
            print(f"{label + ':':27}{res[key]:7.2f} s  x{res[key] / cp:6.3f} of cp -r, "
                  f"x{res[key] / cp_sync:6.3f} of cp -r; sync")
        whole = res["upload"] + res["freeze"] + res["delta"]
        print(f"{'upload+freeze+delta:':27}{whole:7.2f} s  x{whole / cp:6.3f} of cp -r")
        print(f"patch: {res['patch_bytes']} bytes for {res['changed']} changed files; "
              f"{res['patch_bytes'] / total:.2e} of the model")
        print(f"peak RSS: client {res['rss']:.0f} MiB, service {server_rss:.0f} MiB, "
              f"worker {worker_rss:.0f} MiB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
