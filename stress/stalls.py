"""Small requests that try to stall the whole service, with ``/healthz`` probed while each one runs.

Each attack is bounded in count and time and talks to 127.0.0.1 only:

* ``spec_flood``: concurrent submissions whose freeze spec is as expensive to read as the caps allow (and
  the 900 KB spec of 300,000 ``a*`` segments that used to cost seconds of regex compilation);
* ``half_heads``: hundreds of connections that send half a request head and then nothing;
* ``huge_headers``: connections sending a header of tens of megabytes;
* ``bad_numbers``: numbers in headers, query strings and cursors that used to end in a 500.

``probe_healthz`` opens a new connection for every probe, as a health checker does, and reports the
latency figures; an attack passes when no probe failed and the slowest took under a second.

    python -m stress.stalls --url http://127.0.0.1:8000     # against a running service
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

BOUNDARY = "lfstall9c1d0e"
PROBE_EVERY_S = 0.05
HEALTHZ_MAX_S = 1.0


@dataclass
class Probe:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def figures(self) -> str:
        if not self.latencies:
            return f"no answer ({len(self.failures)} failures)"
        lat = sorted(self.latencies)
        text = (f"healthz p50 {statistics.median(lat) * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms "
                f"({len(lat)} probes")
        return text + (f", {len(self.failures)} failed)" if self.failures else ")")

    @property
    def ok(self) -> bool:
        return bool(self.latencies) and not self.failures and max(self.latencies) < HEALTHZ_MAX_S


@dataclass
class Outcome:
    attack: str
    probe: Probe
    ok: bool
    detail: str

    def row(self) -> str:
        return f"{'ok ' if self.ok else 'BAD'} {self.attack:28s} {self.probe.figures()}; {self.detail}"


def healthz_once(port: int, timeout: float = 10.0) -> float:
    """One ``GET /healthz`` on a new connection; its latency, or an OSError/ValueError."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while not data.endswith(b"}"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise ValueError(f"healthz answered {data[:40]!r}")
    return time.perf_counter() - t0


@contextlib.contextmanager
def probe_healthz(port: int) -> Iterator[Probe]:
    """Probe ``/healthz`` every ``PROBE_EVERY_S`` while the body of the ``with`` runs. The prober is a
    process of its own, so the attack's threads in this one cannot delay its clock."""
    probe = Probe()
    proc = subprocess.Popen([sys.executable, "-m", "stress.stalls", "--probe", str(port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(ROOT),
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "started"
        yield probe
    finally:
        out, _ = proc.communicate(b"stop\n", timeout=30)
        result = json.loads(out.decode() or "{}")
        probe.latencies += result.get("latencies", [])
        probe.failures += result.get("failures", [])


def _probe_main(port: int) -> None:
    """The prober process: probe until a line arrives on stdin, then print the figures as JSON."""
    stop = threading.Event()
    latencies: list[float] = []
    failures: list[str] = []
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    print("started", flush=True)
    while not stop.is_set():
        try:
            latencies.append(healthz_once(port))
        except (OSError, ValueError) as exc:
            failures.append(f"{type(exc).__name__}: {exc}"[:120])
        stop.wait(PROBE_EVERY_S)
    print(json.dumps({"latencies": latencies, "failures": failures}), flush=True)


def _run_for(seconds: float, workers: int, fn: Callable[[], None]) -> None:
    deadline = time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < deadline:
            fn()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)


# -- item: specs that are expensive to read ----------------------------------------------------------


def heavy_specs() -> dict[str, str]:
    """The 900 KB spec of the report, and the most expensive specs that fit the caps; each has a bad
    rule so that no job is made."""
    bad = {"action": "freeze", "names": ["a.[b"]}  # an unbalanced [: refused after the rest is read
    classes = "".join(f"[{chr(97 + i % 20)}-{chr(98 + i % 20 + i // 20 % 5)}]" for i in range(200))
    return {
        "300,000 a* segments (900 KB)": json.dumps(
            {"rules": [{"action": "freeze", "names": [".".join(["a*"] * 300_000)]}, bad]}),
        "16 KiB of globs (the cap)": json.dumps(
            {"rules": [{"action": "freeze", "names": [classes[5 * i :][:1020] for i in range(16)]}, bad]}),
        "3,000 names + 32 regexes": json.dumps(
            {"rules": [{"action": "freeze", "names": [f"encoder.layer.{i}.attention.weight"
                                                        for i in range(3000)],
                        "regex": [f"(?:a|b{i})" * 30 for i in range(32)]}, bad]}),
    }


def post_spec(port: int, spec: str, model: bytes = b"\x80\x02}q\x00.") -> int:
    with httpx.Client(timeout=60) as c:
        r = c.post(f"http://127.0.0.1:{port}/v1/jobs", files={"model": ("m.pt", model)},
                   data={"spec": spec})
    return r.status_code


def spec_flood(port: int, seconds: float = 4.0, clients: int = 4) -> Outcome:
    specs = list(heavy_specs().values())
    statuses: list[int] = []
    counter = iter(range(1 << 30))

    def one() -> None:
        statuses.append(post_spec(port, specs[next(counter) % len(specs)]))

    with probe_healthz(port) as probe:
        _run_for(seconds, clients, one)
    refused = all(s in (413, 422) for s in statuses)
    return Outcome(f"spec flood ({clients} clients)", probe, probe.ok and refused and bool(statuses),
                   f"{len(statuses)} specs, answers {sorted(set(statuses))}")


# -- item: connections that never finish their head ------------------------------------------------


def half_heads(port: int, connections: int = 300, hold_s: float = 4.0) -> Outcome:
    """Open ``connections`` sockets that each send half a head, hold them, and probe meanwhile."""
    socks: list[socket.socket] = []
    refused = 0
    with probe_healthz(port) as probe:
        for _ in range(connections):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
                socks.append(s)
            except OSError:
                refused += 1
        time.sleep(hold_s)
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            closed += s.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    return Outcome(f"{connections} half-sent heads", probe, probe.ok,
                   f"{closed} closed by the server within {hold_s:g}s, {refused} not opened")


# -- item: huge request heads ----------------------------------------------------------------------


def huge_header(port: int, mib: int = 96, timeout: float = 30.0) -> tuple[int | None, float]:
    """Send a header of ``mib`` MiB in 1 MiB pieces until the server answers or closes."""
    piece = b"a" * (1 << 20)
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            for _ in range(mib):
                s.sendall(piece)
            s.sendall(b"\r\n\r\n")
        except OSError:
            pass  # refused mid-way: read the answer
        data = b""
        with contextlib.suppress(OSError):
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    status = int(data[9:12]) if data.startswith(b"HTTP/1.1 ") and data[9:12].isdigit() else None
    return status, time.perf_counter() - t0


def huge_headers(port: int, clients: int = 4, mib: int = 96, seconds: float = 3.0) -> Outcome:
    """``clients`` threads send ``mib`` MiB headers one after another for ``seconds``."""
    results: list[tuple[int | None, float]] = []

    def one() -> None:
        results.append(huge_header(port, mib))

    with probe_healthz(port) as probe:
        _run_for(seconds, clients, one)
    statuses = sorted({s for s, _ in results}, key=str)
    slowest = max((t for _, t in results), default=0.0)
    ok = probe.ok and all(s in (431, None) for s, _ in results) and slowest < 5
    return Outcome(f"{clients} x {mib} MiB headers", probe, ok,
                   f"{len(results)} sent, answers {statuses}, slowest refusal {slowest:.2f}s")


# -- item: numbers ---------------------------------------------------------------------------------


def bad_number_requests(artifact: str) -> dict[str, tuple[str, str, dict[str, str | bytes]]]:
    """name -> (method, path with query, headers): numbers no honest client sends."""
    big = base64.urlsafe_b64encode(str(10**20).encode()).decode().rstrip("=")
    return {
        "Range: bytes=\\xb2-": ("GET", artifact, {"Range": b"bytes=\xb2-"}),
        "Range of 5,000 digits": ("GET", artifact, {"Range": "bytes=" + "9" * 5000 + "-"}),
        "Range suffix of 5,000 digits": ("GET", artifact, {"Range": "bytes=-" + "9" * 5000}),
        "Range end of 5,000 digits": ("GET", artifact, {"Range": "bytes=0-" + "9" * 5000}),
        "Range: bytes=-0": ("GET", artifact, {"Range": "bytes=-0"}),
        "Range: bytes=+1-2": ("GET", artifact, {"Range": "bytes=+1-2"}),
        "cursor = base64(10^20)": ("GET", f"/v1/jobs?cursor={big}", {}),
        "cursor = base64(-1)": ("GET", "/v1/jobs?cursor=LTE", {}),
        "cursor = base64(\\xff)": ("GET", "/v1/jobs?cursor=_w", {}),
        "cursor of 10,000 chars": ("GET", "/v1/jobs?cursor=" + "M" * 10_000, {}),
        "limit of 5,000 digits": ("GET", "/v1/jobs?limit=" + "9" * 5000, {}),
        "limit=-1": ("GET", "/v1/jobs?limit=-1", {}),
        "wait=nan": ("POST", "/v1/jobs?wait=nan", {}),
        "wait=inf": ("POST", "/v1/jobs?wait=inf", {}),
        "wait=1e400": ("POST", "/v1/jobs?wait=1e400", {}),
        "wait of 5,000 digits": ("POST", "/v1/jobs?wait=" + "9" * 5000, {}),
        "job id with NUL": ("GET", "/v1/jobs/%00", {}),
        "job id ..": ("GET", "/v1/jobs/%2E%2E/artifact", {}),
        "job id of 8,000 chars": ("GET", "/v1/jobs/" + "a" * 8000, {}),
        "delete job id with NUL": ("DELETE", "/v1/jobs/a%00b", {}),
    }


def bad_numbers(port: int, model: bytes) -> list[tuple[str, int, float]]:
    """(case, status, seconds) for each of ``bad_number_requests``; POSTs carry a small valid job."""
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
        job = c.post("/v1/jobs", params={"wait": 30}, files={"model": ("m.pt", model)},
                     data={"spec": "{}"}).json()
        for name, (method, path, headers) in bad_number_requests(job["links"]["artifact"]).items():
            t0 = time.perf_counter()
            if method == "POST":
                r = c.post(path, headers=headers, files={"model": ("m.pt", model)}, data={"spec": "{}"})
            else:
                r = c.request(method, path, headers=headers)
            out.append((name, r.status_code, time.perf_counter() - t0))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, help="port of a service on 127.0.0.1")
    ap.add_argument("--only", default="spec,heads,headers", help="spec,heads,headers")
    ap.add_argument("--probe", type=int, help=argparse.SUPPRESS)  # the prober process
    args = ap.parse_args(argv)
    if args.probe:
        _probe_main(args.probe)
        return 0
    if args.port is None:
        ap.error("--port is required")
    attacks = {"spec": spec_flood, "heads": half_heads, "headers": huge_headers}
    with probe_healthz(args.port) as idle:
        time.sleep(2)
    print(f"ok  {'idle':28s} {idle.figures()}")
    for name in args.only.split(","):
        print(attacks[name](args.port).row(), flush=True)
        time.sleep(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
