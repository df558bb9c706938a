"""The hostile-file corpus, generated (never checked in).

    python -m stress.corpus OUT_DIR            write every case and print a summary
    python -m stress.corpus OUT_DIR --verify   also prove each payload is live: run it with pickle/torch.load
                                               in a child process and check that its marker appears

Every case that carries code has a ``marker``: a file (unique per case) that the payload creates if it ever
runs. A reader must refuse every case with a ``layerfreeze.errors`` exception, quickly, marker absent.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from stress import cases_containers, cases_pickle
from stress.case import Builder, Case

__all__ = ["HEAVY_CASES", "KNOWN_FINDINGS", "Case", "generate", "run_controls"]


def generate(out: Path, markers: Path, *, heavy: bool = True) -> list[Case]:
    """Write the corpus under ``out``; payload markers go under ``markers`` (must not exist yet)."""
    b = Builder(out, markers)
    data_pkl, storages, ts = cases_pickle.benign_pickles()
    cases_pickle.raw_pickles(b)
    cases_pickle.torch_zips(b, data_pkl, storages)
    cases_pickle.torch_saved(b)
    cases_pickle.legacy(b)
    cases_pickle.torchscript(b, ts)
    cases_containers.zip_tricks(b, data_pkl, storages)
    cases_pickle.pickle_bombs(b, data_pkl, storages)
    cases_containers.safetensors(b, data_pkl)
    if not heavy:
        b.cases = [c for c in b.cases if c.name not in HEAVY_CASES]
    return b.cases


# Cases the current readers fail (slow or unclean), each with the reason; tests hold them as strict xfails
# so a fix shows up as an unexpected pass. Keep this list short and explained.
KNOWN_FINDINGS: dict[str, str] = {
    "zip-pickle-ops-flood": (
        "4M opcodes (4 MB data.pkl, push None / pop) are all interpreted before the refusal, about 2-4 s of "
        "CPU; the default max_pickle_ops (10M) lets one upload cost about ten seconds of worker CPU"
    ),
}

HEAVY_CASES = frozenset({"st-header-100MB-plus-1", "zipbomb-ratio", "zipbomb-entries"})


def fired(cases: list[Case]) -> list[Case]:
    return [c for c in cases if c.marker is not None and c.marker.exists()]


_CONTROL = r"""
import io, pickle, sys, torch
for kind, path in (line.split("\t") for line in sys.stdin.read().splitlines()):
    try:
        if kind == "torch":
            torch.load(path, weights_only=False)
        else:
            pickle.loads(open(path, "rb").read())
    except BaseException:
        pass
"""


def run_controls(cases: list[Case], env: dict[str, str] | None = None) -> tuple[int, list[Case]]:
    """Run every case's control through a real unpickler in one child process; returns (controls run,
    cases whose marker did not appear). Markers are removed afterwards."""
    with_control = [c for c in cases if c.control is not None]
    lines = "\n".join(f"{c.control[0]}\t{c.control[1]}" for c in with_control if c.control)
    subprocess.run(
        [sys.executable, "-c", _CONTROL],
        input=lines,
        text=True,
        env=env,
        timeout=300,
        capture_output=True,
        cwd=with_control[0].path.parent if with_control else None,
    )
    # some payloads start a process (Popen) and return: give those a moment to land before looking
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(c.marker and not c.marker.exists() for c in with_control):
        time.sleep(0.1)
    dead = [c for c in with_control if c.marker is None or not c.marker.exists()]
    for c in with_control:
        if c.marker is not None:
            c.marker.unlink(missing_ok=True)
    return len(with_control), dead


def iter_groups(cases: list[Case]) -> Iterator[tuple[str, int]]:
    counts: dict[str, int] = {}
    for c in cases:
        counts[c.group] = counts.get(c.group, 0) + 1
    yield from sorted(counts.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stress.corpus", description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--verify", action="store_true", help="prove every payload is live (runs them!)")
    args = ap.parse_args(argv)
    cases = generate(args.out / "files", args.out / "markers")
    for group, n in iter_groups(cases):
        print(f"{n:5d}  {group}")
    print(f"{len(cases):5d}  cases in {args.out / 'files'}")
    if args.verify:
        n, dead = run_controls(cases)
        print(f"controls run: {n}, payloads that did not fire: {[c.name for c in dead]}")
        return 1 if dead else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
