"""Schemathesis against the live service's OpenAPI document: no 5xx, every response as documented.

The CI run is derandomized (the same requests every time), so the strict xfail below is stable."""

from __future__ import annotations

import pytest

from stress import api_fuzz

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def report(service) -> api_fuzz.ApiFuzzReport:  # type: ignore[no-untyped-def]
    pytest.importorskip("schemathesis")
    rep = api_fuzz.run(service.url, max_examples=15, derandomize=True)
    for failure, n in rep.failures.most_common():
        print(f"{n:4d}  {failure}")
    print(
        f"{rep.operations} operations, {rep.requests} requests, {rep.server_errors} 5xx, {rep.seconds:.1f}s"
    )
    assert service.alive()
    return rep


def test_no_server_error(report: api_fuzz.ApiFuzzReport) -> None:
    assert report.operations >= 9 and report.requests >= 9 * 5
    assert report.server_errors == 0


@pytest.mark.xfail(
    strict=True,
    reason="400 answers are not in the OpenAPI document: GET /v1/jobs with an invalid cursor, POST /v1/jobs "
    "with a repeated form field ('the form field ... appears more than once')",
)
def test_responses_conform_to_the_schema(report: api_fuzz.ApiFuzzReport) -> None:
    assert not report.failures, dict(report.failures)
