"""The local ``layerfreeze`` CLI on realistic files, as a user runs it (a child process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from fixtures.models import build, save

from realistic.test_layouts import lightning


def _cli(env: dict[str, str], *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "layerfreeze.cli.main", *args], env=env, capture_output=True,
                          text=stdin is None, input=stdin, timeout=120, check=False)


def test_lightning_checkpoint_into_a_directory(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    src = tmp_path / "epoch=3.ckpt"
    torch.save(lightning(), src)
    out_dir = tmp_path / "frozen"
    out_dir.mkdir()
    spec = json.dumps({"rules": [{"action": "freeze", "names": ["model.0", "model.1"]}]})
    done = _cli(subprocess_env, "freeze", str(src), "--spec-json", spec, "-o", str(out_dir),
                "--report", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stderr
    assert "wrote epoch=3.frozen.ckpt" in done.stdout and "partial" in done.stdout
    out = out_dir / "epoch=3.frozen.ckpt"
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["output"]["filename"] == out.name
    assert {p["name"] for p in report["parameters"] if not p["requires_grad"]} == {
        "model.0.weight", "model.0.bias", "model.1.weight", "model.1.bias"}
    assert out.stat().st_size == report["output"]["bytes"]


def test_spec_from_stdin_with_a_byte_order_mark(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    src = save(build("seq12"), tmp_path / "m.safetensors", "safetensors")
    spec = "\ufeff" + json.dumps({"rules": [{"action": "freeze", "names": ["0"]}]})
    done = _cli(subprocess_env, "freeze", str(src), "--spec", "-", "-o", str(tmp_path / "o.safetensors"),
                "--json", stdin=spec.encode("utf-8"))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {p["name"] for p in report["parameters"] if not p["requires_grad"]} == {"0.weight", "0.bias"}


def test_errors_exit_non_zero_and_write_nothing(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    src = tmp_path / "m.pt"
    torch.save(build("cnn"), src)
    out = tmp_path / "o.pt"
    typo = _cli(subprocess_env, "freeze", str(src), "--spec-json",
                json.dumps({"rules": [{"action": "freeze", "names": ["2"]}]}), "-o", str(out))
    assert typo.returncode != 0 and "without parameters" in typo.stderr
    as_dir = _cli(subprocess_env, "freeze", str(tmp_path), "--spec-json", "{}", "-o", str(out))
    assert as_dir.returncode != 0 and "directory" in as_dir.stderr
    notes = tmp_path / "notes.pt"
    torch.save({"epoch": 1}, notes)
    no_model = _cli(subprocess_env, "inspect", str(notes))
    assert no_model.returncode != 0 and "no state dict" in no_model.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "notes.pt"]
