"""Freeze a sharded model directory with the local CLI's code path, beside `cp -r` of the directory.

    python bench/multifile_local.py [--size-gib 4] [--shards 8]

Builds a safetensors model directory of about --size-gib in --shards shards (float32 tensors of 64 MiB,
random data, written without torch) with its index and a config.json, then runs, each in its own child
process on the warm files: `cp -r`; freeze_directory without digests (the CLI's default); and
freeze_directory with every file's sha256 (what a report with digests costs). Prints wall times, ratios
to `cp -r`, each child's peak RSS (VmHWM) and how many bytes of the output are not the input's.
Temporary files are removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "service")]

MiB = 1 << 20
TENSOR = 64 * MiB


def write_shard(path: Path, names: list[str], block: bytes) -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    for i, name in enumerate(names):
        header[name] = {"dtype": "F32", "shape": [TENSOR // 4],
                        "data_offsets": [i * TENSOR, (i + 1) * TENSOR]}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _ in range(len(names) * TENSOR // MiB):
            f.write(block)


def build(root: Path, size: int, shards: int) -> None:
    block = os.urandom(MiB)
    per_shard = max(1, size // TENSOR // shards)
    weight_map: dict[str, str] = {}
    layer = 0
    for k in range(1, shards + 1):
        name = f"model-{k:05d}-of-{shards:05d}.safetensors"
        names = [f"layers.{layer + i}.weight" for i in range(per_shard)]
        layer += per_shard
        write_shard(root / name, names, block)
        weight_map.update(dict.fromkeys(names, name))
    index = {"metadata": {"total_size": layer * TENSOR}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (root / "config.json").write_text('{"model_type": "bench"}\n')


CHILD = """
import sys, time
sys.path[:0] = {paths!r}
from layerfreeze.freeze import freeze_directory
from testing.procs import peak_rss_mib
t = time.perf_counter()
r = freeze_directory({src!r}, {{"rules": [{{"action": "freeze", "names": ["layers.[0-9]"]}}]}}, {dst!r},
                     digest={digest!r})
print(time.perf_counter() - t, peak_rss_mib(), sum(f.changed for f in r.files.files))
"""


def run_freeze(src: Path, dst: Path, digest: bool) -> tuple[float, float, int]:
    code = CHILD.format(paths=[str(ROOT), str(ROOT / "service")], src=str(src), dst=str(dst), digest=digest)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    wall, rss, changed = out.split()
    return float(wall), float(rss), int(changed)


def delta_bytes(src: Path) -> int:
    """Literal bytes of the output's plan (the rest are ranges of the input): what a delta carries."""
    from layerfreeze.formats.segments import literal_bytes
    from layerfreeze.formats.sharded import ShardedModel, files_of_directory

    model = ShardedModel(files_of_directory(src))
    final = {t.name: not t.name.startswith("layers.0.") for t in model.inventory.tensors}
    return sum(literal_bytes(p) for p in model.plan(final, "0" * 64).values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=4)
    ap.add_argument("--shards", type=int, default=8)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lf-bench-multifile-"))
    try:
        src = tmp / "model"
        src.mkdir()
        build(src, int(args.size_gib * (1 << 30)), args.shards)
        total = sum(f.stat().st_size for f in src.iterdir())
        subprocess.run(["cat", *map(str, src.iterdir())], check=True, stdout=subprocess.DEVNULL)  # warm
        t = time.perf_counter()
        subprocess.run(["cp", "-r", str(src), str(tmp / "copy")], check=True)
        cp = time.perf_counter() - t
        plain, plain_rss, changed = run_freeze(src, tmp / "frozen", digest=False)
        hashed, hashed_rss, _ = run_freeze(src, tmp / "frozen-digest", digest=True)
        print(f"model: {total / (1 << 30):.2f} GiB in {args.shards} shards (+ index, config.json)")
        print(f"cp -r:                  {cp:7.2f} s")
        print(f"freeze, no digests:     {plain:7.2f} s  x{plain / cp:5.2f} of cp -r  "
              f"peak RSS {plain_rss:.0f} MiB")
        print(f"freeze, every sha256:   {hashed:7.2f} s  x{hashed / cp:5.2f} of cp -r  "
              f"peak RSS {hashed_rss:.0f} MiB")
        print(f"files changed: {changed} of {len(list(src.iterdir()))}; literal bytes of the output "
              f"(the rest is the input's bytes, by range): {delta_bytes(src)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
