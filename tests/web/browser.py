"""A headless Chromium driven by Selenium, for the page's browser tests and the screenshots.

Debian's ``chromium`` and ``chromium-driver`` (``scripts/install-browser.sh``); nothing is downloaded at run
time. Without them the tests skip and say why, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("LAYERFREEZE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("LAYERFREEZE_CHROMEDRIVER", "/usr/bin/chromedriver"))
WAIT_S = 20.0
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--disable-extensions", "--disable-default-apps", "--mute-audio",
         "--window-size=1280,900", "--force-device-scale-factor=1", "--lang=en-US")


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    absent = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if absent:
        return (f"Chromium or its driver is not installed ({', '.join(absent)}): "
                "run scripts/install-browser.sh")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the Python package selenium is not installed: pip install -e '.[test]'"
    return None


def require_browser() -> None:
    """Skip (with the reason) when the browser is absent; in CI fail instead, so nothing passes unseen."""
    reason = missing_browser()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"CI must run the browser tests: {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def chromium(downloads: Path) -> Iterator[Any]:
    """A fresh headless Chromium (own profile directory) that saves downloads into ``downloads``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="layerfreeze-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads), "download.prompt_for_download": False,
        "download.directory_upgrade": True, "safebrowsing.enabled": False,
    })
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        driver.set_page_load_timeout(WAIT_S)
        driver.set_script_timeout(WAIT_S)
        driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                               {"behavior": "allow", "downloadPath": str(downloads)})
        yield driver
    finally:
        driver.quit()
        import shutil

        shutil.rmtree(profile, ignore_errors=True)
