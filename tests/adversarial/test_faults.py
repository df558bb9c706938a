"""Crash, full-disk and corrupt-database faults against a live service (see stress/faults.py).

The scenarios run once (module fixture, about a minute); each test then holds one scenario's verdict."""

from __future__ import annotations

import pytest

from adversarial._support import require
from stress import faults

pytestmark = [pytest.mark.server, pytest.mark.heavy]

# scenario -> reason, for faults the service is known to fail (held as strict xfails); empty: all hold
KNOWN: dict[str, str] = {}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, faults.Result]:
    require("layerfreeze.server")
    results = faults.run(tmp_path_factory.mktemp("faults"))
    for r in results.values():
        print(f"{'ok ' if r.ok else 'BAD'} {r.case:34s} {r.seconds:6.1f}s  {r.detail[:160]}")
    return results


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=KNOWN[s])) if s in KNOWN else s
        for s in faults.SCENARIOS
    ],
)
def test_fault(scenario: str, outcomes: dict[str, faults.Result]) -> None:
    r = outcomes[scenario]
    assert r.ok, f"{r.case}: {r.detail}"
