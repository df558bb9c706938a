"""One real service process with two tenants for the stored-model tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fixtures.modes import MODES, service_in_mode

TOKENS = {"alice": "t-alice", "bob": "t-bob"}


@pytest.fixture(scope="module", params=MODES)
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            subprocess_env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    """The embedded mode, then the same tests in the distributed mode (fixtures.modes)."""
    root = tmp_path_factory.mktemp(f"stored-models-{request.param}")
    tokens = ",".join(f"{token}:{tenant}" for tenant, token in TOKENS.items())
    with service_in_mode(request, root, subprocess_env, workers="1", tokens=tokens) as svc:
        yield svc.url, svc.data_dir


def client(url: str, tenant: str = "alice") -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60, headers={"authorization": f"Bearer {TOKENS[tenant]}"})
