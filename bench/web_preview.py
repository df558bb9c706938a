"""How fast the web page follows an edit on a model with 10,000 parameters, and where the time goes.

    python bench/web_preview.py [--modules 5000] [--edits 10]

A ``Sequential`` of ``--modules`` ``Linear(1, 1)`` (two parameters each) is stored on a fresh service; then,
side by side in one run:
1. the service alone, from Python (median over the specs the clicks below make, one rule to ``--edits``
   rules): the full preview (the report, every parameter's row) and the columnar view the page asks for
   (``?view=columns``);
2. the page: a click on a module row until the counts show the new state (median; seen from Selenium,
   and measured inside the page from the edit to the counts drawn), and the page's own work after the
   answer arrives (laying the states over the tree's visible rows and the counts).
Needs Chromium (scripts/install-browser.sh).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATHS = [str(ROOT / "service"), str(ROOT / "clients" / "python"), str(ROOT / "tests"), str(ROOT)]
sys.path[:0] = PATHS

import httpx  # noqa: E402
from fixtures.server import running_service  # noqa: E402
from web.browser import chromium, missing_browser  # noqa: E402
from web.page import preview_settled, tree_row, upload, wait_count  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=5000)
    parser.add_argument("--edits", type=int, default=10)
    args = parser.parse_args()
    if reason := missing_browser():
        print(f"web_preview: {reason}", file=sys.stderr)
        return 1
    import torch
    from selenium.webdriver.common.by import By
    from torch import nn

    with tempfile.TemporaryDirectory(prefix="layerfreeze-bench-web-") as tmp:
        work = Path(tmp)
        (work / "downloads").mkdir()
        path = work / "wide.pt"
        torch.save(nn.Sequential(*[nn.Linear(1, 1) for _ in range(args.modules)]), path)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(PATHS)}
        with running_service(work, env, workers="1") as url, chromium(work / "downloads") as driver:
            started = time.monotonic()
            driver.get(f"{url}/")
            upload(driver, path)
            loaded = time.monotonic() - started
            preview_settled(driver)
            model = httpx.get(f"{url}/v1/models", timeout=30).json()["items"][0]["id"]

            timings: dict[str, list[float]] = {"": [], "?view=columns": []}
            sizes: dict[str, int] = {}
            for i in range(args.edits):  # the specs the page's clicks below make: one rule more each
                spec = {"rules": [{"action": "freeze", "names": [str(k)]} for k in range(i + 1)]}
                for view, times in timings.items():  # alternating, so that both see the same load
                    t = time.monotonic()
                    answer = httpx.post(f"{url}/v1/models/{model}/preview{view}", json=spec, timeout=60)
                    times.append(time.monotonic() - t)
                    answer.raise_for_status()
                    sizes[view] = len(answer.content)

            page_s, render_ms, edit_ms = [], [], []
            for i in range(args.edits):
                row = tree_row(driver, str(i)).find_element(By.CSS_SELECTOR, ".name")
                t = time.monotonic()
                row.click()
                wait_count(driver, "count-frozen", 2 * (i + 1))
                page_s.append(time.monotonic() - t)
                preview_settled(driver)
                body = driver.find_element(By.TAG_NAME, "body")
                render_ms.append(int(body.get_attribute("data-render-ms")))
                edit_ms.append(int(body.get_attribute("data-edit-ms")))

    full = statistics.median(timings[""])
    columns = statistics.median(timings["?view=columns"])
    page = statistics.median(page_s)
    render = statistics.median(render_ms) / 1000
    print(f"model: {args.modules:,} modules, {2 * args.modules:,} parameters")
    print(f"upload, read and first tree:          {loaded:6.2f} s")
    print(f"service, full preview (median):       {full:6.3f} s   {sizes['']:>10,} bytes")
    print(f"service, columnar view (median):      {columns:6.3f} s   {sizes['?view=columns']:>10,} bytes"
          f"   ({full / columns:.1f}x faster, {sizes[''] / sizes['?view=columns']:.0f}x smaller)")
    edit = statistics.median(edit_ms) / 1000
    print(f"page, click to counts (median):       {page:6.3f} s   ({page / full:.2f}x the full preview; "
          "seen by polling every 50 ms)")
    print(f"page, edit to counts, in the page:    {edit:6.3f} s   ({edit / full:.2f}x the full preview)")
    print(f"page's own work after the answer:     {render:6.3f} s   ({render / page:.0%} of the click)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
