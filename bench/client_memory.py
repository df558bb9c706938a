"""Peak memory of the client on a 1 GiB checkpoint: upload, wait, download, verify.

    python bench/client_memory.py                 # starts a service on a free 127.0.0.1 port, temp data dir
    python bench/client_memory.py --url URL       # or uses a running one
    python bench/client_memory.py --size-mib 256  # a smaller file

The checkpoint is a safetensors file (one float32 tensor per 64 MiB; written without torch) so that
the whole round trip runs: the service rewrites the header and copies the data. This process imports only
the client, so its own peak RSS (VmHWM) is the client's; the limit checked is 100 MiB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "clients" / "python")]  # the test kit and the client, also as a file

from layerfreeze_client import Client, Spec  # noqa: E402

from testing import child_env  # noqa: E402
from testing.files import MiB, write_safetensors  # noqa: E402
from testing.procs import peak_rss_mib  # noqa: E402
from testing.service import Service  # noqa: E402

LIMIT_MIB = 100


@contextlib.contextmanager
def service(data: Path) -> Iterator[str]:
    """A service on a free port with one worker and no tokens (whatever this shell has set)."""
    env = {k: v for k, v in child_env().items() if k != "LAYERFREEZE_TOKENS"}
    with Service(data, {"workers": "1"}, env=env, log=data.parent / "server.log") as svc:
        yield svc.url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service (default: start one)")
    parser.add_argument("--token", default=os.environ.get("LAYERFREEZE_TOKEN"))
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--upload-only", action="store_true", help="measure the upload alone")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="lf-bench-") as tmp:
        model = Path(tmp) / "big.safetensors"
        write_safetensors(model, args.size_mib * MiB)
        size = model.stat().st_size
        baseline = peak_rss_mib()
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
        peak = peak_rss_mib()
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
