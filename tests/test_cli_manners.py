"""The ``layerfreeze`` command behaves like a Unix tool: files as ``cp`` makes them, a short tree by default,
quiet when its reader goes away, warnings that point into the spec."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.models import build, save, tiny_bert
from layerfreeze.cli.main import DEFAULT_DEPTH, main

from testing.files import umask


def layerfreeze(*args: str, env: dict[str, str], **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "layerfreeze.cli.main", *args], env=env, text=True,
                            stderr=subprocess.PIPE, **kwargs)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_output_and_report_follow_the_umask_like_cp(tmp_path: Path, mask: int,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    src = save(build("seq3"), tmp_path / "m.pt", "state_dict")
    out, report = tmp_path / "out.pt", tmp_path / "report.json"
    with umask(mask):
        code = main(["freeze", str(src), "--spec-json", '{"rules": [{"action": "freeze", "names": ["0"]}]}',
                     "-o", str(out), "--report", str(report), "-q"])
        (tmp_path / "by-cp").write_bytes(b"")  # what open() (and so cp) makes under this umask
    assert code == 0, capsys.readouterr().err
    expected = stat.S_IMODE((tmp_path / "by-cp").stat().st_mode)
    assert expected == 0o666 & ~mask
    assert stat.S_IMODE(out.stat().st_mode) == expected
    assert stat.S_IMODE(report.stat().st_mode) == expected


def test_the_tree_has_a_default_depth_and_says_how_to_see_more(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_bert()
    if model is None:
        pytest.skip("transformers not installed")
    src = save(model, tmp_path / "bert.pt", "module")
    deepest = max(p.count(".") + 1 for p, _ in model.named_modules() if p)

    assert main(["inspect", str(src)]) == 0
    short = capsys.readouterr().out
    assert "  encoder" in short and "    layer" in short and "attention" not in short
    assert f"--depth {DEFAULT_DEPTH + 1} shows one more level, --depth all shows every module" in short
    assert len(short.splitlines()) < 40

    assert main(["inspect", str(src), "--depth", "all"]) == 0
    full = capsys.readouterr().out
    assert "not shown" not in full
    assert all(f"{'  ' * p.count('.')}  {p.rsplit('.', 1)[-1]} " in full
               for p, _ in model.named_modules() if p)
    assert deepest > DEFAULT_DEPTH

    assert main(["inspect", str(src), "--depth", "1"]) == 0
    assert "--depth 2 shows one more level" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["inspect", str(src), "--depth", "deep"])
    assert info.value.code == 2 and "'all'" in capsys.readouterr().err


def test_a_closed_pipe_ends_it_quietly_like_cat(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """``layerfreeze inspect m.pt | head -0``: the reader is gone before the first line."""
    src = save(build("transformer"), tmp_path / "t.pt", "module")
    proc = layerfreeze("inspect", str(src), "--depth", "all", env=subprocess_env, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()  # no reader left: the first write meets a broken pipe
    _, err = proc.communicate(timeout=120)
    assert err == ""  # no "Broken pipe", no traceback
    assert proc.returncode == -signal.SIGPIPE  # what cat does; a shell shows 141

    shell = subprocess.run(["sh", "-c", f'"{sys.executable}" -m layerfreeze.cli.main inspect "{src}" '
                            '--depth all | head -n 1'],
                           env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert shell.returncode == 0 and shell.stderr == "" and len(shell.stdout.splitlines()) == 1


def test_a_value_that_matches_nothing_shows_in_the_table(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    src = save(build("seq3"), tmp_path / "m.pt", "state_dict")
    spec = {"rules": [{"action": "freeze", "names": ["head", "0", "classifier"]}]}
    assert main(["freeze", str(src), "--spec-json", json.dumps(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "warning [unmatched_value]: /rules/0/names/0: name pattern 'head' matches no parameter" in out
    assert "/rules/0/names/2" in out and "did you mean" in out
