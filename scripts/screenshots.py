"""Regenerate docs/img/web-*.png: the web page in its main states (empty, a tree, an error, done, a model
directory).

Starts the service on 127.0.0.1 with a fresh data directory, drives a headless Chromium through the page
and saves one screenshot per state. Run with ``make screenshots`` (needs scripts/install-browser.sh).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATHS = [str(ROOT / "service"), str(ROOT / "clients" / "python"), str(ROOT / "tests"), str(ROOT)]
sys.path[:0] = PATHS

from fixtures.server import running_service  # noqa: E402
from web.browser import chromium, missing_browser  # noqa: E402
from web.page import by_id, css, preview_settled, tree_row, upload, wait_count, wait_for  # noqa: E402

OUT = ROOT / "docs" / "img"
SIZE = (1200, 860)


def demo_model(path: Path) -> Path:
    import torch
    from torch import nn

    def block(c: int) -> nn.Module:
        return nn.Sequential(OrderedDict(conv=nn.Conv2d(c, c, 3, padding=1), bn=nn.BatchNorm2d(c),
                                         act=nn.ReLU()))

    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(
        stem=nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
        blocks=nn.Sequential(block(16), block(16), block(16)),
        head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)),
    ))
    torch.save(model, path)
    return path


def shoot(driver: object, name: str) -> None:
    path = OUT / f"web-{name}.png"
    driver.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    driver.save_screenshot(str(path))
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB)")


def main() -> int:
    reason = missing_browser()
    if reason:
        print(f"screenshots: {reason}", file=sys.stderr)
        return 1
    from selenium.webdriver.common.by import By

    OUT.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(PATHS)}
    with tempfile.TemporaryDirectory(prefix="layerfreeze-shots-") as tmp:
        work = Path(tmp)
        (work / "downloads").mkdir()
        model = demo_model(work / "resnet-ish.pt")
        with running_service(work, env, workers="1") as url, chromium(work / "downloads") as driver:
            driver.set_window_size(*SIZE)
            driver.get(f"{url}/")
            wait_for(driver, lambda d: d.execute_script("return document.readyState") == "complete", "load")
            shoot(driver, "empty")

            upload(driver, model)
            for path in ("blocks", "blocks.0"):
                tree_row(driver, path).find_element(By.CSS_SELECTOR, ".twisty").click()
            tree_row(driver, "stem").find_element(By.CSS_SELECTOR, ".name").click()
            preview_settled(driver)  # the preview redraws the tree
            tree_row(driver, "blocks.0").find_element(By.CSS_SELECTOR, ".name").click()
            wait_count(driver, "count-frozen", 480 + 2352)  # stem and blocks.0
            preview_settled(driver)
            shoot(driver, "tree")

            by_id(driver, "rule-add").click()
            by_id(driver, "r2-v0").send_keys("blocks.1.cnov")
            wait_for(driver, lambda d: by_id(d, "err-r2-v0").text, "the error")
            shoot(driver, "error")

            css(driver, "#err-r2-v0 button.suggest").click()
            preview_settled(driver)
            by_id(driver, "run").click()
            wait_for(driver, lambda d: by_id(d, "downloads").is_displayed(), "the job", timeout=60)
            wait_for(driver, lambda d: "succeeded" in by_id(d, "jobs").text, "the job list")
            css(driver, "details.commands summary").click()
            driver.set_window_size(SIZE[0], 1100)
            driver.execute_script("document.activeElement.blur()")
            driver.execute_script("document.querySelector('.run-panel').scrollIntoView()")
            path = OUT / "web-done.png"
            driver.save_screenshot(str(path))
            print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB)")

            directory_shot(driver, url, work)
    return 0


def directory_shot(driver: object, url: str, work: Path) -> None:
    """A sharded model directory (a tiny random BERT), picked as a folder, frozen, its files listed."""
    from multifile.hf import save_sharded, tiny_model
    from selenium.webdriver.common.by import By

    folder = save_sharded(tiny_model("bert"), work / "tiny-bert", "safetensors")
    driver.set_window_size(SIZE[0], 1500)
    driver.get(f"{url}/")
    by_id(driver, "folder").send_keys(str(folder))
    wait_for(driver, lambda d: tree_row(d, "encoder").is_displayed(), "the directory's tree", timeout=60)
    preview_settled(driver)
    for path in ("encoder", "encoder.layer"):
        tree_row(driver, path).find_element(By.CSS_SELECTOR, ".twisty").click()
    tree_row(driver, "embeddings").find_element(By.CSS_SELECTOR, ".name").click()
    preview_settled(driver)
    tree_row(driver, "encoder.layer.0").find_element(By.CSS_SELECTOR, ".name").click()
    preview_settled(driver)
    by_id(driver, "run").click()
    wait_for(driver, lambda d: by_id(d, "job-files").is_displayed(), "the directory's files", timeout=60)
    shoot(driver, "directory")


if __name__ == "__main__":
    raise SystemExit(main())
