"""Schema-driven API fuzzing (schemathesis) of a live service's /openapi.json.

Every operation gets ``max_examples`` generated requests; each response must not be a 5xx and must
conform to the schema (status code, content type, body, headers). Failures are grouped by check.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from hypothesis import HealthCheck, given, settings

CHECK_NAMES = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)


@dataclass
class ApiFuzzReport:
    operations: int = 0
    requests: int = 0
    server_errors: int = 0
    seconds: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)  # "METHOD path: check: message" -> count

    @property
    def ok(self) -> bool:
        return not self.failures and self.server_errors == 0


def _seed_jobs(url: str) -> None:
    """A finished job and a dry run, so list, report and artifact routes have something real to return."""
    import torch

    buf = io.BytesIO()
    torch.save(torch.nn.Linear(3, 3).state_dict(), buf)
    with httpx.Client(base_url=url, timeout=60) as c:
        for dry in ("false", "true"):
            c.post(
                "/v1/jobs",
                params={"wait": 30},
                data={"spec": "{}", "dry_run": dry},
                files={"model": ("seed.pt", buf.getvalue())},
            )


def run(url: str, max_examples: int = 25, *, derandomize: bool = False) -> ApiFuzzReport:
    import schemathesis
    from schemathesis import checks

    selected = tuple(getattr(checks, name) for name in CHECK_NAMES)
    _seed_jobs(url)
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    report = ApiFuzzReport()
    t0 = time.perf_counter()
    cfg = settings(
        max_examples=max_examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    for result in schema.get_all_operations():
        op = result.ok()
        report.operations += 1
        cfg(given(op.as_strategy())(_checker(url, f"{op.method.upper()} {op.path}", report, selected)))()
    report.seconds = time.perf_counter() - t0
    return report


def _checker(url: str, label: str, report: ApiFuzzReport, selected: tuple) -> object:
    def one(case: object) -> None:
        response = case.call(base_url=url, timeout=30)  # type: ignore[attr-defined]
        report.requests += 1
        if response.status_code >= 500:
            report.server_errors += 1
        try:
            case.validate_response(response, checks=selected)  # type: ignore[attr-defined]
        except BaseException as exc:  # a FailureGroup (BaseExceptionGroup): one line per failure
            for line in _failure_lines(exc):
                report.failures[f"{label}: {line}"] += 1

    return one


def _failure_lines(exc: BaseException) -> list[str]:
    inner = getattr(exc, "exceptions", None) or [exc]
    out = []
    for e in inner:
        title = getattr(e, "title", None) or type(e).__name__
        msg = (getattr(e, "message", None) or str(e)).strip().splitlines()
        out.append(f"{title}: {msg[0][:160] if msg else ''}")
    return out
