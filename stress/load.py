"""Bounded load on 127.0.0.1: concurrent clients submit mixed small and ~100 MB jobs, download every
artifact and check it (sha256 against ETag and the report, every parameter's flag against the spec,
tensor bytes unchanged), then delete the job. Server and worker memory are sampled throughout.

    python -m stress.load [--clients 32] [--seconds 60] [--big-every 12]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from stress.server import Service

SMALL_FORMATS = ("state_dict", "safetensors", "module", "checkpoint")
BIG_FORMATS = ("state_dict", "safetensors")
LAYERS = 12


@dataclass(slots=True)
class Sample:
    t: float
    server: float
    workers: list[float]


@dataclass
class LoadReport:
    clients: int
    seconds: float
    jobs_ok: int = 0
    wrong: list[str] = field(default_factory=list)  # lost or wrong jobs: must stay empty
    errors: dict[str, int] = field(default_factory=dict)  # transport errors, 4xx/5xx, retries
    latencies: list[float] = field(default_factory=list)
    bytes_moved: int = 0
    big_jobs: int = 0
    memory: list[Sample] = field(default_factory=list)

    def pct(self, p: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")

    def memory_summary(self) -> dict[str, float]:
        if not self.memory:
            return {}
        srv = [s.server for s in self.memory]
        wk = [max(s.workers, default=0.0) for s in self.memory]
        third = max(1, len(srv) // 3)
        return {
            "server_start": srv[0],
            "server_max": max(srv),
            "server_end": srv[-1],
            "server_first_third_max": max(srv[:third]),
            "server_last_third_max": max(srv[-third:]),
            "worker_max": max(wk),
            "worker_first_third_max": max(wk[:third]),
            "worker_last_third_max": max(wk[-third:]),
        }

    def rows(self) -> list[tuple[str, str]]:
        m = self.memory_summary()
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) or "0"
        return [
            ("clients x seconds", f"{self.clients} x {self.seconds:.0f}s"),
            ("jobs verified", f"{self.jobs_ok} ({self.big_jobs} of ~100 MB)"),
            ("lost or wrong jobs", str(len(self.wrong))),
            ("latency p50/p95/p99", f"{self.pct(50):.2f} / {self.pct(95):.2f} / {self.pct(99):.2f} s"),
            (
                "throughput",
                f"{self.jobs_ok / self.seconds:.1f} jobs/s, "
                f"{self.bytes_moved / self.seconds / 2**20:.0f} MiB/s up+down",
            ),
            ("errors", errors),
            (
                "server RSS start/max/end",
                f"{m.get('server_start', 0):.0f} / {m.get('server_max', 0):.0f} / "
                f"{m.get('server_end', 0):.0f} MiB",
            ),
            (
                "worker RSS max (1st/last third)",
                f"{m.get('worker_first_third_max', 0):.0f} / {m.get('worker_last_third_max', 0):.0f} MiB",
            ),
        ]


def make_files(out: Path, small_width: int = 128, big_width: int = 1448) -> dict[tuple[str, str], Path]:
    """Small (~0.8 MB) and big (~100 MB) checkpoints: ``LAYERS`` Linear layers named 0..11."""
    import torch
    from fixtures.models import save

    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for size, width, formats in (("small", small_width, SMALL_FORMATS), ("big", big_width, BIG_FORMATS)):
        torch.manual_seed(1)
        model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(LAYERS)])
        for fmt in formats:
            ext = ".safetensors" if fmt == "safetensors" else ".pt"
            files[(size, fmt)] = save(model, out / f"{size}-{fmt}{ext}", fmt)
    return files


def spec_for(rng: random.Random) -> tuple[dict, set[str]]:
    """A spec that decides every parameter, and the set of names it must leave frozen."""
    layers = set(rng.sample(range(LAYERS), rng.randint(0, LAYERS)))
    rules: list[dict] = [{"action": "unfreeze", "names": ["**"]}]
    if layers:
        rules.append({"action": "freeze", "names": [str(i) for i in sorted(layers)]})
    bias_free = rng.random() < 0.5
    if bias_free:
        rules.append({"action": "unfreeze", "params": ["bias"]})
    frozen = {f"{i}.weight" for i in layers} | (set() if bias_free else {f"{i}.bias" for i in layers})
    return {"rules": rules, "strict": False}, frozen


def flags_of(path: Path, fmt: str) -> dict[str, bool]:
    """requires_grad per parameter as recorded in an output checkpoint."""
    if fmt == "safetensors":
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        meta = json.loads(header["__metadata__"]["layerfreeze"])
        return {**{k: False for k in meta["frozen"]}, **{k: True for k in meta["trainable"]}}
    import torch

    _allow_module_classes()
    obj = torch.load(path, weights_only=True, mmap=True)
    if fmt == "module":
        return {k: p.requires_grad for k, p in obj.named_parameters()}
    sd = obj["state_dict"] if fmt == "checkpoint" else obj
    return {k: v.requires_grad for k, v in sd.items()}


def _allow_module_classes() -> None:
    """The classes our whole-module files use (process-wide: the safe_globals context is per thread)."""
    import torch

    torch.serialization.add_safe_globals([torch.nn.Sequential, torch.nn.Linear])


def tensors_equal(a: Path, b: Path, fmt: str) -> bool:
    import torch

    if fmt == "safetensors":
        from safetensors.torch import load_file

        x, y = load_file(str(a)), load_file(str(b))
    else:
        _allow_module_classes()
        x, y = (torch.load(p, weights_only=True, mmap=True) for p in (a, b))
        if fmt == "module":
            x, y = x.state_dict(), y.state_dict()
        elif fmt == "checkpoint":
            x, y = x["state_dict"], y["state_dict"]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


class _Client(threading.Thread):
    def __init__(
        self,
        idx: int,
        url: str,
        files: dict[tuple[str, str], Path],
        report: LoadReport,
        lock: threading.Lock,
        stop_at: float,
        big_every: int,
        work: Path,
    ) -> None:
        super().__init__(daemon=True)
        self.idx, self.url, self.files, self.report, self.lock = idx, url, files, report, lock
        self.stop_at, self.big_every, self.work = stop_at, big_every, work
        self.rng = random.Random(idx)

    def count(self, what: str) -> None:
        with self.lock:
            self.report.errors[what] = self.report.errors.get(what, 0) + 1

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=180) as c:
            n = 0
            while time.monotonic() < self.stop_at:
                n += 1
                big = self.big_every > 0 and (n + self.idx) % self.big_every == 0
                fmt = self.rng.choice(BIG_FORMATS if big else SMALL_FORMATS)
                try:
                    self.one_job(c, "big" if big else "small", fmt)
                except httpx.HTTPError as exc:
                    self.count(type(exc).__name__)
                except Exception as exc:  # a verification that cannot even run is a wrong job
                    with self.lock:
                        self.report.wrong.append(f"client {self.idx}: {type(exc).__name__}: {str(exc)[:200]}")

    def one_job(self, c: httpx.Client, size: str, fmt: str) -> None:
        src = self.files[(size, fmt)]
        spec, frozen = spec_for(self.rng)
        t0 = time.perf_counter()
        for _attempt in range(20):
            with src.open("rb") as fh:
                r = c.post(
                    "/v1/jobs",
                    params={"wait": 60},
                    data={"spec": json.dumps(spec)},
                    files={"model": (src.name, fh)},
                )
            if r.status_code not in (429, 503):
                break
            self.count(f"{r.status_code} (retried)")
            time.sleep(float(r.headers.get("retry-after", "1")))
        if r.status_code != 200:
            self.count(f"HTTP {r.status_code}")
            with self.lock:
                self.report.wrong.append(f"{size}/{fmt}: {r.status_code} {r.text[:160]}")
            return
        job = r.json()
        out = self.work / f"{job['id']}.out"
        digest = hashlib.sha256()
        with c.stream("GET", job["links"]["artifact"]) as a, out.open("wb") as fh:
            for chunk in a.iter_bytes(1 << 20):
                digest.update(chunk)
                fh.write(chunk)
            etag = a.headers.get("etag", "").strip('"')
        latency = time.perf_counter() - t0
        report = c.get(job["links"]["report"]).json()
        problems = []
        if digest.hexdigest() != etag or etag != (report.get("output") or {}).get("sha256"):
            problems.append("artifact sha256 / ETag / report disagree")
        flags = flags_of(out, fmt)
        expected = {name: name not in frozen for name in flags}
        if len(flags) != 2 * LAYERS or flags != expected:
            problems.append(f"flags differ: {sorted(k for k in flags if flags[k] != expected[k])[:4]}")
        if size == "small" and not tensors_equal(src, out, fmt):
            problems.append("tensor bytes changed")
        out.unlink()
        if c.delete(f"/v1/jobs/{job['id']}").status_code != 204:
            self.count("delete failed")
        with self.lock:
            if problems:
                self.report.wrong.append(f"{job['id']} {size}/{fmt}: {'; '.join(problems)}")
            else:
                self.report.jobs_ok += 1
                self.report.big_jobs += size == "big"
                self.report.latencies.append(latency)
                self.report.bytes_moved += 2 * src.stat().st_size


def run(
    svc: Service,
    files: dict[tuple[str, str], Path],
    *,
    clients: int,
    seconds: float,
    big_every: int,
    work: Path,
) -> LoadReport:
    report = LoadReport(clients, seconds)
    lock = threading.Lock()
    done = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not done.wait(1.0):
            from testing.procs import rss_mib

            report.memory.append(
                Sample(time.monotonic() - t0, rss_mib(svc.pid), [rss_mib(p) for p in svc.worker_pids()])
            )

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t_start = time.monotonic()
    threads = [
        _Client(i, svc.url, files, report, lock, t_start + seconds, big_every, work) for i in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 300)
    report.seconds = time.monotonic() - t_start
    done.set()
    sampler.join(5)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stress.load")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--big-every", type=int, default=12, help="every Nth job of a client is ~100 MB")
    args = ap.parse_args(argv)
    from stress import ensure_paths

    ensure_paths()
    with tempfile.TemporaryDirectory(prefix="lf-load-") as tmp:
        root = Path(tmp)
        files = make_files(root / "files")
        with Service(root / "data", {"LAYERFREEZE_QUEUE_MAX": "256"}) as svc:
            svc.warm_up()
            (root / "out").mkdir()
            rep = run(
                svc,
                files,
                clients=args.clients,
                seconds=args.seconds,
                big_every=args.big_every,
                work=root / "out",
            )
    for k, v in rep.rows():
        print(f"{k:34s} {v}")
    for w in rep.wrong[:10]:
        print("WRONG", w)
    return 1 if rep.wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
