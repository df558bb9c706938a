"""Freeze a large checkpoint and compare with `cp` and with the naive torch.load + torch.save.

    python bench/freeze_large.py [--size-gib 1] [--formats state_dict,module,safetensors,legacy,torchscript]

For each format it builds a model of about --size-gib (nn.Linear(4096, 4096) layers, 64 MiB each), saves
it, then runs, each in its own child process on the warm file: `cp`; one sha256 pass (the floor for
anything that reports a digest); our freeze (open_archive + write of a freeze map that freezes the first
half of the layers, hashing source and output); and the naive torch.load + torch.save. It prints wall
times, ratios and each child's peak RSS (VmHWM). Temporary files are removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test kit (testing/), also when run as a file

from testing.procs import peak_rss_mib  # noqa: E402

LAYER = 4096  # 4096 x 4096 float32 = 64 MiB per weight


def child_ours(src: str, dst: str, known: str | None = None) -> None:
    sys.path.insert(0, str(ROOT / "service"))
    from layerfreeze.formats.detect import open_archive

    base = peak_rss_mib()
    started = time.perf_counter()
    archive = open_archive(Path(src))
    params = [t for t in archive.inventory.tensors if t.kind == "parameter"]
    final = {}
    for i, t in enumerate(params):
        for name in (t.name, *t.aliases):
            final[name] = i >= len(params) // 2
    written = archive.write(Path(dst), final, "0" * 64, source_sha256=known)
    elapsed = time.perf_counter() - started
    print(json.dumps({"seconds": elapsed, "peak_mib": peak_rss_mib(), "startup_mib": base,
                      "bytes": written.bytes}))


def child_sha256(src: str, dst: str) -> None:
    """One sha256 pass over the file: the floor for anything that must report a digest."""
    import hashlib

    started = time.perf_counter()
    digest = hashlib.sha256()
    with open(src, "rb", buffering=0) as f:
        while chunk := f.read(4 << 20):
            digest.update(chunk)
    print(json.dumps({"seconds": time.perf_counter() - started, "peak_mib": peak_rss_mib(),
                      "digest": digest.hexdigest()}))


def child_naive(src: str, dst: str) -> None:
    import torch

    base = peak_rss_mib()
    started = time.perf_counter()
    if src.endswith(".torchscript"):
        torch.jit.save(torch.jit.load(src), dst)
    elif src.endswith(".safetensors"):
        from safetensors.torch import load_file, save_file

        save_file(load_file(src), dst)
    else:
        obj = torch.load(src, weights_only=False)
        torch.save(obj, dst, _use_new_zipfile_serialization=not src.endswith(".legacy"))
    elapsed = time.perf_counter() - started
    print(json.dumps({"seconds": elapsed, "peak_mib": peak_rss_mib(), "startup_mib": base}))


def _run_child(kind: str, src: Path, dst: Path, *extra: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, f"_{kind}", str(src), str(dst), *extra], check=True,
                         capture_output=True, text=True, timeout=1800)
    dst.unlink(missing_ok=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run_cp(src: Path, dst: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["cp", str(src), str(dst)], check=True, timeout=1800)
    elapsed = time.perf_counter() - started
    dst.unlink()
    return elapsed


def _build(fmt: str, size_gib: float, path: Path) -> None:
    import torch
    from torch import nn

    layers = max(2, round(size_gib * 1024 / 64))
    model = nn.Sequential(*[nn.Linear(LAYER, LAYER, bias=True) for _ in range(layers)])
    if fmt == "state_dict":
        torch.save(model.state_dict(), path)
    elif fmt == "module":
        torch.save(model, path)
    elif fmt == "legacy":
        torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
    elif fmt == "torchscript":
        torch.jit.save(torch.jit.script(model), str(path))
    elif fmt == "safetensors":
        from safetensors.torch import save_model

        save_model(model, str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--formats", default="state_dict,module,safetensors,legacy,torchscript")
    parser.add_argument("--dir", default=None, help="where to put the temporary files")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement; the best is kept")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="layerfreeze-bench-", dir=args.dir))
    rows = []
    try:
        for fmt in args.formats.split(","):
            src = work / f"model.{fmt}"
            dst = work / f"out.{fmt}"
            subprocess.run([sys.executable, __file__, "_build", fmt, str(args.size_gib), str(src)],
                           check=True, timeout=1800)
            size = src.stat().st_size
            _run_cp(src, dst)  # warm the page cache
            cp = min(_run_cp(src, dst) for _ in range(args.repeat))
            ours = min((_run_child("ours", src, dst) for _ in range(args.repeat)), key=lambda r: r["seconds"])
            floor = min((_run_child("sha256", src, dst) for _ in range(args.repeat)),
                        key=lambda r: r["seconds"])
            # as the service can call it: the upload's digest is already known from receiving it
            known = floor["digest"]
            ours_known = min((_run_child("ours", src, dst, str(known)) for _ in range(args.repeat)),
                             key=lambda r: r["seconds"])
            naive = _run_child("naive", src, dst)
            rows.append((fmt, size, cp, ours, naive, floor, ours_known))
            src.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'format':<12} {'size':>9} {'cp s':>7} {'sha256 s':>9} {'ours s':>7} {'ours/cp':>8} "
          f"{'known s':>8} {'known/cp':>9} {'naive s':>8} {'ours/naive':>10} {'ours peak':>10} "
          f"{'naive peak':>11}")
    for fmt, size, cp, ours, naive, floor, known in rows:
        t, k = ours["seconds"], known["seconds"]
        print(f"{fmt:<12} {size / 2**30:>7.2f}Gi {cp:>7.2f} {floor['seconds']:>9.2f} {t:>7.2f} "
              f"{t / cp:>7.2f}x {k:>8.2f} {k / cp:>8.2f}x {naive['seconds']:>8.2f} "
              f"{t / naive['seconds']:>9.2f}x {ours['peak_mib']:>7.0f}MiB {naive['peak_mib']:>8.0f}MiB")
    print("known = our freeze given the source digest the service already computed while receiving")
    print(f"(cpu count {os.cpu_count()}; peak = VmHWM of the child process, Python start-up included)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_ours":
        child_ours(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    elif len(sys.argv) > 1 and sys.argv[1] == "_sha256":
        child_sha256(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "_naive":
        child_naive(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "_build":
        _build(sys.argv[2], float(sys.argv[3]), Path(sys.argv[4]))
    else:
        sys.exit(main())
