"""docs/configuration.md is generated from Settings: it must be current, complete and name real variables."""

from __future__ import annotations

import pytest
from layerfreeze.settings import Settings
from layerfreeze.settings_doc import REGENERATE, main, missing_descriptions, render, rows
from pydantic import ValidationError


def test_configuration_page_is_up_to_date(repo_root):
    page = repo_root / "docs" / "configuration.md"
    current = page.read_text(encoding="utf-8") if page.exists() else ""
    assert current == render(), f"docs/configuration.md is out of date; regenerate it with: {REGENERATE}"


def test_every_setting_has_a_description():
    missing = missing_descriptions()
    assert not missing, f"add Field(description=...) in settings.py for {missing}, then run: {REGENERATE}"


def test_every_documented_variable_is_read_by_the_service(monkeypatch):
    """Setting a documented variable changes the settings (or is refused): the names are the real ones."""
    default = Settings().model_dump()
    for var, _, _ in rows():
        with monkeypatch.context() as env:
            env.setenv(var, "not-a-value!")
            try:
                changed = Settings().model_dump() != default
            except ValidationError:
                changed = True
        assert changed, f"{var} is documented but Settings does not read it"


def test_check_mode_reports_a_stale_page(tmp_path, capsys):
    page = tmp_path / "configuration.md"
    assert main([str(page)]) == 0
    assert main([str(page), "--check"]) == 0
    page.write_text(page.read_text(encoding="utf-8").replace("LAYERFREEZE_PORT", "LAYERFREEZE_PROT"))
    assert main([str(page), "--check"]) == 1
    assert "make docs" in capsys.readouterr().err


@pytest.mark.parametrize(("var", "shown"), [("LAYERFREEZE_MAX_UPLOAD_BYTES", "`8589934592` (8 GiB)"),
                                           ("LAYERFREEZE_RETENTION_S", "`604800` (7 days)"),
                                           ("LAYERFREEZE_TOKENS", "empty")])
def test_defaults_are_shown_readably(var, shown):
    assert dict((v, d) for v, d, _ in rows())[var] == shown
