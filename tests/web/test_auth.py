"""The page on a service with tokens: a token field, the token kept for the tab only, each tenant's own
models, and downloads that carry the token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fixtures.server import running_service
from selenium.webdriver.common.by import By

from web.page import by_id, downloaded, save_module, small_cnn, tree_row, upload, wait_count, wait_for

pytestmark = pytest.mark.server


def test_token_field_tenants_and_download(browser: Any, tmp_path: Path, subprocess_env: dict[str, str],
                                          downloads: Path) -> None:
    with running_service(tmp_path, subprocess_env, workers="1", tokens="tok-alice:alice,tok-bob:bob") as url:
        theirs = save_module(small_cnn(), tmp_path / "bobs.pt")
        with theirs.open("rb") as f:
            answer = httpx.post(f"{url}/v1/models", files={"file": ("bobs.pt", f)},
                                headers={"Authorization": "Bearer tok-bob"}, timeout=30)
        assert answer.status_code == 201, answer.text

        browser.get(f"{url}/")
        wait_for(browser, lambda d: by_id(d, "auth").is_displayed(), "the token field")
        assert "token" in by_id(browser, "status").text
        by_id(browser, "token").send_keys("tok-alice")
        by_id(browser, "auth").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for(browser, lambda d: "Token set" in by_id(d, "status").text, "the token to be taken")
        assert browser.execute_script("return sessionStorage.getItem('layerfreeze.token')") == "tok-alice"
        assert browser.execute_script("return localStorage.length") == 0
        assert by_id(browser, "token").get_attribute("value") == ""  # not left in the field

        upload(browser, save_module(small_cnn(), tmp_path / "alices.pt"))
        wait_count(browser, "count-trainable", 276)
        labels = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#models li")]
        assert any("alices.pt" in label for label in labels)
        assert not any("bobs.pt" in label for label in labels)  # bob's model stays his
        assert "Authorization: Bearer $LAYERFREEZE_TOKEN" in by_id(browser, "cmd-curl").get_attribute("value")

        tree_row(browser, "head").find_element(By.CSS_SELECTOR, ".name").click()
        wait_count(browser, "count-frozen", 36)
        by_id(browser, "run").click()
        wait_for(browser, lambda d: by_id(d, "downloads").is_displayed(), "the job to finish", timeout=60)
        by_id(browser, "download-artifact").click()  # fetched with the token, saved from a blob
        artifact = downloaded(downloads)
        assert artifact.name.startswith("alices")
        frozen = torch.load(artifact, weights_only=False)
        assert {n: p.requires_grad for n, p in frozen.named_parameters()} == {
            n: not n.startswith("head") for n, _ in frozen.named_parameters()}

        browser.execute_script("sessionStorage.clear()")  # a new tab knows no token
        by_id(browser, "models-refresh").click()
        wait_for(browser, lambda d: "needs a token" in by_id(d, "status").text, "the 401 to show")
