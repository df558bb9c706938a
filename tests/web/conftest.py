"""Fixtures for the page's tests: one real service and one headless Chromium per module; each test gets a
fresh tab (its own sessionStorage, no network throttling left over) and its own download folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.server import Service

from web.browser import chromium, require_browser


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, subprocess_env: dict[str, str]) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("web-service")
    with Service(root / "data", {"workers": "1"}, env=subprocess_env, log=root / "server.log") as svc:
        yield svc


@pytest.fixture(scope="module")
def service_url(service: Service) -> str:
    return service.url


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    path = tmp_path / "downloads"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def module_browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require_browser()
    with chromium(tmp_path_factory.mktemp("downloads")) as driver:
        yield driver


@pytest.fixture
def browser(module_browser: Any, downloads: Path) -> Any:
    driver = module_browser
    old = driver.window_handles
    driver.switch_to.new_window("tab")
    fresh = driver.current_window_handle
    for handle in old:
        driver.switch_to.window(handle)
        driver.close()
    driver.switch_to.window(fresh)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(downloads)})
    driver.get_log("browser")  # what earlier tests logged is theirs
    return driver
