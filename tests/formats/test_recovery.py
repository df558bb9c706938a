"""How the model is found inside a pickle: recorded flags, aliases vs shared storage, checkpoint layouts,
pickle protocols, and the kinds rule shared by weight-only formats."""

from __future__ import annotations

import collections
import warnings
from pathlib import Path

import pytest
import torch
from layerfreeze.core.kinds import tensor_kind
from layerfreeze.errors import FormatError
from layerfreeze.formats.detect import open_archive
from torch import nn

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.BatchNorm1d(3), nn.Linear(3, 1))


def _load_any(path: Path, trusted: bool = False) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, weights_only=not trusted)


@pytest.mark.parametrize("zipped", [True, False])
@pytest.mark.parametrize("protocol", [1, 2, 3, 4, 5])
def test_keep_vars_state_dict_records_flags_in_every_protocol(tmp_path: Path, protocol: int,
                                                              zipped: bool) -> None:
    model = _net()
    model[0].weight.requires_grad_(False)
    src, dst = tmp_path / "sd.bin", tmp_path / "out.bin"
    torch.save(model.state_dict(keep_vars=True), src, pickle_protocol=protocol,
               _use_new_zipfile_serialization=zipped)
    archive = open_archive(src)
    flags = {t.name: t.requires_grad for t in archive.inventory.tensors}
    assert flags["0.weight"] is False and flags["0.bias"] is True and flags["2.running_mean"] is False
    final = {"0.weight": True, "0.bias": False, "2.weight": False, "2.bias": True, "3.weight": True,
             "3.bias": False}
    archive.write(dst, final, "0" * 64)
    # torch's own weights_only loader reads protocols 2 and 3 only; the others are loaded trusted here
    loaded = _load_any(dst, trusted=protocol not in (2, 3))
    assert {k: v.requires_grad for k, v in loaded.items() if k in final} == final
    assert not loaded["2.running_mean"].requires_grad
    assert {t.name: t.requires_grad for t in open_archive(dst).inventory.tensors if t.name in final} == final


def test_views_of_one_storage_are_shared_not_aliases(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32)
    sd = collections.OrderedDict(a=base[:6], b=base[6:], c=base[:6].view(2, 3), same=base[:6])
    path = tmp_path / "views.pt"
    torch.save(sd, path)
    inv = open_archive(path).inventory
    tensors = {t.name: t for t in inv.tensors}
    assert list(tensors) == ["a", "b", "c"]  # 'same' is a, the very same tensor object
    assert tensors["a"].aliases == ("same",)
    assert tensors["b"].aliases == () and tensors["c"].aliases == ()
    assert len({t.storage for t in inv.tensors}) == 1  # all share one storage


def test_equal_views_saved_separately_are_aliases(tmp_path: Path) -> None:
    base = torch.arange(6, dtype=torch.float32)
    sd = {"x": base.view(2, 3), "y": base.view(2, 3)}  # two tensor objects, identical view
    path = tmp_path / "v.pt"
    torch.save(sd, path)
    inv = open_archive(path).inventory
    assert [(t.name, t.aliases) for t in inv.tensors] == [("x", ("y",))]


def test_checkpoint_with_a_whole_module_under_model(tmp_path: Path) -> None:
    model = _net()
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 1, "model": model, "optimizer": torch.optim.SGD(model.parameters()).state_dict()},
               path)
    inv = open_archive(path).inventory
    assert inv.format == "torch.checkpoint" and inv.prefix == "model" and inv.types_known
    assert [t.name for t in inv.tensors if t.kind == "parameter"] == [n for n, _ in model.named_parameters()]
    assert "epoch" in inv.notes[0] and "optimizer" in inv.notes[0]


class AttributeDict(dict):
    """Like Lightning's hyper-parameter container: a dict subclass pickled by NEWOBJ + SETITEMS."""


class LitModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = _net()


def test_lightning_layout_keeps_the_model_prefix(tmp_path: Path) -> None:
    lit = LitModule()
    path = tmp_path / "lit.ckpt"
    opt = torch.optim.Adam(lit.parameters())
    lit(torch.randn(4, 3)) if False else None
    torch.save({"epoch": 2, "global_step": 10, "pytorch-lightning_version": "2.4.0",
                "state_dict": lit.state_dict(), "loops": {"fit_loop": {"state_dict": {}}},
                "callbacks": {}, "optimizer_states": [opt.state_dict()], "lr_schedulers": [],
                "hyper_parameters": AttributeDict(lr=0.1, layers=[3, 3])}, path)
    inv = open_archive(path).inventory
    assert inv.format == "torch.checkpoint" and inv.prefix == "state_dict"
    assert inv.tensors[0].name == "model.0.weight"
    assert inv.children_exact and inv.modules[1].path == "model"
    assert "hyper_parameters" in inv.notes[0]


def test_state_dict_nested_under_an_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"meta": {"name": "x"}, "my_weights": _net().state_dict()}, path)
    inv = open_archive(path).inventory
    assert inv.prefix == "my_weights" and inv.tensors[0].name == "0.weight"


def test_hand_built_dict_without_metadata_has_inexact_children(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"enc.0.weight": torch.ones(2), "head.weight": torch.ones(2)}, path)
    inv = open_archive(path).inventory
    assert not inv.children_exact
    assert [m.path for m in inv.modules] == ["", "enc", "enc.0", "head"]


def test_checkpoint_without_tensors_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"epoch": 3, "notes": ["a"]}, path)
    with pytest.raises(FormatError, match="no state dict or module"):
        open_archive(path)


def test_all_frozen_plain_state_dict_reads_back_frozen_from_its_state_member(tmp_path: Path) -> None:
    """Plain tensors with every flag False look like state_dict(): the output's .data/layerfreeze.json
    says they were frozen; a state dict that never went through a freeze still starts trainable."""
    src, dst = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save(_net().state_dict(), src)
    archive = open_archive(src)
    assert all(t.requires_grad is None for t in archive.inventory.tensors if t.kind == "parameter")
    archive.write(dst, {t.name: False for t in archive.inventory.tensors if t.kind == "parameter"}, "0" * 64)
    assert all(t.requires_grad is False for t in open_archive(dst).inventory.tensors if t.kind == "parameter")
    assert not any(v.requires_grad for v in _load_any(dst).values())


def test_buffers_and_integers_never_become_trainable(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.pt", tmp_path / "b.pt"
    sd = _net().state_dict()
    sd["step"] = torch.tensor(3)
    torch.save(sd, src)
    archive = open_archive(src)
    archive.write(dst, {n: True for n in sd}, "0" * 64)
    loaded = _load_any(dst)
    assert loaded["0.weight"].requires_grad
    assert not loaded["2.running_mean"].requires_grad and not loaded["step"].requires_grad


@pytest.mark.parametrize(
    ("name", "dtype", "kind"),
    [("fc.weight", "float32", "parameter"), ("bn.running_mean", "float32", "buffer"),
     ("bn.num_batches_tracked", "int64", "buffer"), ("emb.position_ids", "int64", "buffer"),
     ("rotary.inv_freq", "bfloat16", "buffer"), ("mask", "bool", "buffer"), ("w", "float16", "parameter"),
     ("q.weight", "int8", "buffer"), ("bias", "float64", "parameter")],
)
def test_tensor_kind(name: str, dtype: str, kind: str) -> None:
    assert tensor_kind(name, dtype) == kind


def test_float8_and_bfloat16_dtypes(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"a": torch.ones(2, dtype=torch.bfloat16), "b": torch.ones(2).to(torch.float8_e4m3fn),
                "c": torch.ones(2, dtype=torch.uint16)}, path)
    inv = open_archive(path).inventory
    assert [(t.name, t.dtype) for t in inv.tensors] == [("a", "bfloat16"), ("b", "float8_e4m3fn"),
                                                        ("c", "uint16")]


def test_checkpoint_with_numpy_values_and_a_uuid(tmp_path: Path) -> None:
    """What training loops put next to the weights: numpy scalars and arrays, ids, nested configs."""
    import uuid

    import numpy as np

    path = tmp_path / "ckpt.pt"
    torch.save({"model_state_dict": _net().state_dict(), "best_score": np.float64(0.93),
                "history": np.arange(5), "run_id": uuid.UUID(int=7), "cfg": {"lr": 1e-3, "tags": {"a", "b"}},
                "rng": torch.get_rng_state()}, path)
    inv = open_archive(path).inventory
    assert inv.prefix == "model_state_dict" and inv.tensors[0].name == "0.weight"
    archive = open_archive(path)
    archive.write(tmp_path / "out.pt", {"0.weight": False}, "0" * 64)
    loaded = torch.load(tmp_path / "out.pt", weights_only=False)
    assert not loaded["model_state_dict"]["0.weight"].requires_grad
    assert loaded["best_score"] == np.float64(0.93) and loaded["run_id"] == uuid.UUID(int=7)


class _StorageView:
    """Stands for a storage view in a hand-written legacy file (what torch < 1.0 saved)."""

    def __init__(self, pid: tuple[object, ...]) -> None:
        self.pid = pid


class _Tensor:
    def __init__(self, view: _StorageView, offset: int, size: tuple[int, ...]) -> None:
        self.args = (view, offset, size, (1,), False, collections.OrderedDict())

    def __reduce__(self) -> tuple[object, ...]:
        return (torch._utils._rebuild_tensor_v2, self.args)


def test_legacy_storage_views(tmp_path: Path) -> None:
    import pickle
    import struct

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return obj.pid if isinstance(obj, _StorageView) else None

    root = "140000"
    view_a = _StorageView(("storage", torch.FloatStorage, root, "cpu", 8, ("v1", 0, 4)))
    view_b = _StorageView(("storage", torch.FloatStorage, root, "cpu", 8, ("v2", 4, 4)))
    path = tmp_path / "old.pt"
    with open(path, "wb") as f:
        for value in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                                       "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(value, f, protocol=2)
        Pickler(f, protocol=2).dump(collections.OrderedDict(a=_Tensor(view_a, 0, (4,)),
                                                            b=_Tensor(view_b, 1, (3,))))
        pickle.dump([root], f, protocol=2)
        f.write(struct.pack("<q", 8) + struct.pack("<8f", *range(8)))
    inv = open_archive(path).inventory
    assert [(t.name, t.shape, t.storage) for t in inv.tensors] == [("a", (4,), "legacy:140000"),
                                                                   ("b", (3,), "legacy:140000")]
    loaded = torch.load(path, weights_only=True)  # torch agrees on what the file holds
    assert loaded["b"].tolist() == [5.0, 6.0, 7.0]


def test_quantized_tensors_are_not_supported_but_not_called_unsafe(tmp_path: Path) -> None:
    from layerfreeze.errors import UnsafePickleError

    path = tmp_path / "q.pt"
    torch.save({"w": torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8)}, path)
    with pytest.raises(FormatError, match="not supported") as info:
        open_archive(path)
    assert not isinstance(info.value, UnsafePickleError)
