"""One real service process with two tenants for the stored-model tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fixtures.server import running_service

TOKENS = {"alice": "t-alice", "bob": "t-bob"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory,
            subprocess_env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("stored-models")
    tokens = ",".join(f"{token}:{tenant}" for tenant, token in TOKENS.items())
    with running_service(root, subprocess_env, workers="1", tokens=tokens) as url:
        yield url, root / "data"


def client(url: str, tenant: str = "alice") -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60, headers={"authorization": f"Bearer {TOKENS[tenant]}"})
