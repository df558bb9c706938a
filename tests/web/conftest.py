"""Fixtures for the page's tests: one real service for the module, a headless Chromium per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.server import running_service

from web.browser import chromium, require_browser


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory, subprocess_env: dict[str, str]) -> Iterator[str]:
    with running_service(tmp_path_factory.mktemp("web-service"), subprocess_env, workers="1") as url:
        yield url


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    path = tmp_path / "downloads"
    path.mkdir()
    return path


@pytest.fixture
def browser(downloads: Path) -> Iterator[Any]:
    require_browser()
    with chromium(downloads) as driver:
        yield driver
