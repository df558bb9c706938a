"""``python -m stress``: every attack, fault and load suite against this checkout; one table of figures.

python -m stress                 full run (about 10 minutes on 2 cores)
python -m stress --quick         CI-sized run
python -m stress --only corpus,abuse
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from stress import ensure_paths

Row = tuple[str, str, str, str]  # suite, what, figure, verdict
PARTS = ("corpus", "fuzz", "api", "abuse", "stalls", "faults", "load")


def _verdict(ok: bool) -> str:
    return "ok" if ok else "FAIL"


def part_corpus(root: Path, quick: bool) -> list[Row]:
    from stress.corpus import KNOWN_FINDINGS, generate, run_controls
    from stress.refusal import refuse_in_process, refuse_over_http
    from stress.server import Service

    cases = generate(root / "corpus" / "files", root / "corpus" / "markers", heavy=not quick)
    n, dead = run_controls(cases)
    rows: list[Row] = [
        ("corpus", "payloads proven live (control run)", f"{n - len(dead)}/{n} fired", _verdict(not dead))
    ]
    local = refuse_in_process(cases, root / "corpus" / "out")
    rows.append(
        (
            "corpus",
            "in-process: tried/refused/ran",
            f"{local.tried}/{local.refused}/{local.ran}",
            _verdict(local.ran == 0),
        )
    )
    rows += _slowest("corpus", "in-process", local, KNOWN_FINDINGS)
    with Service(root / "corpus-svc" / "data", {"LAYERFREEZE_MAX_UPLOAD_BYTES": str(256 << 20)}) as svc:
        svc.warm_up()
        http = refuse_over_http(cases, svc.url)
    rows.append(
        (
            "corpus",
            "HTTP: tried/refused(4xx)/ran",
            f"{http.tried}/{http.refused}/{http.ran}",
            _verdict(http.ran == 0),
        )
    )
    rows += _slowest("corpus", "HTTP", http, KNOWN_FINDINGS)
    return rows


def _slowest(suite: str, where: str, tally, known: dict[str, str]) -> list[Row]:  # type: ignore[no-untyped-def]
    rows: list[Row] = []
    s = tally.slowest
    if s:
        verdict = "ok" if s.seconds < 1 else "known" if s.case in known else "FAIL"
        rows.append((suite, f"{where}: slowest case", f"{s.seconds:.3f}s ({s.case})", verdict))
        others = [o for o in tally.outcomes if o.case not in known]
        if others and s.case in known:
            o = max(others, key=lambda o: o.seconds)
            rows.append(
                (
                    suite,
                    f"{where}: slowest other case",
                    f"{o.seconds:.3f}s ({o.case})",
                    _verdict(o.seconds < 1),
                )
            )
    for o in tally.failures(1.0):
        tag = "known" if o.case in known else "FAIL"
        rows.append((suite, f"{where}: {o.case}", f"{o.seconds:.2f}s {o.detail[:70]}", tag))
    return rows


def part_fuzz(root: Path, quick: bool) -> list[Row]:
    from stress.fuzz import run, run_differential

    fig = run_differential(300 if quick else 2000)
    rows: list[Row] = [("differential", what, figure, "") for what, figure in fig.rows()]
    verdicts = {"disagreements": _verdict(not fig.disagreements),
                "slowest refusal": _verdict(fig.slowest_refusal[0] < 1.0)}
    rows = [(s, w, f, verdicts.get(w, v)) for s, w, f, v in rows]
    rows += [("differential", "  disagreement", d[:70], "FAIL") for d in fig.disagreements[:5]]
    return rows + [
        (
            "fuzz",
            name,
            f"{n} examples in {secs:.0f}s {res[2:].strip()}",
            "ok" if res.startswith("ok") else f"FAIL {res[:60]}",
        )
        for name, n, secs, res in run(100 if quick else 500)
    ]


def part_api(root: Path, quick: bool) -> list[Row]:
    from stress.api_fuzz import run
    from stress.server import Service

    with Service(root / "api-svc" / "data") as svc:
        rep = run(svc.url, max_examples=15 if quick else 100)
    rows: list[Row] = [
        (
            "api fuzz",
            "operations / requests",
            f"{rep.operations} / {rep.requests} in {rep.seconds:.0f}s",
            "ok",
        ),
        ("api fuzz", "5xx responses", str(rep.server_errors), _verdict(rep.server_errors == 0)),
        (
            "api fuzz",
            "schema conformance failures",
            str(sum(rep.failures.values())),
            _verdict(not rep.failures),
        ),
    ]
    rows += [("api fuzz", f"  {k[:60]}", f"x{n}", "FAIL") for k, n in rep.failures.most_common(6)]
    return rows


def part_abuse(root: Path, quick: bool) -> list[Row]:
    from stress import abuse
    from stress.server import Service

    cap = 4 << 20
    with Service(root / "abuse-svc" / "data", {"LAYERFREEZE_MAX_UPLOAD_BYTES": str(cap)}) as svc:
        svc.warm_up()
        results = abuse.run(svc, cap)
        left = abuse.leftovers(svc)
    rows: list[Row] = [
        ("http abuse", r.case, f"{r.status or 'closed'} in {r.seconds:.3f}s", _verdict(r.ok)) for r in results
    ]
    rows.append(("http abuse", "files left in the data dir", str(len(left)), _verdict(not left)))
    return rows


def part_stalls(root: Path, quick: bool) -> list[Row]:
    """Small requests that try to stall the service, on a server with 256 file descriptors."""
    from stress import abuse, stalls
    from stress.server import Service

    rows: list[Row] = []
    cap = {"LAYERFREEZE_MAX_UPLOAD_BYTES": str(4 << 20)}
    with Service(root / "stalls-svc" / "data", cap, nofile=256) as svc:
        svc.warm_up()
        with stalls.probe_healthz(svc.port) as idle:
            time.sleep(2)
        rows.append(("stalls", "idle", idle.figures(), _verdict(idle.ok)))
        for outcome in (stalls.spec_flood(svc.port), stalls.half_heads(svc.port),
                        stalls.huge_headers(svc.port)):
            rows.append(("stalls", outcome.attack, outcome.probe.figures(), _verdict(outcome.ok)))
            rows.append(("stalls", "  meanwhile", outcome.detail, ""))
        numbers = stalls.bad_numbers(svc.port, abuse.model_bytes())
        worst = max(numbers, key=lambda n: n[2])
        errors = [n for n in numbers if not 200 <= n[1] < 500]
        rows.append(("stalls", f"malformed numbers: {len(numbers)} cases, 5xx", str(len(errors)),
                     _verdict(not errors)))
        rows.append(("stalls", "  slowest", f"{worst[2]:.3f}s ({worst[0]})", _verdict(worst[2] < 1)))
    return rows


def part_faults(root: Path, quick: bool) -> list[Row]:
    from stress import faults

    return [("faults", r.case, r.detail[:70], _verdict(r.ok)) for r in faults.run(root / "faults").values()]


def part_load(root: Path, quick: bool) -> list[Row]:
    from stress import load
    from stress.server import Service

    files = load.make_files(root / "load" / "files")
    (root / "load" / "out").mkdir(parents=True)
    clients, seconds = (8, 15) if quick else (32, 60)
    with Service(root / "load" / "data", {"LAYERFREEZE_QUEUE_MAX": "256"}) as svc:
        svc.warm_up()
        rep = load.run(svc, files, clients=clients, seconds=seconds, big_every=12, work=root / "load" / "out")
    m = rep.memory_summary()
    flat = m and m["server_last_third_max"] - m["server_first_third_max"] < 64
    verdicts = {
        "lost or wrong jobs": _verdict(not rep.wrong),
        "server RSS start/max/end": _verdict(bool(flat)),
    }
    rows: list[Row] = [("load", k, v, verdicts.get(k, "")) for k, v in rep.rows()]
    rows += [("load", "  wrong", w[:70], "FAIL") for w in rep.wrong[:5]]
    return rows


def print_table(rows: list[Row]) -> None:
    widths = [max(len(r[i]) for r in [("suite", "check", "figure", "verdict"), *rows]) for i in range(4)]
    widths = [min(w, 72) for w in widths[:3]] + [min(widths[3], 8)]
    line = "+".join("-" * (w + 2) for w in widths)
    print(line)
    for r in [("suite", "check", "figure", "verdict"), *rows]:
        print("|".join(f" {c[: widths[i]]:<{widths[i]}} " for i, c in enumerate(r)))
        if r[0] == "suite":
            print(line)
    print(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stress", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized run")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    args = ap.parse_args(argv)
    ensure_paths()
    parts: dict[str, Callable[[Path, bool], list[Row]]] = {
        "corpus": part_corpus,
        "fuzz": part_fuzz,
        "api": part_api,
        "abuse": part_abuse,
        "stalls": part_stalls,
        "faults": part_faults,
        "load": part_load,
    }
    rows: list[Row] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lf-stress-") as tmp:
        for name in args.only.split(","):
            print(f"== {name} ...", file=sys.stderr, flush=True)
            start = time.monotonic()
            try:
                rows += parts[name](Path(tmp), args.quick)
            except Exception as exc:
                traceback.print_exc()
                rows.append((name, "suite crashed", f"{type(exc).__name__}: {str(exc)[:60]}", "FAIL"))
            print(f"   {name} took {time.monotonic() - start:.0f}s", file=sys.stderr, flush=True)
    rows.append(("total", "wall time", f"{time.monotonic() - t0:.0f}s", ""))
    print_table(rows)
    return 1 if any(r[3].startswith("FAIL") for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
