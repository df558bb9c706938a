"""What the tests and the screenshot script do on the page: bounded waits, and the model they upload."""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from web.browser import WAIT_S


def small_cnn() -> Any:
    """features (Conv2d, BatchNorm2d, ReLU) and head (Flatten, Linear): 276 elements in 8 tensors."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        features=nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()),
        head=nn.Sequential(nn.Flatten(), nn.Linear(8, 4)),
    ))


def save_module(model: Any, path: Path) -> Path:
    import torch

    torch.save(model, path)
    return path


def wait_for(driver: Any, condition: Any, what: str, timeout: float = WAIT_S) -> Any:
    """``condition(driver)`` once truthy; a clear failure after ``timeout`` seconds."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
                         ).until(condition, message=f"timed out after {timeout} s waiting for {what}")


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def tree_row(driver: Any, path: str, param: bool = False) -> Any:
    """The tree's row of a module (or parameter) by its name, whatever characters the name has."""
    from selenium.common.exceptions import NoSuchElementException

    key = f"{'p' if param else 'm'}:{path}"
    row = driver.execute_script(
        "return [...document.querySelectorAll('li[role=treeitem]')]"
        ".find((li) => li.dataset.key === arguments[0]) || null", key)
    if row is None:
        raise NoSuchElementException(f"no tree row {key!r}")
    return row


def count(driver: Any, element_id: str) -> int | None:
    """The element count a summary chip shows ("1,234 (5 tensors)" -> 1234); None while it shows none."""
    text = by_id(driver, element_id).text.split(" ")[0].replace(",", "")
    return int(text) if text.isdigit() else None


def wait_count(driver: Any, element_id: str, expected: int) -> None:
    wait_for(driver, lambda d: count(d, element_id) == expected, f"#{element_id} to show {expected}")


def upload(driver: Any, path: Path) -> None:
    """Give the page's file field a model and wait for its tree."""
    by_id(driver, "file").send_keys(str(path))
    wait_for(driver, lambda d: tree_row(d, "").is_displayed(), "the module tree")
    preview_settled(driver)


def preview_settled(driver: Any) -> None:
    """The last preview has answered (ok or an error)."""
    wait_for(driver, lambda d: d.find_element("tag name", "body").get_attribute("data-preview")
             in ("ok", "error", "idle"), "the preview to answer")


def downloaded(directory: Path, timeout: float = WAIT_S) -> Path:
    """The one finished download in ``directory`` (Chromium writes ``*.crdownload`` until done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = [p for p in directory.iterdir() if p.is_file()]
        done = [p for p in files if not p.name.endswith(".crdownload") and p.stat().st_size > 0]
        if done and len(done) == len(files):
            return done[0]
        time.sleep(0.1)
    left = sorted(p.name for p in directory.iterdir())
    raise AssertionError(f"no finished download in {directory} after {timeout} s: {left}")


def page_errors(driver: Any) -> list[str]:
    """Script errors and Content-Security-Policy violations in the browser's console (failed requests
    with a 4xx status are expected where a test provokes them, so they are not counted)."""
    entries = driver.get_log("browser")
    return [e["message"] for e in entries
            if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]
