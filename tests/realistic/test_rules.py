"""Each selector on real models in every format, against what the classic loops over torch give."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fixtures.models import build, save, tiny_bert
from layerfreeze.errors import SpecError
from layerfreeze.freeze import freeze_file
from torch import nn

from realistic._check import frozen

FORMATS = ("module", "state_dict", "safetensors")


def _report(src: Path, *rules: dict[str, Any], strict: bool = True) -> dict[str, Any]:
    return freeze_file(src, {"rules": list(rules), "strict": strict}).model_dump(mode="json")


def _file(tmp: Path, model: nn.Module, fmt: str) -> Path:
    return save(model, tmp / f"m.{fmt}.{'safetensors' if fmt == 'safetensors' else 'pt'}", fmt)


def _names_under(model: nn.Module, modules: list[str]) -> set[str]:
    return {n for m in modules for n, _ in model.get_submodule(m).named_parameters(prefix=m)}


def _children_loop(model: nn.Module, sl: slice | list[int]) -> set[str]:
    """``for child in list(model.children())[sl]: child.requires_grad_(False)``."""
    names = [n for n, _ in model.named_children()]
    picked = [names[i] for i in sl] if isinstance(sl, list) else names[sl]
    return _names_under(model, picked)


@pytest.mark.parametrize("fmt", FORMATS)
def test_name_zero_is_layer_zero_only(tmp_path: Path, fmt: str) -> None:
    model = build("seq12")
    src = _file(tmp_path, model, fmt)
    assert frozen(_report(src, {"action": "freeze", "names": ["0"]})) == {"0.weight", "0.bias"}
    assert frozen(_report(src, {"action": "freeze", "names": ["1"]})) == {"1.weight", "1.bias"}
    # the classic substring loop would also catch 10 and 11; a glob says so explicitly
    want = _names_under(model, ["1", "10", "11"])
    assert frozen(_report(src, {"action": "freeze", "names": ["1*"]})) == want


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("sl", [slice(-3, None), slice(-3, 100), slice(2, -8), slice(None, 0), [-1, 0], [5]],
                         ids=["-3:", "-3:100", "2:-8", ":0-empty", "idx-1,0", "idx5"])
def test_children_slices(tmp_path: Path, fmt: str, sl: slice | list[int]) -> None:
    model = build("seq12")
    src = _file(tmp_path, model, fmt)
    if isinstance(sl, list):
        sel: dict[str, Any] = {"of": "", "indices": sl}
    else:
        sel = {"of": "", "start": sl.start, "stop": sl.stop}
        sel = {k: v for k, v in sel.items() if v is not None}
    want = _children_loop(model, sl)
    if not want:
        with pytest.raises(SpecError):
            _report(src, {"action": "freeze", "children": sel})
        return
    report = _report(src, {"action": "freeze", "children": sel})
    assert frozen(report) == want
    assert report["rules"][0]["children_counted"] == [str(i) for i in range(12)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_children_errors_point_at_the_value(tmp_path: Path, fmt: str) -> None:
    src = _file(tmp_path, build("seq12"), fmt)
    with pytest.raises(SpecError) as err:
        _report(src, {"action": "freeze", "children": {"of": "", "indices": [50]}})
    assert err.value.issues[0].pointer == "/rules/0/children/indices/0"
    with pytest.raises(SpecError) as err:
        _report(src, {"action": "freeze", "children": {"of": "encoder", "start": 0}})
    assert err.value.issues[0].pointer == "/rules/0/children/of"
    assert "encoder" in err.value.issues[0].message
    # out of range on a slice is Python's: empty, which strict refuses, saying how many children there are
    for start in (40, 10**20):
        with pytest.raises(SpecError) as err:
            _report(src, {"action": "freeze", "children": {"of": "", "start": start, "stop": 50}})
        assert err.value.issues[0].pointer == "/rules/0/children/start"
        assert err.value.issues[0].message == f"start {start} is past the end: the root has 12 children"
        assert "the root has 12 children" in str(err.value)
    with pytest.raises(SpecError) as err:
        _report(src, {"action": "freeze", "children": {"of": "", "start": 5, "stop": 2}})
    assert "[5:2] is empty: the root has 12 children" in str(err.value)
    # one index out of range among others that select: a warning, not an error
    report = _report(src, {"action": "freeze", "children": {"of": "", "indices": [0, 50]}})
    [warning] = [w for w in report["warnings"] if w["code"] == "unmatched_value"]
    assert warning["pointer"] == "/rules/0/children/indices/1" and "has 12 children" in warning["message"]


@pytest.mark.parametrize("fmt", ["module", "state_dict"])
def test_cnn_until_and_children_count_parameterless_layers(tmp_path: Path, fmt: str) -> None:
    """ReLU / pooling layers hold no parameters; in a whole module they are recorded, in a state dict
    the numbering shows them. Either way ``until`` a ReLU and ``children[0:4]`` match torch."""
    model = build("cnn")
    src = _file(tmp_path, model, fmt)
    assert frozen(_report(src, {"action": "freeze", "until": "2"})) == _names_under(model, ["0", "1"])
    want = _names_under(model, ["0", "1", "3", "4"])
    assert frozen(_report(src, {"action": "freeze", "until": "7"})) == want
    assert frozen(_report(src, {"action": "freeze", "children": {"of": "", "start": 0, "stop": 4}})) == \
        _children_loop(model, slice(0, 4))
    assert frozen(_report(src, {"action": "freeze", "children": {"of": "", "start": -1}})) == \
        _children_loop(model, slice(-1, None))


@pytest.mark.parametrize("fmt", ["module", "state_dict"])
def test_naming_a_parameterless_module_is_a_clear_error(tmp_path: Path, fmt: str) -> None:
    src = _file(tmp_path, build("cnn"), fmt)
    with pytest.raises(SpecError) as err:
        _report(src, {"action": "freeze", "names": ["2"]})
    issue = err.value.issues[0]
    assert issue.pointer == "/rules/0/names/0"
    assert "without parameters" in issue.message and "'2'" in issue.message
    report = _report(src, {"action": "freeze", "names": ["2"]}, strict=False)
    assert report["summary"]["frozen"] == 0
    assert any("/rules/0" in w["message"] or w.get("rule") == 0 for w in report["warnings"])


@pytest.fixture(scope="module")
def bert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, dict[str, Path]]:
    model = tiny_bert()
    if model is None:
        pytest.skip("transformers not installed")
    tmp = tmp_path_factory.mktemp("bert")
    files = {fmt: _file(tmp, model, fmt) for fmt in FORMATS}
    model.save_pretrained(tmp / "hf", safe_serialization=True)
    files["save_pretrained"] = tmp / "hf" / "model.safetensors"
    return model, files


BERT_FORMATS = [*FORMATS, "save_pretrained"]


def _matching(model: nn.Module, predicate: Callable[[str], bool]) -> set[str]:
    return {n for n, _ in model.named_parameters() if predicate(n)}


@pytest.mark.parametrize("fmt", BERT_FORMATS)
def test_bert_globs(bert_files: tuple[nn.Module, dict[str, Path]], fmt: str) -> None:
    model, files = bert_files
    src = files[fmt]
    layer = re.compile(r"encoder\.layer\.[0-5]\..*")
    assert frozen(_report(src, {"action": "freeze", "names": ["encoder.layer.[0-5]"]})) == \
        _matching(model, lambda n: bool(layer.fullmatch(n)))
    assert frozen(_report(src, {"action": "freeze", "names": ["**.LayerNorm"]})) == \
        _matching(model, lambda n: ".LayerNorm." in n)
    assert frozen(_report(src, {"action": "freeze", "names": ["encoder.**.dense"]})) == \
        _matching(model, lambda n: n.startswith("encoder.") and ".dense." in n)
    assert frozen(_report(src, {"action": "freeze", "names": ["**.bias"]})) == \
        _matching(model, lambda n: n.endswith(".bias"))
    # a regex must match the whole parameter name: a module name alone selects nothing
    with pytest.raises(SpecError) as err:
        _report(src, {"action": "freeze", "regex": ["encoder\\.layer\\.0"]})
    assert err.value.issues[0].pointer == "/rules/0/regex/0"
    assert frozen(_report(src, {"action": "freeze", "regex": ["encoder\\.layer\\.0\\..*"]})) == \
        _matching(model, lambda n: n.startswith("encoder.layer.0."))


@pytest.mark.parametrize("fmt", BERT_FORMATS)
def test_bert_typo_suggests_the_real_name(bert_files: tuple[nn.Module, dict[str, Path]], fmt: str) -> None:
    _, files = bert_files
    with pytest.raises(SpecError) as err:
        _report(files[fmt], {"action": "freeze", "names": ["encoder.layers.0"]})
    assert "encoder.layer.0" in err.value.issues[0].suggestions


@pytest.mark.parametrize("fmt", ["module", "state_dict"])
def test_bert_until_and_children(bert_files: tuple[nn.Module, dict[str, Path]], fmt: str) -> None:
    model, files = bert_files
    names = [n for n, _ in model.named_parameters()]
    last = max(i for i, n in enumerate(names) if n.startswith("encoder.layer.0."))
    until = {"action": "freeze", "until": "encoder.layer.0"}
    assert frozen(_report(files[fmt], until)) == set(names[:last + 1])
    assert frozen(_report(files[fmt], {"action": "freeze", "children": {"of": "", "stop": 1}})) == \
        _children_loop(model, slice(None, 1))
    last_layer = {"action": "freeze", "children": {"of": "encoder.layer", "start": -1}}
    assert frozen(_report(files[fmt], last_layer)) == _names_under(model, ["encoder.layer.1"])


@pytest.mark.parametrize("fmt", ["safetensors", "save_pretrained"])
def test_bert_safetensors_order_is_never_guessed(bert_files: tuple[nn.Module, dict[str, Path]],
                                                 fmt: str) -> None:
    """safetensors stores names sorted: the order of named children is unknown, so until / children over
    them are refused with the reason, while numbered children still work."""
    model, files = bert_files
    with pytest.raises(SpecError) as err:
        _report(files[fmt], {"action": "freeze", "until": "encoder.layer.0"})
    assert "order" in err.value.issues[0].message
    last_layer = {"action": "freeze", "children": {"of": "encoder.layer", "start": -1}}
    assert frozen(_report(files[fmt], last_layer)) == _names_under(model, ["encoder.layer.1"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_last_rule_wins_bitfit(tmp_path: Path, fmt: str) -> None:
    """Freeze everything, then unfreeze the biases (BitFit), then refreeze the last layer's bias."""
    model = build("seq12")
    src = _file(tmp_path, model, fmt)
    report = _report(src, {"action": "freeze", "names": ["**"]}, {"action": "unfreeze", "params": ["bias"]},
                     {"action": "freeze", "names": ["11.bias"]})
    assert frozen(report) == _matching(model, lambda n: n.endswith("weight")) | {"11.bias"}
    decided = {p["name"]: p["rule"] for p in report["parameters"]}
    assert decided["0.weight"] == 0 and decided["0.bias"] == 1 and decided["11.bias"] == 2


@pytest.mark.parametrize("fmt", FORMATS)
def test_negated_classes_both_spellings(tmp_path: Path, fmt: str) -> None:
    """``[^0-5]`` is negation (as in bash and regex), the same as ``[!0-5]``; read literally it would
    select exactly the layers the user meant to leave out."""
    model = build("seq12")
    src = _file(tmp_path, model, fmt)
    want = _names_under(model, ["6", "7", "8", "9"])
    assert frozen(_report(src, {"action": "freeze", "names": ["[!0-5]"]})) == want
    assert frozen(_report(src, {"action": "freeze", "names": ["[^0-5]"]})) == want


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    src = _file(tmp_path, build("seq12"), "state_dict")
    raw = '{"rules": [{"action": "freeze", "names": ["0"], "names": ["1"]}]}'
    with pytest.raises(SpecError) as err:
        freeze_file(src, raw)
    assert err.value.issues[0].pointer == "/rules/0/names"


def test_until_a_parameter_name(tmp_path: Path) -> None:
    """Torch archives know a module's parameter order (weight before bias); safetensors sorts names, so
    there ``until`` a parameter name is refused rather than guessed."""
    model = build("seq12")
    for fmt in ("module", "state_dict"):
        src = _file(tmp_path, model, fmt)
        assert frozen(_report(src, {"action": "freeze", "until": "1.weight"})) == \
            {"0.weight", "0.bias", "1.weight"}
    src = _file(tmp_path, model, "safetensors")
    with pytest.raises(SpecError) as err:
        _report(src, {"action": "freeze", "until": "1.weight"})
    assert "order of the parameters of 1" in err.value.issues[0].message
    assert frozen(_report(src, {"action": "freeze", "until": "1"})) == _names_under(model, ["0", "1"])


@pytest.mark.parametrize("fmt", ["module", "state_dict"])
def test_selecting_only_buffers_is_named(tmp_path: Path, fmt: str) -> None:
    """BatchNorm statistics are buffers: a rule aimed at them is refused with that reason."""
    src = _file(tmp_path, build("cnn"), fmt)
    for selector in ({"names": ["**.running_*"]}, {"params": ["running_mean"]},
                     {"regex": ["1\\.running_.*"]}, {"until": "1.running_mean"}):
        with pytest.raises(SpecError) as err:
            _report(src, {"action": "freeze", **selector})
        assert "buffer" in err.value.issues[0].message, selector
