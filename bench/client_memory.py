"""Peak memory of the client on a 1 GiB checkpoint: upload, wait, download, verify.

    python bench/client_memory.py                 # starts a service on a free 127.0.0.1 port, temp data dir
    python bench/client_memory.py --url URL       # or uses a running one
    python bench/client_memory.py --size-mib 256  # a smaller file

The checkpoint is a safetensors file (one float32 tensor per 64 MiB, zeros; written without torch) so that
the whole round trip runs: the service rewrites the header and copies the data. This process imports only
the client, so its own peak RSS (VmHWM) is the client's; the limit checked is 100 MiB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# bench/ holds a module named http.py: keep it from shadowing the standard library's http package.
sys.path[:] = [str(ROOT / "clients" / "python")] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

from layerfreeze_client import Client, Spec  # noqa: E402

LIMIT_MIB = 100
TENSOR_MIB = 64


def write_safetensors(path: Path, size_mib: int) -> None:
    count = max(1, size_mib // TENSOR_MIB)
    per = TENSOR_MIB * 1024 * 1024
    header: dict[str, object] = {}
    for i in range(count):
        header[f"layers.{i}.weight"] = {"dtype": "F32", "shape": [per // 4 // 1024, 1024],
                                        "data_offsets": [i * per, (i + 1) * per]}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    zeros = bytes(1 << 20)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _ in range(count * TENSOR_MIB):
            f.write(zeros)


def rss_mib() -> float:
    """Peak RSS of this process. Linux: VmHWM, which starts afresh at exec (``ru_maxrss`` keeps the
    parent's peak across fork + exec, so a large parent would hide the figure); elsewhere ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def service(data: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "LAYERFREEZE_HOST": "127.0.0.1", "LAYERFREEZE_PORT": str(port),
           "LAYERFREEZE_DATA_DIR": str(data), "LAYERFREEZE_WORKERS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "service"), os.environ.get("PYTHONPATH", "")])}
    env.pop("LAYERFREEZE_TOKENS", None)
    log = open(data.parent / "server.log", "wb")  # noqa: SIM115 - open for the child's lifetime
    proc = subprocess.Popen([sys.executable, "-m", "layerfreeze.server"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        with Client(url, timeout=5) as probe:
            for _ in range(300):
                if proc.poll() is not None:
                    raise SystemExit((data.parent / "server.log").read_text()[-2000:])
                with contextlib.suppress(Exception):
                    if probe.ready():
                        break
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service (default: start one)")
    parser.add_argument("--token", default=os.environ.get("LAYERFREEZE_TOKEN"))
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--upload-only", action="store_true", help="measure the upload alone")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="lf-bench-") as tmp:
        model = Path(tmp) / "big.safetensors"
        write_safetensors(model, args.size_mib)
        size = model.stat().st_size
        baseline = rss_mib()
        with contextlib.ExitStack() as stack:
            url = args.url or stack.enter_context(service(Path(tmp) / "data"))
            with Client(url, token=args.token, timeout=300) as client:
                start = time.monotonic()
                if args.upload_only:
                    job = client.submit(model, Spec().freeze(names=["layers.0"]))
                    moved, frozen = size, None
                    assert job.input.bytes == size
                else:
                    result = client.freeze(model, Spec().freeze(names=["layers.0"]), progress=False,
                                           timeout=900)
                    out = result.report.output
                    assert result.output is not None and out is not None
                    assert result.output.stat().st_size == out.bytes >= size  # the header grew
                    moved, frozen = 2 * size, result.report.summary.frozen
                elapsed = time.monotonic() - start
        peak = rss_mib()
        print(json.dumps({
            "mode": "upload" if args.upload_only else "round trip",
            "file_mib": round(size / 2**20, 1), "seconds": round(elapsed, 2),
            "throughput_mib_s": round(moved / 2**20 / elapsed, 1),
            "client_rss_before_mib": round(baseline, 1), "client_peak_rss_mib": round(peak, 1),
            "limit_mib": LIMIT_MIB, "frozen": frozen,
        }))
        if peak >= LIMIT_MIB:
            print(f"FAIL: client peak RSS {peak:.1f} MiB >= {LIMIT_MIB} MiB", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
