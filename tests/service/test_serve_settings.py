"""A bad setting stops ``layerfreeze serve`` with one line that names it (exit 78), never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from layerfreeze.cli import exit_codes
from layerfreeze.cli.main import main


def test_non_numeric_workers_names_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LAYERFREEZE_WORKERS", "abc")
    assert main(["serve"]) == exit_codes.CONFIG == 78
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("layerfreeze: error: invalid setting LAYERFREEZE_WORKERS='abc': ")
    assert "valid integer" in err


def test_several_bad_settings_on_one_line_and_options_named_as_options(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LAYERFREEZE_WORKERS", "0")
    monkeypatch.setenv("LAYERFREEZE_LOG_LEVEL", "loud")
    assert main(["serve", "--port", "70000"]) == 78
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "--port=70000: " in err
    assert "LAYERFREEZE_WORKERS='0': " in err
    assert "LAYERFREEZE_LOG_LEVEL='loud': log_level must be DEBUG" in err


def test_a_bad_token_setting_is_named_but_not_echoed(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LAYERFREEZE_TOKENS", "s3cret-no-tenant")
    assert main(["serve"]) == 78
    err = capsys.readouterr().err
    assert "LAYERFREEZE_TOKENS: tokens must look like" in err
    assert "s3cret" not in err


@pytest.mark.parametrize("module", ["layerfreeze.cli.main", "layerfreeze.server"])
def test_entry_points_exit_78_without_traceback(module: str, subprocess_env: dict[str, str]) -> None:
    argv = [sys.executable, "-m", module] + (["serve"] if module.endswith("main") else [])
    env = {**subprocess_env, "LAYERFREEZE_WORKERS": "abc"}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "LAYERFREEZE_WORKERS='abc'" in lines[0], result.stderr
