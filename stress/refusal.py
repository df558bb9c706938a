"""Feed the hostile corpus to the readers (in-process) and to the service (over HTTP); tally the outcome.

A case is *refused* when the in-process reader raises a ``layerfreeze.errors`` exception (the
``freeze_file`` use case too, leaving no output file), or when the service answers 4xx. Anything else
(another exception, acceptance, a 5xx, a marker file) is a finding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from stress.corpus import Case


@dataclass(slots=True)
class Outcome:
    case: str
    refused: bool
    seconds: float
    detail: str
    ran: bool = False


@dataclass(slots=True)
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def tried(self) -> int:
        return len(self.outcomes)

    @property
    def refused(self) -> int:
        return sum(o.refused for o in self.outcomes)

    @property
    def ran(self) -> int:
        return sum(o.ran for o in self.outcomes)

    @property
    def slowest(self) -> Outcome | None:
        return max(self.outcomes, key=lambda o: o.seconds, default=None)

    def failures(self, max_seconds: float = 1.0) -> list[Outcome]:
        return [o for o in self.outcomes if not o.refused or o.ran or o.seconds > max_seconds]

    def summary(self) -> str:
        s = self.slowest
        slow = f"{s.seconds:.3f}s ({s.case})" if s else "-"
        return f"tried {self.tried}, refused {self.refused}, ran {self.ran}, slowest {slow}"


def _ran(case: Case) -> bool:
    return case.marker is not None and case.marker.exists()


def refuse_in_process(cases: list[Case], work: Path) -> Tally:
    """open_archive, then freeze_file with an empty spec to a destination that must stay absent.
    ``seconds`` is the CPU time of the slower of the two calls."""
    from layerfreeze.errors import LayerfreezeError
    from layerfreeze.formats.detect import open_archive
    from layerfreeze.freeze import freeze_file

    tally = Tally()
    work.mkdir(parents=True, exist_ok=True)
    for case in cases:
        dst = work / f"{case.name}.out"
        refused, detail = False, ""
        t0 = time.process_time()  # CPU time: the work a case costs, not the machine's other load
        try:
            archive = open_archive(case.path)
            detail = f"accepted by open_archive as {archive.inventory.format}"
        except LayerfreezeError as exc:
            refused, detail = True, f"{type(exc).__name__}: {exc}"
            if case.expect_limit and getattr(exc, "limit", None) not in case.expect_limit:
                refused = False  # refused, but not by a limit that should have stopped it
                detail = f"expected LimitExceeded({' or '.join(case.expect_limit)}), got {detail}"
        except Exception as exc:  # a crash, not a refusal
            detail = f"unclean {type(exc).__name__}: {exc}"
        t1 = time.process_time()
        try:
            freeze_file(case.path, {}, dst)
            refused, detail = False, detail + "; freeze_file succeeded"
        except LayerfreezeError:
            pass
        except Exception as exc:
            refused, detail = False, detail + f"; freeze_file unclean {type(exc).__name__}: {exc}"
        if dst.exists():
            refused, detail = False, detail + "; output file left behind"
        seconds = max(t1 - t0, time.process_time() - t1)  # each entry point on its own must be quick
        tally.outcomes.append(Outcome(case.name, refused, seconds, detail[:300], _ran(case)))
    return tally


def refuse_over_http(cases: list[Case], url: str, *, token: str | None = None, wait: int = 20) -> Tally:
    """POST each case with ?wait; a refusal is a 4xx problem+json, straight away or as the job's error.
    ``seconds`` is wall time: upload, queueing and the worker's refusal."""
    tally = Tally()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, timeout=120, headers=headers) as client:
        for case in cases:
            t0 = time.perf_counter()
            with case.path.open("rb") as fh:
                r = client.post(
                    "/v1/jobs",
                    params={"wait": wait},
                    data={"spec": "{}"},
                    files={"model": (case.filename or "model", fh, "application/octet-stream")},
                )
            seconds = time.perf_counter() - t0
            refused = 400 <= r.status_code < 500 and r.headers.get("content-type", "").startswith(
                "application/problem+json"
            )
            detail = f"{r.status_code} {r.text[:200]}"
            if r.status_code in (200, 202):
                detail = f"accepted: {r.status_code} {r.text[:200]}"
            tally.outcomes.append(Outcome(case.name, refused, seconds, detail, _ran(case)))
    return tally
