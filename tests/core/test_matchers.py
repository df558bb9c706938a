"""The selectors (core/matchers.py), one rule at a time, on a small live model: what each selector
selects, that selectors AND and values OR, and that a value selecting nothing is reported at its own
JSON pointer with the nearest real names."""

from __future__ import annotations

import pytest
import torch
from layerfreeze.core.matchers import match_rule, type_matches
from layerfreeze.core.model import Inventory
from layerfreeze.core.selection import _Context
from layerfreeze.core.spec import Rule
from torch import nn

from testing.oracle import live_inventory


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.blocks = nn.Sequential(Block(), Block(), Block())
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # tied: one parameter, two names
        self.register_buffer("scale", torch.ones(1))
        self.act = nn.ReLU()  # a module without parameters


def ctx(kind: str = "module") -> _Context:
    inv: Inventory = live_inventory(Net(), kind)
    return _Context(inv, tuple(t for t in inv.tensors if t.kind == "parameter"))


def selected(context: _Context, **rule: object) -> list[str]:
    match = match_rule(0, Rule(action="freeze", **rule), context)  # type: ignore[arg-type]
    return [context.params[k].name for k in match.selected]


def pointers(context: _Context, **rule: object) -> dict[str, tuple[str, ...]]:
    match = match_rule(0, Rule(action="freeze", **rule), context)  # type: ignore[arg-type]
    return {p.pointer: tuple(p.suggestions) for p in match.problems + match.errors}


def test_names_select_everything_under_a_module_and_values_are_alternatives() -> None:
    c = ctx()
    assert selected(c, names=["blocks.1"]) == ["blocks.1.attn.weight", "blocks.1.attn.bias",
                                               "blocks.1.norm.weight", "blocks.1.norm.bias"]
    assert selected(c, names=["blocks.*.norm", "embed"]) == [
        "embed.weight", "blocks.0.norm.weight", "blocks.0.norm.bias", "blocks.1.norm.weight",
        "blocks.1.norm.bias", "blocks.2.norm.weight", "blocks.2.norm.bias"]


def test_a_tied_parameter_is_selected_by_any_of_its_names() -> None:
    assert selected(ctx(), names=["head"]) == ["embed.weight"]


def test_selectors_of_one_rule_all_apply() -> None:
    assert selected(ctx(), names=["blocks.0", "blocks.2"], params=["bias"]) == [
        "blocks.0.attn.bias", "blocks.0.norm.bias", "blocks.2.attn.bias", "blocks.2.norm.bias"]


def test_regex_matches_whole_names_only() -> None:
    c = ctx()
    assert selected(c, regex=[r"blocks\.[02]\.attn\.weight"]) == [
        "blocks.0.attn.weight", "blocks.2.attn.weight"]
    assert selected(c, regex=["attn"]) == []


def test_types_select_by_class_and_torch_nn_bases() -> None:
    c = ctx()
    linear = ["blocks.0.attn.weight", "blocks.0.attn.bias", "blocks.1.attn.weight", "blocks.1.attn.bias",
              "blocks.2.attn.weight", "blocks.2.attn.bias"]
    for spelling in ("Linear", "nn.Linear", "torch.nn.Linear", "torch.nn.modules.linear.Linear"):
        # head is a Linear too, but its one parameter is embed.weight's: the tie selects it as well
        assert selected(c, types=[spelling]) == ["embed.weight", *linear], spelling
    assert len(selected(c, types=["Block"])) == 12


def test_types_on_a_file_without_types_is_an_error_not_an_empty_selection() -> None:
    c = ctx("state_dict")
    match = match_rule(0, Rule(action="freeze", types=["Linear"]), c)
    assert match.selected == [] and [e.pointer for e in match.errors] == ["/rules/0/types"]


@pytest.mark.parametrize(("children", "blocks"), [
    ({"of": "blocks", "start": 0, "stop": 2}, [0, 1]),
    ({"of": "blocks", "start": 1}, [1, 2]),
    ({"of": "blocks", "indices": [-1]}, [2]),
    ({"of": "blocks", "indices": [2, 0]}, [0, 2]),
])
def test_children_slice_and_index_like_python(children: dict, blocks: list[int]) -> None:  # type: ignore[type-arg]
    got = selected(ctx(), children=children)
    assert sorted({int(name.split(".")[1]) for name in got}) == blocks and len(got) == 4 * len(blocks)


def test_children_of_the_root_in_definition_order() -> None:
    assert selected(ctx(), children={"start": 0, "stop": 1}) == ["embed.weight"]


def test_until_is_a_prefix_of_definition_order() -> None:
    assert selected(ctx(), until="blocks.0") == [
        "embed.weight", "blocks.0.attn.weight", "blocks.0.attn.bias", "blocks.0.norm.weight",
        "blocks.0.norm.bias"]


def test_params_select_by_leaf_name() -> None:
    biases = [f"blocks.{i}.{m}.bias" for i in range(3) for m in ("attn", "norm")]
    assert selected(ctx(), params=["bias"]) == biases


def test_buffers_and_modules_without_parameters_are_never_selected() -> None:
    c = ctx()
    assert selected(c, names=["scale"]) == []
    assert selected(c, names=["act"]) == []


def test_a_value_that_selects_nothing_is_reported_at_its_pointer_with_the_nearest_names() -> None:
    c = ctx()
    found = pointers(c, names=["blocks.1", "blokcs.2"])
    assert "blocks.2" in found["/rules/0/names/1"]
    assert "/rules/0/names/0" not in found
    assert "bias" in pointers(c, params=["bais"])["/rules/0/params/0"]
    assert "/rules/0/children/indices/0" in pointers(c, children={"of": "blocks", "indices": [3]})
    assert "/rules/0/children/of" in pointers(c, children={"of": "nowhere"})
    assert "/rules/0/until" in pointers(c, until="blocks.9")


def test_a_rule_that_selects_nothing_is_reported_at_the_rule() -> None:
    assert "/rules/0" in pointers(ctx(), names=["blocks.0"], params=["nothing"])


@pytest.mark.parametrize(("value", "recorded", "expected"), [
    ("Linear", "torch.nn.modules.linear.Linear", True),
    ("nn.Linear", "torch.nn.modules.linear.Linear", True),
    ("Linear", "torch.nn.modules.linear.NonDynamicallyQuantizableLinear", True),  # a torch.nn subclass
    ("Conv2d", "torch.nn.modules.linear.Linear", False),
    ("transformers.BertLayer", "transformers.models.bert.modeling_bert.BertLayer", True),
    ("transformers.BertLayer", "othertransformers.models.bert.BertLayer", False),
    ("mymodels.Block", "mymodels.Block", True),
])
def test_type_names_match_as_users_spell_them(value: str, recorded: str, expected: bool) -> None:
    assert type_matches(value, recorded) is expected
