"""The web page in a real headless Chromium, against the real service: upload, tree, rules, errors, run,
download; then the downloaded checkpoint's flags, read back with torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from web.page import (
    by_id,
    count,
    css,
    downloaded,
    page_errors,
    preview_settled,
    save_module,
    small_cnn,
    tree_row,
    upload,
    wait_count,
    wait_for,
)
from web.proxy import CuttingProxy

pytestmark = pytest.mark.server

TOTAL = 276  # elements in small_cnn()
FEATURES = 240  # Conv2d 3->8 k3 (224) + BatchNorm2d(8) (16)
BIASES = 8 + 8 + 4


def _type(element: Any, text: str) -> None:
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(text)


def test_upload_tree_rules_error_run_download(browser: Any, service_url: str, downloads: Path,
                                              tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    model = small_cnn()
    path = save_module(model, tmp_path / "cnn.pt")
    browser.get(f"{service_url}/")
    assert by_id(browser, "tree-empty").is_displayed()

    upload(browser, path)
    wait_count(browser, "count-trainable", TOTAL)
    assert count(browser, "count-frozen") == 0
    assert "cnn.pt" in css(browser, '#models li[aria-current="true"]').text

    # Expand a module by its twisty: its children appear, rendered only now.
    features = tree_row(browser, "features")
    assert features.get_attribute("aria-expanded") == "false"
    assert not browser.find_elements(By.CSS_SELECTOR, 'li[data-key="m:features.1"]')
    features.find_element(By.CSS_SELECTOR, ".twisty").click()
    wait_for(browser, lambda d: tree_row(d, "features.1").is_displayed(), "features' children")
    assert "BatchNorm2d" in tree_row(browser, "features.1").text

    # Clicking a module adds a rule that freezes it; the preview updates the counts and the tree.
    features.find_element(By.CSS_SELECTOR, ".name").click()
    assert '"features"' in by_id(browser, "spec-json").get_attribute("value")
    assert by_id(browser, "r0-v0").get_attribute("value") == "features"
    wait_count(browser, "count-frozen", FEATURES)
    wait_count(browser, "count-trainable", TOTAL - FEATURES)
    wait_for(browser, lambda d: "state-frozen" in css(d, 'li[data-key="m:features"] > .row').get_attribute(
        "class"), "the features row to turn frozen")
    assert "state-partial" in css(browser, 'li[data-key="m:"] > .row').get_attribute("class")
    # BatchNorm inside the frozen region: a warning in place, and a marker on its row.
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-code="batchnorm_in_frozen_region"]'),
             "the BatchNorm warning")
    assert tree_row(browser, "features.1").find_elements(By.CSS_SELECTOR, ".warn")

    # A typo: the error appears beside the value its pointer names, with clickable suggestions.
    by_id(browser, "rule-add").click()
    value = by_id(browser, "r1-v0")
    assert browser.switch_to.active_element == value
    assert by_id(browser, "err-r1-v0").text == ""  # no error for a rule not yet written
    value.send_keys("haed")
    error = wait_for(browser, lambda d: "haed" in by_id(d, "err-r1-v0").text and by_id(d, "err-r1-v0"),
                     "the error beside rule 1's value")
    assert value.get_attribute("aria-invalid") == "true"
    assert by_id(browser, "run").get_attribute("disabled")
    suggestion = next(b for b in error.find_elements(By.CSS_SELECTOR, "button.suggest") if b.text == "head")
    suggestion.click()
    wait_for(browser, lambda d: by_id(d, "r1-v0").get_attribute("value") == "head", "the suggestion to apply")
    wait_count(browser, "count-frozen", TOTAL)
    assert by_id(browser, "err-r1-v0").text == ""
    assert by_id(browser, "r1-v0").get_attribute("aria-invalid") is None

    # A third rule edited in the raw JSON: the rows follow.
    spec_json = by_id(browser, "spec-json")
    _type(spec_json, '{"rules": [{"action": "freeze", "names": ["features"]}, {"action": "freeze", "names": '
                     '["head"]}, {"action": "unfreeze", "params": ["bias"]}]}')
    wait_for(browser, lambda d: d.find_elements(By.ID, "r2-kind"), "the row of the JSON's third rule")
    assert Select(by_id(browser, "r2-kind")).first_selected_option.text == "params"
    assert Select(by_id(browser, "r2-action")).first_selected_option.text == "unfreeze"
    wait_count(browser, "count-trainable", BIASES)

    # Run it, then download the checkpoint.
    by_id(browser, "run").click()
    wait_for(browser, lambda d: by_id(d, "downloads").is_displayed(), "the job to finish", timeout=60)
    assert "done" in by_id(browser, "run-state").text
    job_id = by_id(browser, "run-state").text.split()[-1]
    assert job_id in by_id(browser, "cmd-curl").get_attribute("value")
    assert "submit_stored" in by_id(browser, "cmd-python").get_attribute("value")
    wait_for(browser, lambda d: "succeeded" in by_id(d, "jobs").text, "the job list to show it")
    by_id(browser, "download-artifact").click()
    artifact = downloaded(downloads)

    frozen = torch.load(artifact, weights_only=False)  # our own model, round-tripped: safe to load here
    flags = {name: p.requires_grad for name, p in frozen.named_parameters()}
    assert flags == {name: name.endswith("bias") for name, _ in model.named_parameters()}
    after = frozen.state_dict()
    for name, before in model.state_dict().items():
        assert torch.equal(before, after[name]), name

    artifact_bytes = artifact.read_bytes()
    artifact.unlink()
    by_id(browser, "download-report").click()
    report = downloaded(downloads)
    assert report.name.endswith(".report.json")
    parsed = json.loads(report.read_text())
    assert parsed["summary"]["numel_trainable"] == BIASES
    assert page_errors(browser) == []

    # The commands the page shows do the same: run them as they are.
    shell = tmp_path / "curl"
    shell.mkdir()
    curl = by_id(browser, "cmd-curl").get_attribute("value")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", curl], cwd=shell, capture_output=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    assert (shell / "report.json").is_file()
    assert (shell / artifact.name).read_bytes() == artifact_bytes
    python = tmp_path / "python"
    python.mkdir()
    code = by_id(browser, "cmd-python").get_attribute("value") + "\nprint(path)\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=python, env=subprocess_env, capture_output=True,
                          timeout=60, check=False, text=True)
    assert done.returncode == 0, done.stderr
    assert (python / done.stdout.strip()).read_bytes() == artifact_bytes


def test_keyboard_only(browser: Any, service_url: str, downloads: Path, tmp_path: Path) -> None:
    """Pick a stored model, open the tree, add a rule, run and download without a mouse."""
    path = save_module(small_cnn(), tmp_path / "keyboard.pt")
    with path.open("rb") as f:
        stored = httpx.post(f"{service_url}/v1/models", files={"file": ("keyboard.pt", f)}, timeout=30)
    assert stored.status_code in (200, 201), stored.text
    model_id = stored.json()["id"]
    browser.get(f"{service_url}/")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'#models li[data-id="{model_id}"]'),
             "the stored models")

    def press(*keys: str) -> Any:
        ActionChains(browser).send_keys(*keys).perform()
        return browser.switch_to.active_element

    def tab_to(predicate: Any, what: str, limit: int = 60) -> Any:
        for _ in range(limit):
            active = press(Keys.TAB)
            if predicate(active):
                return active
        raise AssertionError(f"Tab never reached {what}")

    def in_row(element: Any) -> str | None:
        return browser.execute_script("return arguments[0].closest('li')?.dataset.id || null", element)

    opener = tab_to(lambda e: (e.get_attribute("aria-label") or "").startswith("Open model"),
                    "the stored models' Open buttons")
    for _ in range(60):  # one row of the list is in the Tab order; Down moves to the next row
        if in_row(opener) == model_id:
            break
        opener = press(Keys.ARROW_DOWN)
    assert in_row(opener) == model_id
    press(Keys.ENTER)
    wait_for(browser, lambda d: tree_row(d, "").is_displayed(), "the tree of the picked model")
    wait_count(browser, "count-trainable", TOTAL)

    root = tab_to(lambda e: e.get_attribute("role") == "treeitem", "the tree")
    assert root.get_attribute("data-key") == "m:"
    features = press(Keys.ARROW_DOWN)
    assert features.get_attribute("data-key") == "m:features"
    press(Keys.SPACE)
    assert features.get_attribute("aria-expanded") == "true"
    assert press(Keys.ARROW_DOWN).get_attribute("data-key") == "m:features.0"
    assert press(Keys.ARROW_LEFT).get_attribute("data-key") == "m:features"  # back to the parent
    press(Keys.ENTER)  # a rule that freezes it
    wait_count(browser, "count-frozen", FEATURES)
    preview_settled(browser)

    tab_to(lambda e: e.get_attribute("id") == "run", "the run button")
    press(Keys.ENTER)
    wait_for(browser, lambda d: by_id(d, "downloads").is_displayed(), "the job to finish", timeout=60)
    assert browser.switch_to.active_element.get_attribute("id") == "download-artifact"
    press(Keys.ENTER)
    frozen = torch.load(downloaded(downloads), weights_only=False)
    flags = {name: p.requires_grad for name, p in frozen.named_parameters()}
    assert flags == {name: name.startswith("head") for name in flags}
    assert page_errors(browser) == []


def test_warning_in_place_with_its_suggestions(browser: Any, service_url: str, tmp_path: Path) -> None:
    """strict off: a value that matches nothing is a warning beside that value, not an error."""
    browser.get(f"{service_url}/")
    upload(browser, save_module(small_cnn(), tmp_path / "warn.pt"))
    _type(by_id(browser, "spec-json"),
          '{"rules": [{"action": "freeze", "names": ["head", "nope"]}], "strict": false}')
    warning = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#err-r0-v1 .warning"),
                       "the warning beside the dead value")
    assert "nope" in warning.text
    assert not by_id(browser, "strict").is_selected()
    wait_count(browser, "count-frozen", 36)
    assert by_id(browser, "spec-errors").text == ""
    next(b for b in warning.find_elements(By.CSS_SELECTOR, "button.suggest") if b.text == "features").click()
    wait_count(browser, "count-frozen", TOTAL)
    assert by_id(browser, "r0-v1").get_attribute("value") == "features"
    assert not browser.find_elements(By.CSS_SELECTOR, "#err-r0-v1 .warning")


@pytest.mark.parametrize("fmt", ["state_dict", "safetensors", "torchscript"])
def test_other_formats(browser: Any, service_url: str, tmp_path: Path, fmt: str) -> None:
    """Files that record no module types (or record them differently) still give a tree and a preview."""
    from fixtures.models import save

    path = save(small_cnn(), tmp_path / f"other.{'safetensors' if fmt == 'safetensors' else 'pt'}", fmt,
                example=torch.zeros(1, 3, 3, 3))
    browser.get(f"{service_url}/")
    upload(browser, path)
    wait_count(browser, "count-trainable", TOTAL)
    tree_row(browser, "head").find_element(By.CSS_SELECTOR, ".name").click()
    wait_count(browser, "count-frozen", 36)
    assert "state-frozen" in css(browser, 'li[data-key="m:head"] > .row').get_attribute("class")
    assert page_errors(browser) == []


def test_the_newest_edit_wins(browser: Any, service_url: str, tmp_path: Path) -> None:
    """Edits faster than the previews answer (300 ms of latency): the tree ends at the last edit."""
    browser.get(f"{service_url}/")
    upload(browser, save_module(small_cnn(), tmp_path / "race.pt"))
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": 300, "downloadThroughput": -1, "uploadThroughput": -1})
    specs = ['{"rules": [{"action": "freeze", "names": ["head"]}]}',
             '{"rules": [{"action": "freeze", "names": ["features"]}]}',
             '{"rules": [{"action": "freeze", "names": ["features.1", "head"]}]}',
             '{"rules": [{"action": "freeze", "names": ["features.0"]}]}']
    browser.execute_async_script("""
        const [specs, done] = [arguments[0], arguments[1]];
        const area = document.getElementById('spec-json');
        let i = 0;
        const next = () => {
          area.value = specs[i++];
          area.dispatchEvent(new Event('input', {bubbles: true}));
          if (i < specs.length) setTimeout(next, 200); else done();
        };
        next();""", specs)
    preview_settled(browser)
    wait_count(browser, "count-frozen", 224)  # features.0 only: the Conv2d
    assert "state-partial" in css(browser, 'li[data-key="m:features"] > .row').get_attribute("class")
    assert "state-trainable" in css(browser, 'li[data-key="m:head"] > .row').get_attribute("class")
    assert by_id(browser, "r0-v0").get_attribute("value") == "features.0"


def test_cancel_an_upload(browser: Any, service_url: str, tmp_path: Path) -> None:
    from torch import nn

    path = save_module(nn.Linear(1000, 1000), tmp_path / "cancelled.pt")  # 4 MB at 1 MB/s
    browser.get(f"{service_url}/")
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 1_000_000})
    by_id(browser, "file").send_keys(str(path))
    wait_for(browser, lambda d: int(by_id(d, "upload-progress").get_attribute("value")) >= 10, "progress")
    by_id(browser, "upload-cancel").click()
    wait_for(browser, lambda d: "cancelled" in by_id(d, "status").text, "the cancellation")
    assert not by_id(browser, "upload").is_displayed()
    assert "error" not in by_id(browser, "status").get_attribute("class")
    pending = browser.execute_script("return Object.keys(sessionStorage).filter(k => k.includes('upload'))")
    assert pending == []  # nothing left to resume
    stored = httpx.get(f"{service_url}/v1/models", timeout=10).json()["items"]
    assert all(m["files"][0]["path"] != "cancelled.pt" for m in stored)


def test_names_are_text_never_markup(browser: Any, service_url: str, tmp_path: Path) -> None:
    """A parameter name with markup in it (names come from the uploaded file) is shown as text."""
    hostile = '<img src=x onerror="alert(1)">'
    path = tmp_path / "hostile.pt"
    torch.save({f"{hostile}.weight": torch.ones(2), "ok.weight": torch.ones(3)}, path)
    browser.get(f"{service_url}/")
    upload(browser, path)
    wait_count(browser, "count-trainable", 5)
    row = tree_row(browser, hostile)
    assert hostile in row.text
    row.find_element(By.CSS_SELECTOR, ".name").click()
    wait_count(browser, "count-frozen", 2)
    assert browser.execute_script("return document.querySelectorAll('img').length") == 0
    assert browser.title == "layerfreeze"
    assert page_errors(browser) == []


def test_every_control_has_a_label(browser: Any, service_url: str, tmp_path: Path) -> None:
    browser.get(f"{service_url}/")
    upload(browser, save_module(small_cnn(), tmp_path / "labels.pt"))
    by_id(browser, "rule-add").click()
    unlabelled = browser.execute_script("""
        const named = (e) => (e.labels && e.labels.length) || e.getAttribute('aria-label')
          || e.getAttribute('aria-labelledby') || (e.tagName === 'BUTTON' && e.textContent.trim())
          || (e.tagName === 'A' && e.textContent.trim());
        return [...document.querySelectorAll('input, select, textarea, button, a[href]')]
          .filter((e) => !named(e)).map((e) => e.outerHTML.slice(0, 120));
    """)
    assert unlabelled == []
    items = browser.find_elements(By.CSS_SELECTOR, "[role=treeitem]")
    assert items and all(i.get_attribute("aria-label") for i in items)
    assert sum(i.get_attribute("tabindex") == "0" for i in items) == 1  # one tab stop for the whole tree


def test_big_model_renders_on_demand(browser: Any, service_url: str, tmp_path: Path) -> None:
    """10,000 parameters in 5,000 modules: only the rows on screen exist, and a rule still previews."""
    from torch import nn

    model = nn.Sequential(*[nn.Linear(1, 1) for _ in range(5000)])
    path = save_module(model, tmp_path / "big.pt")
    browser.get(f"{service_url}/")
    upload(browser, path)
    wait_count(browser, "count-trainable", 10_000)
    rows = browser.find_elements(By.CSS_SELECTOR, "[role=treeitem]")
    assert len(rows) == 1 + 200  # the root and the first page of its children
    more = css(browser, ".more button")
    assert "4,800" in more.text
    more.click()
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "[role=treeitem]")) == 1 + 400,
             "the next page of children")
    tree_row(browser, "250").find_element(By.CSS_SELECTOR, ".name").click()
    wait_count(browser, "count-frozen", 2)
    assert "state-frozen" in css(browser, 'li[data-key="m:250"] > .row').get_attribute("class")
    assert page_errors(browser) == []


def test_drop_a_file(browser: Any, service_url: str, tmp_path: Path) -> None:
    """The drop handler, fed what a drag from the desktop gives it (a DataTransfer of files)."""
    path = save_module(small_cnn(), tmp_path / "dropped.pt")
    browser.get(f"{service_url}/")
    browser.execute_script("""
        const input = document.createElement('input');
        input.type = 'file'; input.id = 'probe'; input.hidden = true; document.body.append(input);""")
    by_id(browser, "probe").send_keys(str(path))  # only to get a File object into the page
    browser.execute_script("""
        const dt = new DataTransfer();
        dt.items.add(document.getElementById('probe').files[0]);
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true,
          cancelable: true}));""")
    wait_for(browser, lambda d: "dropped.pt" in by_id(d, "model-info").text, "the dropped model to load")
    wait_count(browser, "count-trainable", TOTAL)


def test_upload_progress(browser: Any, service_url: str, tmp_path: Path) -> None:
    """A slow upload (throttled to 2 MB/s) shows its progress bar moving, then the model."""
    from torch import nn

    model = nn.Sequential(nn.Linear(1000, 1000), nn.BatchNorm1d(1000))  # about 4 MB
    path = save_module(model, tmp_path / "slow.pt")
    browser.get(f"{service_url}/")
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 2_000_000})
    by_id(browser, "file").send_keys(str(path))
    bar = wait_for(browser, lambda d: by_id(d, "upload").is_displayed() and by_id(d, "upload-progress"),
                   "the progress bar")
    seen = set()
    wait_for(browser, lambda d: seen.add(int(bar.get_attribute("value"))) or 0 < max(seen) < 100,
             "a value between 0 and 100")
    assert "slow.pt" in by_id(browser, "upload-label").text
    wait_for(browser, lambda d: tree_row(d, "").is_displayed(), "the model after the upload")
    assert not by_id(browser, "upload").is_displayed()
    wait_count(browser, "count-trainable", 1000 * 1000 + 1000 + 2000)


def test_upload_resumes_after_the_connection_drops(browser: Any, service_url: str, tmp_path: Path) -> None:
    """tus: the connection drops during the second 8 MiB piece; the page asks where the upload stands and
    goes on from there, not from the start."""
    from torch import nn

    model = nn.Linear(1750, 1750)  # 12.3 MB: two pieces
    path = save_module(model, tmp_path / "resumed.pt")
    port = int(service_url.rsplit(":", 1)[1])
    proxy = CuttingProxy(("127.0.0.1", port))
    try:
        browser.get(f"http://127.0.0.1:{proxy.port}/")
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 4_000_000})
        by_id(browser, "file").send_keys(str(path))
        bar = by_id(browser, "upload-progress")
        wait_for(browser, lambda d: int(bar.get_attribute("value")) >= 75, "the second piece to be under way")
        assert proxy.cut() > 0
        notes: list[str] = []

        def resumed(driver: Any) -> bool:
            notes.append(by_id(driver, "status").text)
            return "resuming at" in notes[-1]

        wait_for(browser, resumed, "the page to resume")
        wait_for(browser, lambda d: tree_row(d, "").is_displayed(), "the model after the resumed upload",
                 timeout=60)
    finally:
        proxy.close()
    offset = int(notes[-1].split("resuming at ")[1].split(" bytes")[0].replace(",", ""))
    assert offset > 8 * 1024 * 1024  # the first piece and part of the second were kept
    wait_count(browser, "count-trainable", 1750 * 1750 + 1750)
