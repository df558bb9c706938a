"""Raw-socket abuse of the upload and download endpoints: 4xx or a clean close, quickly; the service
stays up and responsive; nothing is left on disk."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from adversarial._support import require
from stress import abuse
from stress.server import Service

CAP = 4 << 20

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def small_cap_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    require("layerfreeze.server")
    cap = {"LAYERFREEZE_MAX_UPLOAD_BYTES": str(CAP)}
    with Service(tmp_path_factory.mktemp("abuse") / "data", cap) as svc:
        svc.warm_up()
        yield svc


def test_abuse_cases(small_cap_service: Service) -> None:
    results = abuse.run(small_cap_service, CAP)
    for r in results:
        print(f"{'ok ' if r.ok else 'BAD'} {r.case:42s} {r.status!s:5s} {r.seconds:6.3f}s {r.detail[:80]!r}")
    assert len(results) >= 20
    bad = [r for r in results if not r.ok]
    assert not bad, bad
    assert httpx.get(small_cap_service.url + "/readyz", timeout=5).status_code == 200
    assert not abuse.leftovers(small_cap_service)
