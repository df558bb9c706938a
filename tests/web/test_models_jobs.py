"""The page with model directories and with the stored-model and job lists, in a real headless Chromium
against the real service: a sharded safetensors model picked or dropped as a directory, frozen and
downloaded (its flags read back with torch); the model list a page at a time; deleting models and jobs,
a running job's 409 shown in place."""

from __future__ import annotations

import json
import os
import signal
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from web.page import (
    by_id,
    count,
    css,
    downloaded,
    page_errors,
    preview_settled,
    tree_row,
    wait_count,
    wait_for,
)

pytestmark = pytest.mark.server

PAGE = 50  # models the page asks for at a time


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT saved as sharded safetensors (index, several shards, config.json), and a hidden file
    that is no part of the model."""
    from multifile.hf import save_sharded, tiny_model

    directory = save_sharded(tiny_model("bert"), tmp_path_factory.mktemp("hf") / "tiny-bert", "safetensors")
    (directory / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    return directory


def _weights(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.suffix == ".safetensors")


def _press(driver: Any, *keys: str) -> Any:
    ActionChains(driver).send_keys(*keys).perform()
    return driver.switch_to.active_element


def test_pick_a_model_directory_run_and_download(browser: Any, service_url: str, bert_dir: Path,
                                                 downloads: Path, tmp_path: Path) -> None:
    from layerfreeze_client import apply
    from multifile.hf import model_class

    assert len(_weights(bert_dir)) >= 3
    browser.get(f"{service_url}/")
    by_id(browser, "folder").send_keys(str(bert_dir))
    wait_for(browser, lambda d: tree_row(d, "encoder").is_displayed(), "the whole model's tree", timeout=60)
    preview_settled(browser)
    info = by_id(browser, "model-info").text
    files = [p.name for p in bert_dir.iterdir() if not p.name.startswith(".")]
    assert f"model.safetensors.index.json + {len(files) - 1} files" in info
    total = count(browser, "count-trainable")
    assert total and count(browser, "count-frozen") == 0

    # The tree spans every shard: open the encoder and freeze the embeddings by a click.
    tree_row(browser, "encoder").find_element(By.CSS_SELECTOR, ".twisty").click()
    wait_for(browser, lambda d: tree_row(d, "encoder.layer").is_displayed(), "the encoder's children")
    tree_row(browser, "embeddings").find_element(By.CSS_SELECTOR, ".name").click()
    wait_for(browser, lambda d: (count(d, "count-frozen") or 0) > 0, "the embeddings to freeze")
    preview_settled(browser)
    frozen_numel = count(browser, "count-frozen")
    assert "state-frozen" in css(browser, 'li[data-key="m:embeddings"] > .row').get_attribute("class")

    by_id(browser, "run").click()
    wait_for(browser, lambda d: by_id(d, "downloads").is_displayed(), "the job to finish", timeout=60)
    assert "tar" in by_id(browser, "download-artifact").text
    listed = wait_for(browser, lambda d: by_id(d, "job-files").is_displayed()
                      and d.find_elements(By.CSS_SELECTOR, "#job-files-list a"), "the directory's files")
    assert sorted(a.text for a in listed) == sorted(files)

    # The whole directory as one tar: the files as uploaded, frozen where the report says.
    by_id(browser, "download-artifact").click()
    archive = downloaded(downloads)
    assert archive.name.endswith(".tar")
    out = tmp_path / "out"
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    (top,) = out.iterdir()
    assert sorted(p.name for p in top.iterdir()) == sorted(files)
    archive.unlink()
    by_id(browser, "download-report").click()
    report_path = downloaded(downloads)
    assert report_path.name.endswith(".report.json")
    report = json.loads(report_path.read_text())
    report_path.unlink()
    assert report["summary"]["numel_frozen"] == frozen_numel
    states = {p["name"]: p["requires_grad"] for p in report["parameters"]}
    assert {n for n, s in states.items() if not s} == {n for n in states if n.startswith("embeddings.")}

    loaded = model_class("bert").from_pretrained(top)
    apply(loaded, top)
    assert {n: p.requires_grad for n, p in loaded.named_parameters()} == states
    original = model_class("bert").from_pretrained(bert_dir)
    after = loaded.state_dict()
    for name, before in original.state_dict().items():
        assert torch.equal(before, after[name]), name

    # One file on its own, as the job's file list links it: the same bytes as in the tar.
    index = next(a for a in listed if a.text == "model.safetensors.index.json")
    index.click()
    single = downloaded(downloads)
    assert single.read_bytes() == (top / "model.safetensors.index.json").read_bytes()
    assert page_errors(browser) == []


def test_drop_a_model_directory(browser: Any, service_url: str, bert_dir: Path) -> None:
    """A folder dragged from the desktop: Chromium's own drag and drop of a real directory, walked with
    webkitGetAsEntry; the hidden file stays out, and the same directory is the same stored model."""
    browser.get(f"{service_url}/")
    wait_for(browser, lambda d: d.execute_script("return document.readyState") == "complete", "the page")
    box = browser.execute_script(
        "const r = document.getElementById('drop').getBoundingClientRect();"
        "return [r.x + r.width / 2, r.y + r.height / 2]")
    data = {"items": [], "files": [str(bert_dir)], "dragOperationsMask": 1}
    for kind in ("dragEnter", "dragOver", "drop"):
        browser.execute_cdp_cmd("Input.dispatchDragEvent", {"type": kind, "x": box[0], "y": box[1],
                                                             "data": data})
    wait_for(browser, lambda d: tree_row(d, "encoder").is_displayed(), "the dropped directory's tree",
             timeout=60)
    assert "tiny-bert" in by_id(browser, "status").text
    model_id = browser.execute_script(
        "return document.querySelector('#models li[aria-current=\"true\"]').dataset.id")
    stored = httpx.get(f"{service_url}/v1/models/{model_id}", timeout=10).json()
    files = sorted(p.name for p in bert_dir.iterdir() if not p.name.startswith("."))
    assert sorted(f["path"] for f in stored["files"]) == files


def test_directory_upload_progress(browser: Any, service_url: str, bert_dir: Path) -> None:
    """A directory sent slowly (throttled to 15 kB/s): one bar over all its files' bytes."""
    browser.get(f"{service_url}/")
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 15_000})
    by_id(browser, "folder").send_keys(str(bert_dir))
    bar = wait_for(browser, lambda d: by_id(d, "upload").is_displayed() and by_id(d, "upload-progress"),
                   "the progress bar")
    assert "tiny-bert" in by_id(browser, "upload-label").text
    assert "1 hidden file left out" in by_id(browser, "status").text
    seen: set[int] = set()
    wait_for(browser, lambda d: seen.add(int(bar.get_attribute("value"))) or 0 < max(seen) < 100,
             "a value between 0 and 100")
    wait_for(browser, lambda d: tree_row(d, "encoder").is_displayed(), "the model after the upload",
             timeout=60)
    assert not by_id(browser, "upload").is_displayed()


def _store(url: str, name: str, value: float) -> dict[str, Any]:
    import io

    buf = io.BytesIO()
    torch.save({"layer.weight": torch.full((2,), value)}, buf)
    r = httpx.post(f"{url}/v1/models", files={"file": (name, buf.getvalue())}, timeout=30)
    assert r.status_code in (200, 201), r.text
    return r.json()


def test_stored_models_a_page_at_a_time_and_deleted_by_keyboard(browser: Any, service_url: str) -> None:
    made = [_store(service_url, f"many-{i:02d}.pt", float(i)) for i in range(PAGE + 5)]
    browser.get(f"{service_url}/")
    rows = lambda d: d.find_elements(By.CSS_SELECTOR, "#models li")  # noqa: E731
    wait_for(browser, lambda d: len(rows(d)) == PAGE, "the first page of models")
    more = by_id(browser, "models-more")
    assert more.is_displayed()
    more.click()
    wait_for(browser, lambda d: len(rows(d)) >= PAGE + 5, "the next page")
    assert not more.is_displayed() or len(rows(browser)) > PAGE + 5
    shown = [li.get_attribute("data-id") for li in rows(browser)]
    assert all(m["id"] in shown for m in made)
    assert len(set(shown)) == len(shown)

    # Open one, then delete it with the keyboard: the question comes first, with Keep focused.
    victim = made[0]
    item = css(browser, f'#models li[data-id="{victim["id"]}"]')
    item.find_element(By.CSS_SELECTOR, "button.link").click()
    wait_count(browser, "count-trainable", 2)
    # One row is in the Tab order: Tab goes from its Open to its Delete, Up and Down between rows.
    opener = browser.switch_to.active_element
    assert opener.get_attribute("aria-label") == "Open model many-00.pt"
    tabbable = browser.execute_script(
        "return [...document.querySelectorAll('#models button')].filter((b) => b.tabIndex === 0).length")
    assert tabbable == 2
    above = _press(browser, Keys.ARROW_UP)
    assert above.get_attribute("aria-label") == "Open model many-01.pt"
    assert _press(browser, Keys.ARROW_DOWN) == opener
    delete = _press(browser, Keys.TAB)
    assert delete.get_attribute("aria-label") == "Delete model many-00.pt"
    keep = _press(browser, Keys.ENTER)
    assert keep.get_attribute("aria-label") == "Keep model many-00.pt"
    assert "Delete model many-00.pt?" in item.text
    back = _press(browser, Keys.ESCAPE)  # changed my mind: nothing deleted, focus back on Delete
    assert back.get_attribute("aria-label") == "Delete model many-00.pt"
    assert httpx.get(f"{service_url}/v1/models/{victim['id']}", timeout=10).status_code == 200
    _press(browser, Keys.ENTER)
    ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
    yes = browser.switch_to.active_element
    assert yes.get_attribute("aria-label") == "Yes, delete model many-00.pt"
    _press(browser, Keys.ENTER)
    wait_for(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, f'#models li[data-id="{victim["id"]}"]'),
             "the row to go")
    assert "Deleted model many-00.pt" in by_id(browser, "status").text
    assert httpx.get(f"{service_url}/v1/models/{victim['id']}", timeout=10).status_code == 404
    assert by_id(browser, "tree-empty").is_displayed()  # it was the model shown
    assert browser.switch_to.active_element.tag_name == "button"  # focus stays in the list
    assert page_errors(browser) == []


def test_delete_a_job_refused_while_it_runs(browser: Any, service: Any, tmp_path: Path) -> None:
    """A running job cannot be deleted: the 409 shows in its row, and the same question, asked again once
    it has finished, deletes it."""
    url = service.url
    model = _store(url, "job.pt", 42.0)
    (pid,) = service.worker_pids()
    os.kill(pid, signal.SIGSTOP)  # the next job hangs in its worker, deterministically
    try:
        job = httpx.post(f"{url}/v1/jobs", json={"model": model["id"], "spec": {}}, timeout=30).json()
        wait_for(None, lambda _d: httpx.get(f"{url}/v1/jobs/{job['id']}", timeout=10).json()["status"]
                 == "running", "the job to run")
        browser.get(f"{url}/")
        row = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, f'#jobs tr[data-id="{job["id"]}"]'),
                       "the job's row")
        assert "running" in row.text
        row.find_element(By.CSS_SELECTOR, "button.danger").click()
        css(browser, f'#jobs tr[data-id="{job["id"]}"] .confirm button.danger').click()
        error = wait_for(browser, lambda d: d.find_element(
            By.CSS_SELECTOR, f'#jobs tr[data-id="{job["id"]}"] .row-error').text, "the error in place")
        assert "409" in error and "running" in error
        assert error == css(browser, f'#jobs tr[data-id="{job["id"]}"] [role=alert]').text
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(None, lambda _d: httpx.get(f"{url}/v1/jobs/{job['id']}", timeout=10).json()["status"]
             == "succeeded", "the job to finish", timeout=60)
    css(browser, f'#jobs tr[data-id="{job["id"]}"] .confirm button.danger').click()  # asked again
    wait_for(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, f'#jobs tr[data-id="{job["id"]}"]'),
             "the job's row to go")
    assert httpx.get(f"{url}/v1/jobs/{job['id']}", timeout=10).status_code == 404
