"""The ``layerfreeze`` command, in process (``main(argv)``) and once as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from fixtures.models import build, save
from layerfreeze.cli import exit_codes
from layerfreeze.cli.main import main
from layerfreeze.errors import (
    ArchiveError,
    FormatError,
    LayerfreezeError,
    LimitExceeded,
    SpecError,
    UnsafePickleError,
)


class Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def model_file(tmp_path):
    return save(build("cnn"), tmp_path / "cnn.pt", "module")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_freeze_writes_checkpoint_and_report(capsys, tmp_path, model_file):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"rules": [{"action": "freeze", "children": {"of": "", "stop": 3}}]}))
    out, report = tmp_path / "cnn.frozen.pt", tmp_path / "report.json"
    code, stdout, stderr = run(capsys, "freeze", model_file, "--spec", spec, "-o", out, "--report", report)
    assert code == 0, stderr
    assert out.exists() and stderr == ""
    data = json.loads(report.read_text())
    assert data["output"]["filename"] == "cnn.frozen.pt"
    assert {p["name"]: p["requires_grad"] for p in data["parameters"]}["0.weight"] is False
    # the readable tree: every module with its state, plus totals and the BatchNorm warning
    assert "frozen" in stdout and "partial" in stdout and "BatchNorm2d" in stdout
    assert "batchnorm_in_frozen_region" in stdout
    assert f"{data['summary']['trainable']} (" in stdout


def test_inspect_json_and_depth(capsys, model_file):
    code, stdout, _ = run(capsys, "inspect", model_file, "--json")
    assert code == 0
    report = json.loads(stdout)
    assert report["format"] == "torch.module" and report["output"] is None
    assert report["summary"]["frozen"] == 0
    code, stdout, _ = run(capsys, "inspect", model_file, "--depth", "0")
    assert code == 0 and "(model)" in stdout and "deeper modules not shown" in stdout


def test_dry_run_and_inline_spec(capsys, tmp_path, model_file):
    before = set(tmp_path.iterdir())
    code, stdout, _ = run(capsys, "freeze", model_file, "--spec-json", '{"rules": [{"action": "freeze", '
                          '"types": ["BatchNorm2d"]}]}', "--dry-run", "--json")
    assert code == 0
    assert json.loads(stdout)["summary"]["frozen"] == 4
    assert set(tmp_path.iterdir()) == before


def test_spec_errors_exit_3_with_pointer_and_suggestion(capsys, tmp_path, model_file):
    out = tmp_path / "never.pt"
    code, stdout, stderr = run(capsys, "freeze", model_file, "--spec-json",
                               '{"rules": [{"action": "freeze", "types": ["BatchNorm"]}]}', "-o", out)
    assert code == exit_codes.BY_CLASS[SpecError] == 3
    assert "/rules/0/types/0" in stderr and "BatchNorm2d" in stderr
    assert "Traceback" not in stderr and stdout == ""
    assert not out.exists()
    code, _, stderr = run(capsys, "freeze", model_file, "--spec-json", "{bad", "-o", out)
    assert code == 3 and "JSON" in stderr


def test_unsafe_pickle_exits_5_and_never_runs(capsys, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": Evil(str(marker))}, evil)
    code, _, stderr = run(capsys, "inspect", evil)
    assert code == exit_codes.BY_CLASS[UnsafePickleError] == 5
    assert "system" in stderr and "Traceback" not in stderr
    assert not marker.exists()


def test_other_failures_have_their_own_codes(capsys, tmp_path, model_file):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(256))
    code, _, stderr = run(capsys, "inspect", junk)
    assert code in {exit_codes.BY_CLASS[c] for c in (FormatError, ArchiveError)} | {6, 7, 8}
    assert stderr.startswith("layerfreeze: error:")
    code, _, stderr = run(capsys, "inspect", tmp_path / "missing.pt")
    assert code == exit_codes.NO_INPUT and "missing.pt" in stderr
    code, _, stderr = run(capsys, "freeze", model_file, "--spec-json", "{}", "-o", tmp_path / "no" / "dir.pt")
    assert code == exit_codes.IO_ERROR and "output directory" in stderr


def test_usage_errors_exit_2(capsys, tmp_path, model_file):
    for argv in (["freeze", model_file, "--spec-json", "{}"],  # neither -o nor --dry-run
                 ["freeze", model_file, "--spec-json", "{}", "-o", model_file],  # would overwrite input
                 ["freeze", model_file, "-o", tmp_path / "x.pt"],  # no spec
                 ["frobnicate"]):
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in argv])
        assert info.value.code == 2
    capsys.readouterr()


def test_exit_codes_resolve_by_mro():
    class CustomSpecProblem(SpecError):
        pass

    assert exit_codes.exit_code_for(CustomSpecProblem("x")) == 3
    assert exit_codes.exit_code_for(LimitExceeded("x", limit="y")) == 9
    assert exit_codes.exit_code_for(RuntimeError("bug")) == exit_codes.INTERNAL
    ours = [c for cls, c in exit_codes.BY_CLASS.items() if issubclass(cls, LayerfreezeError)]
    assert len(ours) == len(set(ours)) and exit_codes.INTERNAL not in ours


def test_entry_point_runs_as_a_subprocess(subprocess_env, tmp_path):
    src = save(build("seq3"), tmp_path / "seq3.safetensors", "safetensors")
    out = tmp_path / "seq3.frozen.safetensors"
    done = subprocess.run(
        [sys.executable, "-m", "layerfreeze.cli.main", "freeze", str(src), "--spec-json",
         '{"rules": [{"action": "freeze", "names": ["0"]}]}', "-o", str(out)],
        env=subprocess_env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert out.exists() and "safetensors" in done.stdout


def test_serve_is_a_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    assert "127.0.0.1" in capsys.readouterr().out
