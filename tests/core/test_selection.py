"""Selection on inventories of real models, checked against the classic hand-written loops."""

from __future__ import annotations

import time

import pytest
import torch
from fixtures.live import live_inventory
from fixtures.models import MODELS, build, tiny_bert, tiny_gpt2
from hypothesis import given, settings
from hypothesis import strategies as st
from layerfreeze.core.model import Inventory, ModuleInfo, TensorInfo
from layerfreeze.core.selection import select
from layerfreeze.core.spec import parse_spec
from layerfreeze.core.torch_classes import BASES
from layerfreeze.errors import SpecError
from torch import nn

from core import classic

MODEL_NAMES = [*MODELS, "bert", "gpt2"]


def make(name: str) -> nn.Module:
    model = {"bert": tiny_bert, "gpt2": tiny_gpt2}.get(name, lambda: build(name))()
    if model is None:
        pytest.skip("transformers not installed")
    return model


def ours(inv: Inventory, rules: list[dict], strict: bool = True) -> dict[str, bool]:
    return select(parse_spec({"rules": rules, "strict": strict}), inv).final_by_name()


def fresh(model: nn.Module) -> nn.Module:
    model.requires_grad_(True)
    return model


def modules_with_params(model: nn.Module) -> list[str]:
    return [p for p, m in model.named_modules() if p and any(True for _ in m.parameters())]


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("kind", ["module", "state_dict", "safetensors"])
def test_by_name_equals_freezing_those_modules(name, kind):
    model = make(name)
    inv = live_inventory(model, kind)
    paths = modules_with_params(model)
    for path in paths:
        expected = classic.freeze_modules(fresh(model), [path])
        assert ours(inv, [{"action": "freeze", "names": [path]}]) == expected
    some = paths[::3]
    assert ours(inv, [{"action": "freeze", "names": some}]) == classic.freeze_modules(fresh(model), some)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_by_type_equals_isinstance_loops(name):
    model = make(name)
    inv = live_inventory(model, "module")
    in_model = {type(m) for m in model.modules()}
    candidates = {c for t in in_model for c in t.__mro__ if isinstance(c, type) and issubclass(c, nn.Module)}
    checked = 0
    for cls in sorted(candidates, key=classic_name):
        qualified = classic_name(cls)
        if qualified not in BASES and any(issubclass(t, cls) and t is not cls for t in in_model):
            continue  # a pickle records a class's name, not its bases: unknowable outside torch.nn
        for spelling in {qualified, cls.__name__}:
            expected = classic.freeze_types(fresh(model), cls)
            assert ours(inv, [{"action": "freeze", "types": [spelling]}], strict=False) == expected, spelling
        checked += 1
    assert checked >= 3


def classic_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


SLICES: list[slice | list[int]] = [slice(0, 1), slice(1, None), slice(None, -1), slice(-2, None),
                                   slice(0, 3), [0, -1]]


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("kind", ["module", "state_dict", "safetensors"])
def test_by_position_equals_children_slices(name, kind):
    model = make(name)
    inv = live_inventory(model, kind)
    parents = [p for p, m in model.named_modules() if len(list(m.children())) >= 2]
    for of in parents:
        for picked in SLICES:
            if isinstance(picked, slice):
                selector = {"of": of, "start": picked.start, "stop": picked.stop}
            else:
                selector = {"of": of, "indices": picked}
            expected = classic.freeze_children(fresh(model), of, picked)
            if all(expected.values()):
                continue  # only parameter-less children picked: a strict rule would (rightly) fail
            rules = [{"action": "freeze", "children": {k: v for k, v in selector.items() if v is not None}}]
            children = [n for n, _ in model.get_submodule(of).named_children()]
            depth = of.count(".") + 1 if of else 0
            visible = {t.name.split(".")[depth] for t in inv.tensors
                       if t.name.startswith(of + "." if of else "") and t.name.count(".") > depth}
            if kind == "safetensors" and not all(c.isdigit() for c in children):
                if len(visible) > 1:  # named children, order not recorded: refused, never guessed
                    with pytest.raises(SpecError, match="definition order"):
                        ours(inv, rules)
                continue  # one visible child: counted from names, and the report says so
            if kind == "safetensors" and children[-1] not in visible:
                continue  # trailing parameter-less children: negative positions cannot be known
            assert ours(inv, rules) == expected, (of, picked)


def named_siblings_on_the_way(model: nn.Module, path: str) -> bool:
    """Whether some module on the way to ``path`` has another child with parameters whose name is not
    an index: then only the recorded definition order can say which came first."""
    segs = path.split(".")
    for i, seg in enumerate(segs):
        parent = model.get_submodule(".".join(segs[:i]))
        others = [n for n, c in parent.named_children() if n != seg and any(True for _ in c.parameters())]
        if others and not (seg.isdigit() and all(n.isdigit() for n in others)):
            return True
    return False


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("kind", ["module", "safetensors"])
def test_until_equals_freezing_a_prefix_of_named_parameters(name, kind):
    model = make(name)
    inv = live_inventory(model, kind)
    for path in modules_with_params(model):
        canonical = [t.name for t in inv.tensors if t.name.startswith(path + ".")]
        if kind == "safetensors" and not canonical:
            continue  # only tied weights live there: without module records its position is unknowable
        if kind == "safetensors" and named_siblings_on_the_way(model, path):
            with pytest.raises(SpecError) as info:
                ours(inv, [{"action": "freeze", "until": path}])
            assert "definition order" in info.value.issues[0].message
            continue
        assert ours(inv, [{"action": "freeze", "until": path}]) == classic.freeze_until(fresh(model), path)


def test_position_in_a_sequential_of_twelve():
    model = build("seq12")
    inv = live_inventory(model, "state_dict")
    got = ours(inv, [{"action": "freeze", "children": {"of": "", "stop": 10}}])
    assert [got[f"{i}.weight"] for i in range(12)] == [False] * 10 + [True] * 2
    got = ours(inv, [{"action": "freeze", "names": ["1"]}])  # never layer 10 or 11
    assert {n for n, s in got.items() if not s} == {"1.weight", "1.bias"}


def test_last_matching_rule_decides():
    inv = live_inventory(build("seq12"), "state_dict")
    spec = parse_spec({"rules": [
        {"action": "freeze", "names": ["**"]},
        {"action": "unfreeze", "params": ["bias"]},
        {"action": "freeze", "names": ["0"]},
        {"action": "unfreeze", "regex": [r"1[01]\.weight"]},
    ]})
    sel = select(spec, inv)
    by_name = dict(zip([p.name for p in sel.parameters], zip(sel.final, sel.decided_by, strict=True),
                       strict=True))
    assert by_name["0.bias"] == (False, 2)
    assert by_name["0.weight"] == (False, 2)
    assert by_name["5.bias"] == (True, 1)
    assert by_name["5.weight"] == (False, 0)
    assert by_name["11.weight"] == (True, 3)
    assert [(r.selected, r.decided) for r in sel.rules] == [(24, 9), (12, 11), (2, 2), (2, 2)]
    assert sum(r.decided for r in sel.rules) == 24


def test_selectors_in_one_rule_all_hold():
    inv = live_inventory(build("nested"))
    got = ours(inv, [{"action": "freeze", "names": ["encoder"], "params": ["bias"], "types": ["Linear"]}])
    assert {n for n, s in got.items() if not s} == {f"encoder.{i}.bias" for i in range(3)}


def test_a_value_that_matches_nothing_is_a_warning_while_its_rule_selects_something():
    """Strictness is per rule: one spec for several models (``head`` or ``fc`` or ``classifier``)."""
    inv = live_inventory(make("bert"), "state_dict")
    spec = parse_spec({"rules": [{"action": "freeze", "names": ["embeddings", "encodr.layer.0"]}]})
    sel = select(spec, inv)
    assert sel.rules[0].selected > 0
    [warning] = [f for f in sel.findings if f.code == "unmatched_value"]
    assert warning.pointer == "/rules/0/names/1" and warning.rule == 0
    assert "encoder.layer.0" in warning.suggestions and "did you mean" in warning.message
    assert {p.name for p, s in zip(sel.parameters, sel.final, strict=True) if not s} == {
        p.name for p in sel.parameters if p.name.startswith("embeddings.")}


def test_one_spec_serves_models_with_different_heads():
    spec = parse_spec({"rules": [{"action": "freeze", "names": ["**"]},
                                 {"action": "unfreeze", "names": ["head", "fc", "classifier"]}]})
    for j, head in enumerate(["head", "fc", "classifier"]):
        model = nn.Module()
        model.body = nn.Linear(4, 4)
        model.add_module(head, nn.Linear(4, 2))
        for kind in ("module", "state_dict", "safetensors"):
            sel = select(spec, live_inventory(model, kind))
            assert sel.final_by_name() == {"body.weight": False, "body.bias": False,
                                           f"{head}.weight": True, f"{head}.bias": True}
            unmatched = {f.pointer for f in sel.findings if f.code == "unmatched_value"}
            assert unmatched == {f"/rules/1/names/{k}" for k in range(3) if k != j}
    with pytest.raises(SpecError) as info:  # a model with none of them: the rule selects nothing
        select(spec, live_inventory(build("seq3"), "state_dict"))
    assert info.value.issues[-1].pointer == "/rules/1"


def test_strict_rule_that_selects_nothing_fails_with_pointer_and_suggestions():
    inv = live_inventory(make("bert"), "state_dict")
    with pytest.raises(SpecError) as info:
        select(parse_spec({"rules": [{"action": "freeze", "params": ["bais"]}]}), inv)
    issues = {i.pointer: i for i in info.value.issues}
    assert set(issues) == {"/rules/0", "/rules/0/params/0"}
    assert issues["/rules/0"].suggestions == ("bias",)


def test_a_short_name_with_no_lookalike_suggests_the_names_at_its_depth():
    inv = live_inventory(build("seq3"))
    with pytest.raises(SpecError) as info:
        select(parse_spec({"rules": [{"action": "freeze", "names": ["5"]}]}), inv)
    issues = {i.pointer: i for i in info.value.issues}
    assert issues["/rules/0/names/0"].suggestions == ("0", "2")  # 1 is a ReLU: it would select nothing


def test_a_module_without_parameters_is_never_suggested_nor_the_value_itself():
    inv = live_inventory(build("seq3"))
    with pytest.raises(SpecError) as info:
        select(parse_spec({"rules": [{"action": "freeze", "names": ["1"]}]}), inv)
    issues = {i.pointer: i for i in info.value.issues}
    assert "only modules without parameters" in issues["/rules/0/names/0"].message
    assert issues["/rules/0/names/0"].suggestions == ("0", "2")


def test_strict_and_of_selectors_that_exclude_each_other():
    inv = live_inventory(build("nested"))
    with pytest.raises(SpecError) as info:
        select(parse_spec({"rules": [{"action": "freeze", "names": ["norm"], "types": ["Linear"]}]}), inv)
    assert [i.pointer for i in info.value.issues] == ["/rules/0"]
    assert "no parameter satisfies all" in info.value.issues[0].message


def test_non_strict_turns_problems_into_warnings():
    inv = live_inventory(build("cnn"), "module")
    sel = select(parse_spec({"strict": False, "rules": [
        {"action": "freeze", "types": ["Conv3d"]},
        {"action": "freeze", "until": "nope"},
        {"action": "freeze", "names": ["0"]},
    ]}), inv)
    problems = [w for w in sel.findings if w.code == "rule_problem"]
    assert {w.rule for w in problems} == {0, 1}
    assert any("Conv2d" in w.suggestions for w in problems)
    assert {w.pointer for w in problems} >= {"/rules/0/types/0", "/rules/0", "/rules/1/until", "/rules/1"}
    assert sum(not s for s in sel.final) == 2


def test_types_on_a_weight_only_file_is_an_error_even_when_not_strict():
    inv = live_inventory(build("cnn"), "state_dict")
    for strict in (True, False):
        with pytest.raises(SpecError) as info:
            select(parse_spec({"strict": strict, "rules": [{"action": "freeze", "types": ["Conv2d"]}]}), inv)
        assert [i.pointer for i in info.value.issues] == ["/rules/0/types"]
        assert "records no module types" in info.value.issues[0].message


def test_children_counted_from_names_are_reported():
    model = build("cnn")
    inv = live_inventory(model, "safetensors")
    sel = select(parse_spec({"rules": [{"action": "freeze", "children": {"of": "", "stop": 2}}]}), inv)
    # ReLU, pooling and Flatten hold no tensors; numbered children still count by their index
    assert sel.rules[0].children_counted == tuple(str(i) for i in range(9))
    assert {p.name for p, s in zip(sel.parameters, sel.final, strict=True) if not s} == {
        "0.weight", "0.bias", "1.weight", "1.bias"}
    assert any(f.code == "children_from_names" for f in sel.findings)
    exact = select(parse_spec({"rules": [{"action": "freeze", "children": {"of": "", "stop": 2}}]}),
                   live_inventory(model, "state_dict"))
    assert exact.rules[0].children_counted == tuple(str(i) for i in range(9))
    assert not any(f.code == "children_from_names" for f in exact.findings)


def test_missing_paths_are_errors_with_suggestions():
    inv = live_inventory(build("nested"))
    with pytest.raises(SpecError) as info:
        select(parse_spec({"rules": [{"action": "freeze", "children": {"of": "encoders", "stop": 1}},
                                     {"action": "freeze", "until": "encoder.7"},
                                     {"action": "freeze", "children": {"of": "encoder", "indices": [5]}},
                                     ]}), inv)
    issues = {i.pointer: i for i in info.value.issues}
    assert "encoder" in issues["/rules/0/children/of"].suggestions
    assert "/rules/1/until" in issues
    assert "/rules/2/children/indices/0" in issues


def test_until_a_parameterless_module():
    inv = live_inventory(build("cnn"))
    got = ours(inv, [{"action": "freeze", "until": "2"}])
    assert {n for n, s in got.items() if not s} == {"0.weight", "0.bias", "1.weight", "1.bias"}


def test_start_state_recorded_or_derived_and_buffers_never_count():
    model = build("cnn")
    model[0].weight.requires_grad_(False)
    recorded = select(parse_spec({}), live_inventory(model, "module"))
    assert dict(zip([p.name for p in recorded.parameters], recorded.start, strict=True))["0.weight"] is False
    derived = select(parse_spec({}), live_inventory(model, "state_dict"))
    assert all(derived.start)
    assert len(derived.parameters) == len(list(model.parameters()))
    assert not any("running" in p.name or "num_batches" in p.name for p in derived.parameters)


def test_integer_parameters_are_never_made_trainable():
    inv = Inventory(format="torch.module", types_known=False, children_exact=True, modules=(
        ModuleInfo("", None, ("q",)), ModuleInfo("q", None)), tensors=(
        TensorInfo("q.weight", "parameter", (4,), "int8", False),
        TensorInfo("q.scale", "parameter", (1,), "float32", False)))
    sel = select(parse_spec({"rules": [{"action": "unfreeze", "names": ["q"]}]}), inv)
    assert sel.final == (False, True)
    assert sel.decided_by == (None, 0)
    assert [f.names for f in sel.findings if f.code == "not_floating"] == [("q.weight",)]


def test_tied_parameters_share_state_and_are_reported():
    model = build("user")
    inv = live_inventory(model)
    sel = select(parse_spec({"rules": [{"action": "freeze", "names": ["head"]}]}), inv)
    final = sel.final_by_name()
    assert final["head.weight"] is False and final["embed.weight"] is False
    assert final == classic.freeze_modules(fresh(model), ["head"])
    assert any(f.code == "tied_parameters" and "embed.weight" in f.names for f in sel.findings)


def test_batchnorm_in_frozen_region_warns_with_the_fix():
    inv = live_inventory(build("cnn"))
    sel = select(parse_spec({"rules": [{"action": "freeze", "children": {"of": "", "stop": 3}}]}), inv)
    [warning] = [f for f in sel.findings if f.code == "batchnorm_in_frozen_region"]
    assert warning.names == ("1",)
    assert "eval()" in warning.message and "track_running_stats" in warning.message
    sel = select(parse_spec({"rules": [{"action": "freeze", "types": ["Conv2d"]}]}), inv)
    assert not any(f.code == "batchnorm_in_frozen_region" for f in sel.findings)


def test_rule_that_decides_nothing_is_reported():
    inv = live_inventory(build("seq3"))
    sel = select(parse_spec({"rules": [{"action": "freeze", "names": ["0"]},
                                       {"action": "unfreeze", "names": ["**"]}]}), inv)
    assert [f.rule for f in sel.findings if f.code == "rule_decided_nothing"] == [0]


def test_selection_over_100k_parameters_is_fast():
    tensors = tuple(
        TensorInfo(f"blocks.{i}.mlp.{j}.{leaf}", "parameter", (8,), "float32", None)
        for i in range(2500) for j in range(20) for leaf in ("weight", "bias")
    )
    inv = Inventory(format="safetensors", tensors=tensors, modules=(), types_known=False,
                    children_exact=False)
    spec = parse_spec({"rules": [
        {"action": "freeze", "names": ["blocks.[0-9]", "blocks.1??"]},
        {"action": "unfreeze", "regex": [r"blocks\.5\d\.mlp\.1\..*"], "params": ["bias"]},
        {"action": "freeze", "until": "blocks.20"},
    ]})
    start = time.perf_counter()
    sel = select(spec, inv)
    elapsed = time.perf_counter() - start
    assert len(sel.parameters) == 100_000
    assert sel.rules[0].selected == 110 * 40
    assert elapsed < 20, elapsed
    print(f"selection over 100k parameters: {elapsed:.2f} s")


def test_live_inventory_matches_torch_counts():
    model = make("bert")
    inv = live_inventory(model, "module")
    params = [t for t in inv.tensors if t.kind == "parameter"]
    assert sum(t.numel for t in params) == sum(p.numel() for p in model.parameters())
    assert torch.is_tensor(next(model.parameters()))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["freeze", "unfreeze"]),
                          st.sampled_from(["encoder", "encoder.0", "encoder.2", "heads", "heads.cls", "norm",
                                           "heads.decode_head"]),
                          st.sampled_from([None, "weight", "bias"])), min_size=1, max_size=6))
def test_last_match_wins_against_a_rule_by_rule_replay(rules):
    """Replaying the rules one by one on the live model, each with the classic loop, gives our result."""
    model = fresh(build("nested"))
    spec = []
    for action, path, leaf in rules:
        rule = {"action": action, "names": [path]}
        if leaf:
            rule["params"] = [leaf]
        spec.append(rule)
        for name, p in model.get_submodule(path).named_parameters(prefix=path):
            if leaf is None or name.rsplit(".", 1)[1] == leaf:
                p.requires_grad = action == "unfreeze"
    assert ours(live_inventory(build("nested")), spec) == classic.states(model)


def test_pattern_naming_a_parameterless_module_says_so():
    inv = live_inventory(build("cnn"))
    sel = select(parse_spec({"rules": [{"action": "freeze", "names": ["0", "2"]}]}), inv)
    [warning] = [f for f in sel.findings if f.code == "unmatched_value"]
    assert warning.pointer == "/rules/0/names/1" and "without parameters: 2" in warning.message
    with pytest.raises(SpecError) as info:
        select(parse_spec({"rules": [{"action": "freeze", "names": ["2"]}]}), inv)
    assert info.value.issues[0].pointer == "/rules/0/names/0"
    assert "without parameters: 2" in info.value.issues[0].message
