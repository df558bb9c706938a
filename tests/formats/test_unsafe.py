"""Malicious pickles in every container are refused, name what they reach for, and never run.

Each payload would create a marker file; after the refusal the marker must not exist.
"""

from __future__ import annotations

import collections
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from layerfreeze.errors import FormatError, UnsafePickleError
from layerfreeze.formats.detect import open_archive
from torch import nn

from formats.hostile import (
    ResolvesName,
    RunsCommand,
    getattr_chain_pickle,
    pickle_bytes,
    protocol0_inst_pickle,
    stack_global_pickle,
    zip_with_data_pkl,
)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


def refuse(path: Path, marker: Path, *, names: str | None = None) -> UnsafePickleError:
    with pytest.raises(UnsafePickleError) as info:
        open_archive(path)
    assert not marker.exists(), "the payload ran"
    if names is not None:
        assert names in str(info.value) and info.value.global_name is not None
        assert names in info.value.global_name
        assert info.value.offset is not None and f"byte {info.value.offset}" in str(info.value)
    return info.value


def test_the_payload_is_real(tmp_path: Path, marker: Path) -> None:
    """Control: the same bytes do run code under pickle.loads (in a child process)."""
    blob = tmp_path / "evil.pkl"
    blob.write_bytes(pickle_bytes(RunsCommand(marker), 2))
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.loads(open({str(blob)!r}, 'rb').read())"],
                   check=True, timeout=60)
    assert marker.exists()


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_raw_pickle_any_protocol(tmp_path: Path, marker: Path, protocol: int) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(pickle_bytes(RunsCommand(marker), protocol))
    err = refuse(path, marker, names="system")
    assert "a checkpoint never needs that" in str(err)


def test_zip_pt_state_dict_with_payload(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "model.pt"
    sd = collections.OrderedDict(weight=torch.ones(2), evil=RunsCommand(marker))
    torch.save(sd, path)
    refuse(path, marker, names="system")


def test_legacy_pt_with_payload(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "x": RunsCommand(marker)}, path,
               _use_new_zipfile_serialization=False)
    refuse(path, marker, names="system")


def test_nested_deep_in_a_checkpoint(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {"w": torch.ones(1)},
                "callbacks": {"a": [{"b": (1, RunsCommand(marker))}]}}, path)
    refuse(path, marker, names="system")


class Carrier(nn.Module):
    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.payload = RunsCommand(marker)


def test_inside_a_whole_module(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "module.pt"
    torch.save(Carrier(marker), path)
    refuse(path, marker, names="system")


@pytest.mark.parametrize("memo_trick", [False, True])
def test_stack_global(tmp_path: Path, marker: Path, memo_trick: bool) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(stack_global_pickle("os", "system", f"touch {marker}", memo_trick=memo_trick))
    refuse(path, marker, names="os.system")
    # and inside a torch zip archive
    zpath = zip_with_data_pkl(tmp_path / "m.pt", path.read_bytes())
    refuse(zpath, marker, names="os.system")


def test_getattr_chain(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(getattr_chain_pickle(marker))
    refuse(path, marker, names="builtins.getattr")


def test_pkgutil_resolve_name(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(stack_global_pickle("pkgutil", "resolve_name", "os:system"))
    refuse(path, marker, names="pkgutil.resolve_name")


def test_resolve_name_through_pickle_dumps(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(pickle.dumps(ResolvesName(marker), protocol=2))
    refuse(path, marker)


def test_protocol0_inst(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(protocol0_inst_pickle(marker))
    refuse(path, marker, names="os.system")


@pytest.mark.parametrize(
    ("module", "name"),
    [("torch", "load"), ("torch.hub", "load"), ("torch.jit", "load"), ("torch.serialization", "load"),
     ("subprocess", "Popen"), ("runpy", "run_path"), ("importlib", "import_module"), ("timeit", "timeit"),
     ("pip", "main"), ("shutil", "rmtree"), ("code", "interact"), ("webbrowser", "open"),
     ("builtins", "eval"), ("builtins", "exec"), ("operator", "attrgetter"), ("functools", "partial")],
)
def test_refused_globals(tmp_path: Path, marker: Path, module: str, name: str) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(stack_global_pickle(module, name, f"touch {marker}"))
    refuse(path, marker, names=f"{module}.{name}")


def test_calling_an_allowed_class_is_refused(tmp_path: Path) -> None:
    """A module class may be named (and built empty), never called: a 1 KB file must not ask for a
    40 GB nn.Linear."""
    path = tmp_path / "m.bin"
    blob = (b"\x80\x02ctorch.nn.modules.linear\nLinear\nJ\x00\x00\x01\x00J\x00\x00\x01\x00\x86R.")
    path.write_bytes(blob)
    err = refuse(path, tmp_path / "unused", names="torch.nn.modules.linear.Linear")
    assert "calls" in str(err)


def test_newobj_with_arguments_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(b"\x80\x02ccollections\nCounter\nK\x01\x85\x81.")
    refuse(path, tmp_path / "unused", names="collections.Counter")


def test_extension_registry_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(b"\x80\x02\x82\x01.")  # EXT1 1
    refuse(path, tmp_path / "unused")


def test_plain_harmless_pickle_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(pickle.dumps({"a": [1, 2, 3]}, protocol=2))
    with pytest.raises(FormatError, match="not a PyTorch checkpoint") as info:
        open_archive(path)
    assert not isinstance(info.value, UnsafePickleError)


def test_torchscript_constants_pickle_is_checked_too(tmp_path: Path, marker: Path) -> None:
    payload = pickle_bytes(RunsCommand(marker), 2)
    path = zip_with_data_pkl(tmp_path / "ts.pt", b"\x80\x02}q\x00.", extra={
        "constants.pkl": payload, "code/__torch__/m.py": b"class M(Module):\n  __parameters__ = []\n"})
    refuse(path, marker, names="system")


def test_torchscript_class_code_is_never_run(tmp_path: Path, marker: Path) -> None:
    """Only the __parameters__/__buffers__ literals are read; anything else in code/ is inert text."""
    code = (f"import os\nos.system('touch {marker}')\nclass M(Module):\n"
            f"  __parameters__ = [__import__('os').system('touch {marker}')]\n").encode()
    data = b"\x80\x02c__torch__.m\nM\n)\x81}b."
    path = zip_with_data_pkl(tmp_path / "ts.pt", data, extra={"constants.pkl": b"\x80\x02).",
                                                              "code/__torch__/m.py": code})
    with pytest.raises(FormatError):
        open_archive(path)
    assert not marker.exists()
